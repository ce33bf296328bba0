// The deployments view: deploy a project's latest pipeline with the versions picked from the
// registry, see every deployment one may see with its state, services and countdown, and open
// one to watch it come up live (deploymentUpdated) with its log (deploymentLogs).
import { gql, subscribe } from './graphql-client.js';

const $ = (id) => document.getElementById(id);
const el = (tag, text) => { const e = document.createElement(tag); e.textContent = text ?? ''; return e; };

const FIELDS = 'id name project environment state attempt expiresInSeconds failure { step reason exitCode oomKilled } '
  + 'services { name tag healthy healthDetail url nodePort } steps { id action state detail }';

function countdown(seconds) {
  if (seconds <= 0) return 'due';
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min ${seconds % 60} s`;
}

function act(label, run) {
  const b = el('button', label);
  b.onclick = async () => {
    $('deployment-error').textContent = '';
    try { await run(); } catch (e) { $('deployment-error').textContent = e.message; }
    loadDeployments();
  };
  return b;
}

export async function loadDeployments() {
  const { deployments } = await gql(`{ deployments { ${FIELDS} } }`);
  $('deployment-list').replaceChildren(...deployments.map((d) => {
    const tr = el('tr');
    tr.dataset.deployment = d.id;
    const state = el('td', d.state);
    state.className = `state state-${d.state.toLowerCase()}`;
    if (d.failure) state.title = d.failure.reason;
    const services = el('td');
    for (const s of d.services) {
      const a = el('a', `${s.name}:${s.tag}`);
      a.href = s.url;
      a.title = s.healthDetail;
      services.append(a, el('span', s.healthy === false ? ' (unhealthy) ' : ' '));
    }
    const id = { id: d.id };
    const actions = el('td');
    actions.append(act('Watch', async () => watch(d.id)));
    if (d.state === 'FAILED') actions.append(act('Retry', () => gql('mutation($id: ID!) { retryDeployment(id: $id) { id } }', id)));
    actions.append(act('Extend', () => gql('mutation($id: ID!) { extendDeployment(id: $id) { id } }', id)));
    actions.append(act('Clone', () => gql('mutation($id: ID!) { cloneDeployment(id: $id) { id } }', id)));
    actions.append(act('Delete', () => gql('mutation($id: ID!) { deleteDeployment(id: $id) { id } }', id)));
    tr.append(el('td', d.name), el('td', `${d.project} → ${d.environment}`), state, services, el('td', countdown(d.expiresInSeconds)), actions);
    return tr;
  }));
}

// The open deployment: its live view and log, until another is opened.
let closeWatch = () => {};

function watch(id) {
  closeWatch();
  const box = $('deployment-detail');
  box.hidden = false;
  const log = $('deployment-log');
  log.textContent = '';
  const render = (d) => {
    $('deployment-title').textContent = `${d.name}: ${d.state}${d.failure ? ` (${d.failure.reason})` : ''}`;
    $('deployment-steps').replaceChildren(...d.steps.map((s) => {
      const li = el('li', `${s.id} (${s.action}): ${s.state.toLowerCase().replace('_', ' ')}${s.detail ? ` — ${s.detail}` : ''}`);
      li.className = `step step-${s.state.toLowerCase()}`;
      return li;
    }));
  };
  const stops = [
    subscribe(`subscription($id: ID!) { deploymentUpdated(id: $id) { ${FIELDS} } }`, { id }, (data) => {
      render(data.deploymentUpdated);
      loadDeployments().catch(() => {});
    }, (e) => { $('deployment-error').textContent = e.message; }),
    subscribe('subscription($id: ID!) { deploymentLogs(id: $id) { source text } }', { id }, (data) => {
      const line = data.deploymentLogs;
      log.textContent += `[${line.source}] ${line.text}\n`;
      log.scrollTop = log.scrollHeight;
    }, (e) => { $('deployment-error').textContent = e.message; }),
  ];
  closeWatch = () => stops.forEach((stop) => stop());
}

// The create form: projects one may deploy, their environments, and a version picker for
// each selectable service of the latest pipeline (asked of the registry).
export async function prepareCreateForm() {
  const { projects, services } = await gql('{ projects { name environments myAccess pipeline { nodes { service } } } services { name tagMode } }');
  const deployable = projects.filter((p) => p.pipeline);
  const project = $('deploy-project');
  project.replaceChildren(...deployable.map((p) => el('option', p.name)));
  const selectable = new Set(services.filter((s) => s.tagMode === 'SELECTABLE').map((s) => s.name));
  const refresh = async () => {
    const p = deployable.find((x) => x.name === project.value);
    $('deploy-environment').replaceChildren(...(p?.environments ?? []).map((e) => el('option', e)));
    const pickers = [];
    for (const service of (p?.pipeline.nodes ?? []).map((n) => n.service).filter((s) => s && selectable.has(s))) {
      const label = el('label', `${service} `);
      const select = el('select');
      select.name = `tag:${service}`;
      label.append(select);
      pickers.push(label);
      gql('query($s: String!) { availableTags(service: $s) }', { s: service })
        .then(({ availableTags }) => select.replaceChildren(...availableTags.map((t) => el('option', t))))
        .catch((e) => { $('deployment-error').textContent = e.message; });
    }
    $('deploy-tags').replaceChildren(...pickers);
  };
  project.onchange = refresh;
  await refresh();
}

$('deploy-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const tags = [...f.entries()].filter(([k]) => k.startsWith('tag:')).map(([k, v]) => ({ service: k.slice(4), tag: v }));
  $('deployment-error').textContent = '';
  try {
    const { createDeployment } = await gql(
      'mutation($p: String!, $e: String!, $n: String, $t: [TagChoice!]) { createDeployment(project: $p, environment: $e, name: $n, tags: $t) { id } }',
      { p: f.get('project'), e: f.get('environment'), n: f.get('name') || null, t: tags },
    );
    await loadDeployments();
    watch(createDeployment.id);
  } catch (e) { $('deployment-error').textContent = e.message; }
});
