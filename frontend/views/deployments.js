// Deployments: every one the user may see, newest first, kept current by `deploymentsUpdated`
// (each change replaces its row in place); filters by words, project, environment and state.

import { gql, live } from '../lib/api.js';
import { h, clear, badge, pageHead, row, statusLine, showError, words } from '../lib/dom.js';
import { duration, secondsUntil, shortTime, who } from '../lib/format.js';
import { describe, values } from '../lib/schema.js';
import { followCatalog, stopAll, ticker } from '../lib/follow.js';

export const FIELDS = 'id name project environment state stage createdBy createdAt expiresAt actions failure { reason } services { name url healthy }';
// A deployment's stage (LIVE, REMOVING, ENDED) comes from the API, derived from the domain's
// `Phase`: the console keeps no list of which states are which.
export const ended = (d) => d.stage === 'ENDED';
export const going = (d) => d.stage !== 'LIVE';
const COLUMNS = ['Name', 'Project → environment', 'State', 'Services', 'Created', 'Expires in'];

export function expiresCell(d) {
  if (going(d)) return '—';
  const left = secondsUntil(d.expiresAt);
  return left > 0 ? duration(left) : 'due now';
}

export function stateBadge(d) {
  const title = [describe('DeploymentState', d.state), d.failure?.reason].filter(Boolean).join(' — ');
  return badge(d.state, title);
}

export function serviceLinks(d) {
  if (!d.services.length) return h('span', { class: 'muted' }, '—');
  return d.services.map((s) => h('span', { class: 'service-link' },
    ended(d) ? s.name : h('a', { href: s.url, target: '_blank', rel: 'noopener' }, s.name),
    s.healthy === false ? h('span', { class: 'badge badge-unhealthy', title: 'Its health check fails' }, 'unhealthy') : null, ' '));
}

