// The catalog: container registries, services and plugins, a tab each (#/catalog/registries,
// #/catalog/services, #/catalog/plugins). Everyone may look; admins change them. Admins also
// have #/catalog/webhooks.

import { gql } from '../lib/api.js';
import { h, clear, pageHead, statusLine, showError } from '../lib/dom.js';
import { followCatalog, stopAll } from '../lib/follow.js';
import { registriesTab } from './catalog-registries.js';
import { servicesTab } from './catalog-services.js';
import { pluginsTab } from './catalog-plugins.js';
import { webhooksTab, WEBHOOKS_QUERY } from './catalog-webhooks.js';

// [address, label, renderer, catalog kinds it follows, only for admins, its own query]
const TABS = [
  ['registries', 'Registries', registriesTab, ['REGISTRY', 'SERVICE', 'PLUGIN']],
  ['services', 'Services', servicesTab, ['SERVICE', 'REGISTRY']],
  ['plugins', 'Plugins', pluginsTab, ['PLUGIN', 'REGISTRY']],
  ['webhooks', 'Webhooks', webhooksTab, ['WEBHOOK', 'PROJECT', 'ENVIRONMENT'], true, WEBHOOKS_QUERY],
];

export const CATALOG_QUERY = `{ registries { name url hasCredentials updatedAt }
  services { name registry image tagMode tag tagPattern port env { name value } healthCheck { httpPath command intervalSeconds timeoutSeconds retries } }
  plugins { name registry repository tag description parametersSchema cpuMillis memoryMib timeoutSeconds joinsDeploymentNetwork } }`;

export async function show(root, ctx) {
  const tabs = TABS.filter(([, , , , adminOnly]) => !adminOnly || ctx.isAdmin);
  const wanted = ctx.params.tab ?? 'registries';
  const tab = tabs.find(([id]) => id === wanted);
  const hidden = TABS.find(([id, , , , adminOnly]) => id === wanted && adminOnly);
  if (!tab && hidden) throw Object.assign(new Error(`The catalog's ${hidden[1].toLowerCase()} are for admins.`), { code: 'FORBIDDEN' });
  if (!tab) throw Object.assign(new Error('There is no such part of the catalog.'), { code: 'NOT_FOUND' });
  const [id, label, render, kinds, , query = CATALOG_QUERY] = tab;
  const stops = [];
  const status = statusLine();
  const body = h('div');
  const actions = h('div', { class: 'actions' });
  clear(root,
    pageHead('Catalog', { subtitle: 'Where images come from, the services deployments are made of, and the plugins pipelines run.' }),
    h('nav', { class: 'tabs', 'aria-label': 'Catalog' }, tabs.map(([t, text]) => h('a', { href: `#/catalog/${t}`, 'aria-current': t === id ? 'page' : null }, text))),
    h('section', { class: 'panel', 'aria-label': label }, h('div', { class: 'panel-head' }, h('h2', {}, label), actions), status, body));
  ctx.title(`${label} · Catalog`);
  // A change the page made itself comes back through the live feed too: the same data is not
  // drawn twice, so a click landing meanwhile is not lost on a button being replaced.
  let shown = null;
  const load = async () => {
    const data = await gql(query);
    const key = JSON.stringify(data);
    if (key === shown) return;
    shown = key;
    render({ body, actions, data, ctx, reload: load, status });
  };
  stops.push(followCatalog(kinds, () => load().catch((e) => showError(status, e)), { listening: true }));
  await load();
  ctx.ready();
  return stopAll(stops);
}
