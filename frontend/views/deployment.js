// One deployment's page, the link to send a QA engineer: its state live (deploymentUpdated), the
// pipeline's steps, each service with its URL, health, CPU and memory, the logs, who did what,
// the countdown to its cleanup, and the actions its state and the user's access allow.

import { gql, live } from '../lib/api.js';
import { h, clear, badge, copyButton, facts, keepFocus, notify, pageHead, section, table, words, errorText } from '../lib/dom.js';
import { bytes, cpu, dateTime, duration, mib, secondsUntil, shortTime, who } from '../lib/format.js';
import { describe } from '../lib/schema.js';
import { confirmAction, formDialog } from '../lib/dialog.js';
import { field, rules, text } from '../lib/forms.js';
import { stopAll, ticker } from '../lib/follow.js';
import { logView } from './logs.js';
import { versionPickers } from './deploy.js';
import { stages } from '../lib/graph.js';
import { ended, going } from './deployments.js';
import { deploymentCharts } from './charts.js';

const FIELDS = `id name project environment state stage desired observed attempt pipelineVersion actions myAccess createdBy createdAt expiresAt
  cpuMillicores memoryMib node { host online } failure { step reason exitCode oomKilled }
  steps { id action state detail changedAt startedAt after }
  services { name image tag healthy healthDetail url nodePort cpuMillicores memoryBytes
    healthCheck { httpPath command intervalSeconds timeoutSeconds retries } }
  history { occurredAt actor summary }`;

// Runs nowhere: ended, or failed (a failed run removed everything it made).
const nowhere = (d) => ended(d) || d.state === 'FAILED';

// How a service's health is checked, in words.
export function checkWords(c) {
  if (!c) return 'No health check: healthy once started.';
  const probe = c.httpPath ? `GET ${c.httpPath} answers 2xx or 3xx` : `\`${(c.command ?? []).join(' ')}\` exits 0`;
  return `${probe}, every ${c.intervalSeconds} s (timeout ${c.timeoutSeconds} s, ${c.retries} retries)`;
}

function healthCell(s, d) {
  const { state } = d;
  if (nowhere(d)) return h('span', { class: 'muted' }, '—');
  // Nobody can look while its node is away: say what was last seen, not that it is healthy.
  if (state === 'OFFLINE') {
    return [badge('UNKNOWN', 'Its node is offline'), ' ',
      h('small', { class: 'muted' }, `node offline; last seen ${s.healthy === false ? 'unhealthy' : 'healthy'}`)];
  }
  const status = s.healthy === null ? badge('UNKNOWN', 'Not reported yet') : badge(s.healthy ? 'HEALTHY' : 'UNHEALTHY');
  const detail = s.healthDetail && s.healthDetail.toLowerCase() !== 'healthy' ? s.healthDetail : null;
  return [status, detail ? [' ', h('small', { class: s.healthy === false ? 'error' : 'muted' }, detail)] : null,
    h('br'), h('small', { class: 'muted' }, checkWords(s.healthCheck))];
}

const ACTIONS = {
  CANCEL: { label: 'Cancel', mutation: 'deleteDeployment', danger: true,
    confirm: (d) => ({ title: `Cancel deployment ${d.name}?`, message: `It stops being created, and what it has started on its node is removed. Its URLs stop answering.`, action: `Cancel ${d.name}` }) },
  DELETE: { label: 'Delete', mutation: 'deleteDeployment', danger: true,
    confirm: (d) => ({ title: `Delete deployment ${d.name}?`, message: `Its containers, network and data are removed from ${d.node?.host ?? 'its node'} now, and its URLs stop answering. This cannot be undone.`, action: `Delete ${d.name}` }) },
  RETRY: { label: 'Retry', mutation: 'retryDeployment' },
  EXTEND: { label: 'Extend lifetime', mutation: 'extendDeployment' },
  CLONE: { label: 'Clone…' },
};

// How long a step ran, or has been running.
function stepTiming(s) {
  if (!s?.startedAt) return '';
  const from = Date.parse(s.startedAt);
  if (s.state === 'RUNNING') return `running for ${seconds((Date.now() - from) / 1000)}`;
  // Its change was the rollback, not its end.
  if (s.state === 'ROLLED_BACK') return '';
  return s.changedAt ? `took ${seconds((Date.parse(s.changedAt) - from) / 1000)}` : '';
}

function seconds(s) {
  return s < 10 ? `${Math.max(0, s).toFixed(1)} s` : duration(s, { precise: true });
}

