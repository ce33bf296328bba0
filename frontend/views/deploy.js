// A new deployment: a project and environment the user may deploy to, and a version for every
// service of its latest pipeline: a pinned one shown locked, a selectable one picked from the
// registry's tags that match its pattern (with why, when there are none).

import { gql } from '../lib/api.js';
import { h, clear, pageHead, errorText } from '../lib/dom.js';
import { field, formError, onSubmit, rules, submitButton, text } from '../lib/forms.js';

const QUERY = `{ projects { name environments deployableEnvironments pipeline { version nodes { id kind service } } }
  services { name registry image tagMode tag tagPattern } }`;

// The version pickers of `serviceNames`: for each, a row saying what will run. `chosen` gives
// preselected tags (a clone keeps the source's). Returns the element and a function listing the
// choices made.
export function versionPickers(serviceNames, services, chosen = {}) {
  const rows = [];
  const list = h('div', { class: 'versions' });
  for (const name of serviceNames) {
    const s = services.find((x) => x.name === name);
    if (!s) continue;
    if (s.tagMode === 'PINNED') {
      list.append(h('div', { class: 'field' },
        h('span', { class: 'label', id: `pin-${name}` }, name),
        h('p', { class: 'pinned', 'aria-labelledby': `pin-${name}` }, h('code', {}, `${s.image}:${s.tag}`), ' ',
          h('span', { class: 'badge', title: 'The admin pinned this version: it cannot be changed here' }, 'pinned'))));
      continue;
    }
    const select = h('select', { name: `tag:${name}`, required: true, 'data-field': 'tags' }, h('option', { value: '' }, 'asking the registry…'));
    select.disabled = true;
    const why = h('p', { class: 'hint' });
    const refresh = h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Ask the registry again for ${name}'s tags` }, 'Refresh');
    const wrap = field({ label: `${name} version`, name: `tag:${name}`, control: select,
      hint: `Tags of ${s.image} in registry ${s.registry}${s.tagPattern ? ` matching ${s.tagPattern}` : ''}, newest first.` });
    wrap.append(h('div', { class: 'inline-form' }, refresh), why);
    list.append(wrap);
    const load = async (again) => {
      select.disabled = true;
      clear(why);
      try {
        const { availableTags } = await gql('query($s: String!, $r: Boolean!) { availableTags(service: $s, refresh: $r) }', { s: name, r: again });
        clear(select, availableTags.map((t) => h('option', { value: t, selected: t === chosen[name] }, t)));
        if (!availableTags.length) {
          clear(select, h('option', { value: '' }, 'no version to pick'));
          clear(why, `Registry ${s.registry} has no tag of ${s.image}${s.tagPattern ? ` matching ${s.tagPattern}` : ''}. Push one, or ask an admin to widen the pattern.`);
          why.className = 'field-error';
        } else {
          select.disabled = false;
          why.className = 'hint';
        }
      } catch (e) {
        clear(select, h('option', { value: '' }, 'the registry did not answer'));
        clear(why, 'The registry could not list the tags: ', errorText(e));
        why.className = 'field-error';
      }
    };
    refresh.addEventListener('click', () => load(true));
    rows.push(load(false));
  }
  const choices = (data) => [...data.entries()].filter(([k, v]) => k.startsWith('tag:') && v).map(([k, v]) => ({ service: k.slice(4), tag: v }));
  return { element: list, loaded: Promise.all(rows), choices };
}

export async function show(root, ctx) {
  const { projects, services } = await gql(QUERY);
  const deployable = projects.filter((p) => p.pipeline && p.deployableEnvironments.length);
  ctx.title('New deployment');
  const head = pageHead('New deployment', { crumbs: [['#/deployments', 'Deployments']],
    subtitle: 'Pick the versions to run: the deployment gets its own URLs and is cleaned up when it expires.' });
  if (!deployable.length) {
    const readOnly = projects.filter((p) => p.pipeline);
    clear(root, head, h('section', { class: 'panel callout' },
      h('p', {}, readOnly.length
        ? 'You may look at these projects but not deploy them: deploying needs FULL access, which an admin grants to your team.'
        : 'There is no project with a pipeline you may deploy yet. An admin sets one up under Projects.'),
      h('p', {}, h('a', { href: '#/projects' }, 'See the projects'))));
    ctx.ready();
    return;
  }
  const want = ctx.query.get('project');
  if (want && !deployable.some((p) => p.name === want)) {
    // Asked for a project this user may not deploy: say so, never another project's form.
    const seen = projects.some((p) => p.name === want);
    throw Object.assign(new Error(seen
      ? `You may look at project ${want} but not deploy it: deploying needs FULL access, which an admin grants to your team.`
      : `There is no project ${want} that you may deploy.`), { code: seen ? 'FORBIDDEN' : 'NOT_FOUND' });
  }
  const projectSelect = field({ label: 'Project', name: 'project', options: deployable.map((p) => p.name), value: want ?? deployable[0].name, required: true });
  const envSlot = h('div');
  const versionSlot = h('fieldset', { class: 'group' }, h('legend', {}, 'Versions'));
  const nameField = field({ label: 'Name', name: 'name', check: rules.dnsLabel, autocomplete: 'off', placeholder: 'e.g. pr-42',
    hint: 'Optional. It becomes part of its URLs (http://SERVICE.NAME.ENVIRONMENT.DOMAIN); left empty, one is made up.' });
  let pickers = null;
  const refresh = () => {
    const p = deployable.find((x) => x.name === projectSelect.querySelector('select').value);
    const preferred = ctx.query.get('environment');
    clear(envSlot, field({ label: 'Environment', name: 'environment', options: p.deployableEnvironments, value: preferred, required: true,
      hint: 'Where it runs; its URLs end with this environment\'s domain.' }));
    const names = p.pipeline.nodes.filter((n) => n.kind === 'SERVICE').map((n) => n.service);
    pickers = versionPickers(names, services);
    clear(versionSlot, h('legend', {}, `Versions (pipeline version ${p.pipeline.version})`), names.length ? pickers.element : h('p', { class: 'muted' }, 'This pipeline runs no service.'));
    return pickers.loaded;
  };
  projectSelect.querySelector('select').addEventListener('change', refresh);
  const form = h('form', { class: 'panel', id: 'deploy-form' }, projectSelect, envSlot, versionSlot, nameField, formError(),
    h('div', { class: 'actions' }, submitButton('Deploy')));
  onSubmit(form, async (data) => {
    const { createDeployment } = await gql(
      'mutation($p: String!, $e: String!, $n: String, $t: [TagChoice!]) { createDeployment(project: $p, environment: $e, name: $n, tags: $t) { id } }',
      { p: data.get('project'), e: data.get('environment'), n: text(data, 'name'), t: pickers.choices(data) });
    ctx.navigate(`deployments/${createDeployment.id}`);
  });
  clear(root, head, form);
  await refresh();
  ctx.ready();
}
