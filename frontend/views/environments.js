// Environments: where deployments run (a base domain, a cleanup timer, Docker nodes).

import { gql, live } from '../lib/api.js';
import { h, clear, pageHead, table, statusLine, showError, notify } from '../lib/dom.js';
import { lifetime } from '../lib/format.js';
import { formDialog } from '../lib/dialog.js';
import { field, rules, text } from '../lib/forms.js';
import { followCatalog, stopAll } from '../lib/follow.js';

// The fields of an environment's form: `e` to edit, null to create.
export function environmentFields(e) {
  const days = e ? e.cleanupAfterSeconds / 86400 : 7;
  return [
    e ? null : field({ label: 'Name', name: 'name', required: true, check: rules.dnsLabel, hint: 'A DNS label, such as staging: part of every URL in it.' }),
    field({ label: 'Base domain', name: 'baseDomain', required: true, value: e?.baseDomain, check: rules.domain, placeholder: 'qa.example.com',
      hint: 'Services answer at http://SERVICE.DEPLOYMENT.NAME.BASE-DOMAIN. Under localhost no DNS record is needed.' }),
    field({ label: 'Cleanup after (days)', name: 'cleanupDays', type: 'number', min: 0.01, step: 'any', required: true, value: Number.isInteger(days) ? days : days.toFixed(2),
      'data-field': 'cleanupAfterSeconds', hint: 'A deployment is deleted this long after it is created or last extended, unless its project says otherwise.' }),
  ];
}

export function environmentInput(d, name) {
  return { name: name ?? text(d, 'name'), baseDomain: text(d, 'baseDomain'), cleanupAfterSeconds: Math.round(Number(d.get('cleanupDays')) * 86400) };
}

export async function show(root, ctx) {
  const stops = [];
  const status = statusLine();
  const slot = h('div', { class: 'table-scroll' });
  const create = h('button', { type: 'button', class: 'btn btn-primary', hidden: !ctx.isAdmin }, 'New environment');
  clear(root, pageHead('Environments', { subtitle: 'Where deployments run: a domain for their URLs, a cleanup timer, and the Docker nodes that host them.', actions: [create] }),
    h('section', { class: 'panel', 'aria-label': 'Environments' }, status, slot));
  ctx.title('Environments');
  const known = new Map(); // node id -> status, as shown
  const load = async () => {
    const { environments, nodes } = await gql('{ environments { name baseDomain cleanupAfterSeconds } nodes { id environment status } }');
    nodes.forEach((n) => known.set(n.id, n.status));
    clear(slot, table(['Environment', 'Domain', 'Cleanup after', 'Nodes'], environments.map((e) => {
      const mine = nodes.filter((n) => n.environment === e.name);
      const online = mine.filter((n) => n.status === 'ONLINE').length;
      return [h('a', { href: `#/environments/${encodeURIComponent(e.name)}` }, e.name), h('code', {}, `*.${e.name}.${e.baseDomain}`), lifetime(e.cleanupAfterSeconds),
        mine.length ? `${online} of ${mine.length} online` : h('span', { class: 'muted' }, 'none yet')];
    }), { caption: 'Environments', empty: ctx.isAdmin ? 'No environment yet: create one, then add a node to it.' : 'No environment is shared with your teams yet.' }));
    clear(status);
  };
  create.addEventListener('click', () => formDialog({
    title: 'New environment', submit: 'Create environment', fields: environmentFields(null),
    run: async (d) => {
      const { createEnvironment } = await gql('mutation($i: EnvironmentInput!) { createEnvironment(input: $i) { name } }', { i: environmentInput(d) });
      notify(`Environment ${createEnvironment.name} created: add a node to it next.`);
      ctx.navigate(`environments/${encodeURIComponent(createEnvironment.name)}`);
    },
  }));
  stops.push(followCatalog(['ENVIRONMENT'], () => load().catch((e) => showError(status, e))));
  // Usage reports come every few seconds: the list changes only when a node's status does.
  stops.push(live('subscription { nodesUpdated { id node { status } } }', {}, {
    next: (d) => {
      const { id, node } = d.nodesUpdated;
      const now = node?.status ?? 'GONE';
      if (known.get(id) === now) return;
      known.set(id, now);
      load().catch((e) => showError(status, e));
    },
    resync: () => load().catch((e) => showError(status, e)),
    error: (e) => showError(status, e),
  }));
  await load();
  ctx.ready();
  return stopAll(stops);
}