// The run drawn as its pipeline: stages left to right (a step starts after those it follows),
// each step coloured by its state, with its timing; a click shows its log.
function runGraph(list, openLog) {
  const edges = list.flatMap((s) => s.after.map((from) => ({ from, to: s.id })));
  return h('div', { class: 'graph', role: 'list', 'aria-label': 'Pipeline steps' }, stages(list, edges).map((column, i) =>
    h('div', { class: 'stage', role: 'listitem' }, h('h3', {}, `Stage ${i + 1}`), column.map((s) =>
      h('button', { type: 'button', class: `node step-node state-${s.state.toLowerCase()}`, dataset: { nodeId: s.id, step: s.id, state: s.state },
        'aria-label': `${s.id}: ${words(s.state)}. Show its log`, title: describe('StepState', s.state), onclick: () => openLog(s) },
      h('strong', {}, s.id), h('small', {}, s.action), h('span', {}, badge(s.state)), ' ',
      h('small', { class: 'elapsed', dataset: { step: s.id } }, stepTiming(s)),
      s.after.length ? h('small', {}, `after ${s.after.join(', ')}`) : null,
      s.detail ? h('small', { class: 'detail' }, s.detail) : null)))));
}

export async function show(root, ctx) {
  const id = ctx.params.id;
  const stops = [];
  let d = (await gql(`query($id: ID!) { deployment(id: $id) { ${FIELDS} } }`, { id })).deployment;
  const head = h('div');
  const summary = h('div');
  const actionError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const steps = h('div', { id: 'steps' });
  const servicesSlot = h('div', { class: 'table-scroll' });
  const historySlot = h('div', { class: 'table-scroll' });
  const logs = logView(id, d.services.map((s) => s.name));
  stops.push(logs.stop);

  const act = async (action) => {
    actionError.hidden = true;
    const spec = ACTIONS[action];
    if (action === 'CLONE') return cloneDialog(d, ctx);
    if (spec.confirm && !(await confirmAction(spec.confirm(d)))) return;
    try {
      const r = await gql(`mutation($id: ID!) { ${spec.mutation}(id: $id) { ${FIELDS} } }`, { id });
      render(r[spec.mutation]);
      if (action === 'EXTEND') notify(`Lifetime reset: ${d.name} now expires ${dateTime(r[spec.mutation].expiresAt)}.`);
    } catch (e) {
      clear(actionError, `${spec.label} failed: `, errorText(e));
      actionError.hidden = false;
    }
  };

  const countdown = h('span', { id: 'countdown' });
  const tick = () => {
    for (const el of steps.querySelectorAll('.elapsed')) el.textContent = stepTiming(d.steps.find((s) => s.id === el.dataset.step));
    if (going(d)) {
      clear(countdown, ended(d) ? 'ended' : 'being removed');
      return;
    }
    const left = secondsUntil(d.expiresAt);
    clear(countdown, left > 0 ? `in ${duration(left, { precise: true })}` : 'now (due)', h('small', { class: 'muted' }, ` — on ${dateTime(d.expiresAt)}`));
  };

  const render = (next) => {
    d = next;
    ctx.title(`${d.name} (${words(d.state)})`);
    const buttons = d.actions.map((a) => h('button', { type: 'button', class: `btn ${ACTIONS[a]?.danger ? 'btn-danger' : ''}`, dataset: { action: a },
      title: describe('DeploymentAction', a), onclick: () => act(a) }, ACTIONS[a]?.label ?? words(a)));
    clear(head, pageHead(d.name, {
      crumbs: [['#/deployments', 'Deployments'], [`#/projects/${encodeURIComponent(d.project)}`, d.project]],
      subtitle: `${d.project} in ${d.environment} · by ${who(d.createdBy)}, ${shortTime(d.createdAt)}`,
      actions: [...buttons, copyButton(() => location.href, 'Copy link', 'to this page')],
    }));
    clear(summary, h('section', { class: 'panel', 'aria-label': 'State' },
      h('div', { class: 'state-line' }, h('span', { id: 'state', dataset: { state: d.state } }, badge(d.state, describe('DeploymentState', d.state))), ' ',
        h('span', { class: 'muted' }, describe('DeploymentState', d.state))),
      d.failure ? h('div', { class: 'callout callout-bad', role: 'alert' },
        h('strong', {}, d.failure.step ? `Step ${d.failure.step} failed` : 'It failed'), h('p', { class: 'wrap' }, d.failure.reason),
        d.failure.exitCode !== null ? h('p', {}, `Exit code ${d.failure.exitCode}${d.failure.oomKilled ? ' — killed for using more memory than its limit' : ''}`) : null) : null,
      facts([
        ['Expires', countdown],
        // What is wanted of it apart from what its node has shown: a delete waiting for an
        // offline node reads "remove / running".
        ['Wanted / seen', [h('span', { id: 'desired', title: describe('DesiredState', d.desired) }, words(d.desired)), ' / ',
          h('span', { id: 'observed', title: describe('ObservedState', d.observed) }, words(d.observed))]],
        ['Node', d.node ? [d.node.host, ' ', badge(d.node.online ? 'ONLINE' : 'OFFLINE')] : 'not placed'],
        ['Limits', `${cpu(d.cpuMillicores)}, ${mib(d.memoryMib)} for the whole deployment`],
        ['Run', `attempt ${d.attempt}, pipeline version ${d.pipelineVersion}`],
        ['Your access', d.myAccess ? badge(d.myAccess) : [badge('NONE', 'You may no longer act on it'), ' ', h('small', { class: 'muted' }, 'no longer: ask an admin for access')]],
      ]), actionError));
    tick();
    clear(steps, d.steps.length ? runGraph(d.steps, (s) => logs.show(s.action.startsWith('service ') ? s.action.slice(8) : null, s.action.startsWith('service ') ? '' : s.id))
      : h('p', { class: 'muted' }, 'No step yet.'));
    clear(servicesSlot, table(['Service', 'Version', 'URL', 'Health', 'CPU', 'Memory'], d.services.map((s) => [
      h('strong', {}, s.name),
      h('code', {}, `${s.image}:${s.tag}`),
      nowhere(d) ? h('span', { class: 'muted' }, s.url) : [h('a', { href: s.url, target: '_blank', rel: 'noopener' }, s.url), ' ', copyButton(s.url, 'Copy', `${s.name}'s URL`)],
      healthCell(s, d),
      cpu(s.cpuMillicores),
      bytes(s.memoryBytes),
    ]), { caption: 'Services', empty: 'It runs no service.' }));
    clear(historySlot, table(['When', 'Who', 'What'], d.history.slice().reverse().map((e) => [shortTime(e.occurredAt), who(e.actor), e.summary]), { caption: 'History' }));
  };

  const chartsSlot = h('div');
  const charts = deploymentCharts(chartsSlot, id);
  clear(root, head, summary, section('Services', [], servicesSlot), section('Pipeline steps', [], steps),
    section('Usage and traffic', [], chartsSlot),
    section('Logs', [], logs.element),
    section('History', [], h('p', { class: 'intro' }, 'Who did what to it, newest first.'), historySlot));
  render(d);
  ctx.ready();
  charts.now();
  stops.push(charts.stop);
  // Samples come every 10 s whether or not the deployment changes.
  stops.push(ticker(() => charts.poke(), 10_000));

  stops.push(ticker(tick, 1000));
  stops.push(live(`subscription($id: ID!) { deploymentUpdated(id: $id) { ${FIELDS} } }`, { id }, {
    next: (data) => { keepFocus(root, () => render(data.deploymentUpdated)); charts.poke(); },
    resync: async () => render((await gql(`query($id: ID!) { deployment(id: $id) { ${FIELDS} } }`, { id })).deployment),
    error: (e) => {
      // Access ended (a grant revoked, the account disabled): what it allowed goes with it.
      if (['FORBIDDEN', 'UNAUTHENTICATED', 'NOT_FOUND'].includes(e.code)) keepFocus(root, () => render({ ...d, actions: [], myAccess: null }));
      clear(actionError, 'Live updates stopped: ', errorText(e));
      actionError.hidden = false;
    },
  }));
  return stopAll(stops);
}

async function cloneDialog(d, ctx) {
  const { services } = await gql('{ services { name registry image tagMode tag tagPattern } }');
  const current = Object.fromEntries(d.services.map((s) => [s.name, s.tag]));
  const pickers = versionPickers(d.services.map((s) => s.name), services, current);
  formDialog({
    title: `Clone ${d.name}`,
    intro: 'A new deployment of the same project and environment, with the latest pipeline version and new URLs. Change any selectable version.',
    fields: [field({ label: 'Name of the clone', name: 'name', check: rules.dnsLabel, autocomplete: 'off', hint: 'Optional; left empty, one is made up.' }),
      h('fieldset', { class: 'group' }, h('legend', {}, 'Versions'), pickers.element)],
    submit: 'Clone',
    run: async (data) => {
      const { cloneDeployment } = await gql('mutation($id: ID!, $n: String, $t: [TagChoice!]) { cloneDeployment(id: $id, name: $n, tags: $t) { id } }',
        { id: d.id, n: text(data, 'name'), t: pickers.choices(data) });
      ctx.navigate(`deployments/${cloneDeployment.id}`);
    },
  });
}