export async function show(root, ctx) {
  const stops = [];
  const rows = new Map(); // id -> { d, tr }
  const search = h('input', { id: 'dep-search', type: 'search', placeholder: 'name, project or person', autocomplete: 'off' });
  const project = h('select', { id: 'dep-project' }, h('option', { value: '' }, 'All projects'));
  const environment = h('select', { id: 'dep-env' }, h('option', { value: '' }, 'All environments'));
  const state = h('select', { id: 'dep-state' }, h('option', { value: '' }, 'Any state'), values('DeploymentState').map((s) => h('option', { value: s }, words(s))));
  const showEnded = h('input', { id: 'dep-ended', type: 'checkbox' });
  const status = statusLine();
  const newButton = h('a', { class: 'btn btn-primary', href: '#/deployments/new', hidden: true }, 'New deployment');
  const body = h('tbody');
  const count = h('p', { class: 'muted', 'aria-live': 'polite' });
  const tableEl = h('table', { class: 'list', id: 'deployment-list' }, h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))), body);

  clear(root,
    pageHead('Deployments', { subtitle: 'Every deployment you may see, live. Open one to watch it, share it, or act on it.', actions: [newButton] }),
    h('section', { class: 'panel', 'aria-label': 'Deployments' },
      h('form', { class: 'inline-form filters', role: 'search', onsubmit: (e) => e.preventDefault() },
        h('div', { class: 'field' }, h('label', { for: 'dep-search' }, 'Search'), search),
        h('div', { class: 'field' }, h('label', { for: 'dep-project' }, 'Project'), project),
        h('div', { class: 'field' }, h('label', { for: 'dep-env' }, 'Environment'), environment),
        h('div', { class: 'field' }, h('label', { for: 'dep-state' }, 'State'), state),
        h('div', { class: 'field field-check' }, showEnded, h('label', { for: 'dep-ended' }, 'Show ended ones'))),
      status, h('div', { class: 'table-scroll' }, tableEl), count));
  ctx.title('Deployments');

  const visible = (d) => {
    const q = search.value.trim().toLowerCase();
    return (!q || [d.name, d.project, d.environment, who(d.createdBy)].some((x) => x.toLowerCase().includes(q)))
      && (!project.value || d.project === project.value)
      && (!environment.value || d.environment === environment.value)
      && (!state.value || d.state === state.value)
      && (showEnded.checked || !ended(d));
  };

  const render = (d) => {
    const tr = row(COLUMNS, [
      h('a', { href: `#/deployments/${d.id}` }, d.name),
      [h('a', { href: `#/projects/${encodeURIComponent(d.project)}` }, d.project), ' → ', h('a', { href: `#/environments/${encodeURIComponent(d.environment)}` }, d.environment)],
      stateBadge(d),
      serviceLinks(d),
      [who(d.createdBy), h('br'), h('small', { class: 'muted' }, shortTime(d.createdAt))],
      h('span', { class: 'expires' }, expiresCell(d)),
    ]);
    tr.dataset.id = d.id;
    tr.dataset.state = d.state;
    tr.hidden = !visible(d);
    return tr;
  };

  const empty = h('tr', { class: 'empty' }, h('td', { colSpan: COLUMNS.length }, 'No deployment to show.'));
  const refreshCount = () => {
    const shown = [...rows.values()].filter((r) => !r.tr.hidden).length;
    count.textContent = `${shown} of ${rows.size} shown`;
    if (shown === 0) body.append(empty); else empty.remove();
  };

  const fillOptions = (select, names, wanted) => {
    const keep = select.value || wanted || '';
    clear(select, select.options[0], [...names].sort().map((n) => h('option', { value: n }, n)));
    select.value = keep;
  };

  const load = async () => {
    const data = await gql(`query($ended: Boolean!) { deployments(includeEnded: $ended) { ${FIELDS} } projects { name deployableEnvironments pipeline { version } } }`, { ended: showEnded.checked });
    if (!ctx.current()) return;
    rows.clear();
    const fragment = document.createDocumentFragment();
    for (const d of data.deployments) {
      const tr = render(d);
      rows.set(d.id, { d, tr });
      fragment.append(tr);
    }
    clear(body, fragment);
    fillOptions(project, new Set(data.deployments.map((d) => d.project).concat(data.projects.map((p) => p.name))), ctx.query.get('project'));
    fillOptions(environment, new Set(data.deployments.map((d) => d.environment)), ctx.query.get('environment'));
    newButton.hidden = !data.projects.some((p) => p.pipeline && p.deployableEnvironments.length);
    for (const r of rows.values()) r.tr.hidden = !visible(r.d);
    refreshCount();
    clear(status);
  };

  // One deployment changed: its row is replaced where it is, or the new one goes on top.
  const apply = (d) => {
    const began = performance.now();
    const had = rows.get(d.id);
    if (!had && ended(d) && !showEnded.checked) return;
    const tr = render(d);
    if (had) {
      had.tr.replaceWith(tr);
    } else {
      body.prepend(tr);
    }
    tr.classList.add('flash');
    rows.set(d.id, { d, tr });
    refreshCount();
    performance.measure(`deployment-applied:${d.id}:${d.state}`, { start: began });
  };

  // The filters are part of the address, so a filtered list can be shared (and survives a reload).
  const remember = () => {
    const q = new URLSearchParams();
    for (const [key, input] of [['q', search], ['project', project], ['environment', environment], ['state', state]]) if (input.value) q.set(key, input.value);
    if (showEnded.checked) q.set('ended', '1');
    const query = q.toString();
    history.replaceState(null, '', `#/deployments${query ? `?${query}` : ''}`);
  };
  const refilter = () => {
    for (const r of rows.values()) r.tr.hidden = !visible(r.d);
    refreshCount();
    remember();
  };
  for (const input of [search, project, environment, state]) input.addEventListener('input', refilter);
  showEnded.addEventListener('change', () => { remember(); load().catch((e) => showError(status, e)); });
  search.value = ctx.query.get('q') ?? '';
  state.value = ctx.query.get('state') ?? '';
  showEnded.checked = ctx.query.get('ended') === '1';

  stops.push(live(`subscription { deploymentsUpdated { ${FIELDS} } }`, {}, {
    next: (data) => apply(data.deploymentsUpdated),
    resync: () => load().catch((e) => showError(status, e)),
    error: (e) => showError(status, e),
  }));
  stops.push(followCatalog(['PROJECT', 'PIPELINE'], () => load().catch((e) => showError(status, e))));
  stops.push(ticker(() => {
    for (const r of rows.values()) {
      if (!r.tr.hidden) {
        const cell = r.tr.querySelector('.expires');
        if (cell) cell.textContent = expiresCell(r.d);
      }
    }
  }, 15000));

  clear(status, 'Loading deployments…');
  await load();
  ctx.ready();
  return stopAll(stops);
}
