// One project: where it deploys and within what limits (admins edit), its pipeline, its secrets
// (set, replaced and deleted by FULL access; values never shown), who has access, its
// deployments, live, and its pull-request previews (project-previews.js).

import { gql, live } from '../lib/api.js';
import { h, clear, badge, facts, notify, pageHead, redraw, section, table, statusLine, showError } from '../lib/dom.js';
import { cpu, mib, lifetime, shortTime, who } from '../lib/format.js';
import { formDialog, confirmThen } from '../lib/dialog.js';
import { field, formError, int, onSubmit, rules, submitButton, text } from '../lib/forms.js';
import { followCatalog, stopAll } from '../lib/follow.js';
import { ended, stateBadge } from './deployments.js';
import { previewsSection } from './project-previews.js';

// The fields of a project's form: `p` to edit, null to create.
export function projectFields(p, environments) {
  const chosen = new Set(p?.environments ?? []);
  return [
    p ? null : field({ label: 'Name', name: 'name', required: true, check: rules.dnsLabel, hint: 'A DNS label, such as shop.' }),
    h('fieldset', { class: 'choices', id: 'envs', 'data-field': 'environments', tabindex: -1, 'aria-describedby': 'envs-error' },
      h('legend', {}, 'Environments it deploys to'),
      environments.length ? environments.map((e) => h('label', {}, h('input', { type: 'checkbox', name: 'environments', value: e, checked: chosen.has(e) }), e))
        : h('p', { class: 'hint' }, 'No environment yet: create one under Environments first.'),
      h('p', { class: 'field-error', id: 'envs-error', hidden: true })),
    field({ label: 'CPU per deployment (millicores)', name: 'cpuMillis', type: 'number', min: 1, step: 1, required: true, value: p?.cpuMillis ?? 1000,
      hint: '1000 millicores is one CPU core, shared by all its services and plugins.' }),
    field({ label: 'Memory per deployment (MiB)', name: 'memoryMib', type: 'number', min: 1, step: 1, required: true, value: p?.memoryMib ?? 1024 }),
    field({ label: 'Cleanup after (hours)', name: 'cleanupAfterHours', type: 'number', min: 1, step: 1, 'data-field': 'cleanupAfterSeconds',
      value: p?.cleanupAfterSeconds ? Math.round(p.cleanupAfterSeconds / 3600) : '',
      hint: 'Optional: overrides the environments\' own timer. Deployments are deleted this long after they are created or last extended.' }),
  ];
}

export function projectInput(data, name) {
  const hours = int(data, 'cleanupAfterHours');
  return {
    name: name ?? text(data, 'name'),
    environments: data.getAll('environments'),
    cpuMillis: int(data, 'cpuMillis'),
    memoryMib: int(data, 'memoryMib'),
    cleanupAfterSeconds: hours === null ? null : hours * 3600,
  };
}

const QUERY = `query($n: String!) { deployments(project: $n) { id name environment state stage createdBy failure { reason } }
  project(name: $n) { name environments cpuMillis memoryMib cleanupAfterSeconds myAccess deployableEnvironments
  grants { team access } pipeline { version savedAt savedBy nodes { id kind service plugin } edges { from to } }
  secrets { name updatedAt updatedBy } } }`;

export async function show(root, ctx) {
  const name = ctx.params.name;
  const stops = [];
  const head = h('div');
  const about = h('div');
  const pipelineSlot = h('div');
  const secretsSlot = h('div');
  const grantsSlot = h('div', { class: 'table-scroll' });
  const deploymentsSlot = h('div', { class: 'table-scroll' });
  const previewsSlot = h('div');
  let previews = null;
  const status = statusLine();
  const deployments = new Map();
  let p = null;
  let shown = null;

  const renderDeployments = () => {
    const list = [...deployments.values()].filter((d) => !ended(d));
    clear(deploymentsSlot, table(['Name', 'Environment', 'State', 'Created by'], list.map((d) => [
      h('a', { href: `#/deployments/${d.id}` }, d.name), d.environment, stateBadge(d), who(d.createdBy),
    ]), { caption: 'Deployments', empty: 'No deployment of it now.' }));
  };

  // `live`: a change made elsewhere, so what is being typed into the secret form is kept.
  const load = async (live = false) => {
    const data = await gql(QUERY, { n: name });
    const key = JSON.stringify(data);
    // The live echo of a change this page made: already drawn.
    if (live && key === shown) return;
    shown = key;
    p = data.project;
    deployments.clear();
    data.deployments.forEach((d) => deployments.set(d.id, d));
    redraw(root, live, render);
  };

  const render = () => {
    const full = p.myAccess === 'FULL';
    ctx.title(`Project ${p.name}`);
    const actions = [];
    if (p.pipeline && p.deployableEnvironments.length) actions.push(h('a', { class: 'btn btn-primary', href: `#/deployments/new?project=${encodeURIComponent(p.name)}` }, `Deploy ${p.name}`));
    if (ctx.isAdmin) {
      actions.push(h('button', { type: 'button', class: 'btn', onclick: edit }, 'Edit'));
      actions.push(h('button', { type: 'button', class: 'btn btn-danger', onclick: remove }, 'Delete'));
    }
    clear(head, pageHead(`Project ${p.name}`, { crumbs: [['#/projects', 'Projects']], actions }));
    clear(about, h('section', { class: 'panel', 'aria-label': 'About' }, facts([
      ['Deploys to', p.environments.length ? p.environments.flatMap((e, i) => [i ? ', ' : '', h('a', { href: `#/environments/${encodeURIComponent(e)}` }, e)]) : 'no environment yet'],
      ['Limits per deployment', `${cpu(p.cpuMillis)}, ${mib(p.memoryMib)}`],
      ['Cleanup', p.cleanupAfterSeconds ? `after ${lifetime(p.cleanupAfterSeconds)} (overrides the environments' timers)` : "the environment's timer"],
      ['Your access', p.myAccess ? badge(p.myAccess) : 'through a grant on one of its environments'],
    ]), status));
    clear(pipelineSlot, p.pipeline
      ? [h('p', {}, `Version ${p.pipeline.version}, saved by ${who(p.pipeline.savedBy)} ${shortTime(p.pipeline.savedAt)}: `,
        `${p.pipeline.nodes.filter((n) => n.kind === 'SERVICE').length} service(s), ${p.pipeline.nodes.filter((n) => n.kind === 'PLUGIN').length} plugin step(s).`),
      h('a', { href: `#/projects/${encodeURIComponent(p.name)}/pipeline` }, 'See the pipeline and its versions')]
      : [h('p', { class: 'muted' }, 'No pipeline yet: until one is saved, the project cannot be deployed.'),
        h('a', { href: `#/projects/${encodeURIComponent(p.name)}/pipeline` }, 'Pipeline')]);

    const secretRows = p.secrets.map((s) => [
      h('code', {}, s.name), `${shortTime(s.updatedAt)} by ${who(s.updatedBy)}`,
      full ? h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Replace secret ${s.name}`, onclick: () => setSecret(s.name) }, 'Replace'),
        h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Delete secret ${s.name}`, onclick: () => deleteSecret(s.name) }, 'Delete')) : '',
    ]);
    const form = full ? secretForm() : null;
    clear(secretsSlot, h('p', { class: 'intro' }, 'Values are encrypted when set and never shown again; plugins get them at run time, and services through ${{ secrets.NAME }} in their environment.'),
      h('div', { class: 'table-scroll' }, table(['Name', 'Last set', ''], secretRows, { caption: 'Secrets', empty: 'No secret.' })), form);
    clear(grantsSlot, table(['Team', 'Access'], p.grants.map((g) => [ctx.isAdmin ? h('a', { href: `#/teams/${encodeURIComponent(g.team)}` }, g.team) : g.team, badge(g.access)]),
      { caption: 'Access', empty: 'No team has access yet: admins see it all; grant a team access under Teams.' }));
    renderDeployments();
  };

  const secretForm = () => {
    const form = h('form', { class: 'inline-form', id: 'secret-form', 'aria-label': 'Set a secret' },
      field({ label: 'Secret name', name: 'name', required: true, check: rules.secretName, placeholder: 'DB_PASSWORD', autocomplete: 'off' }),
      field({ label: 'Value', name: 'value', type: 'password', required: true, autocomplete: 'new-password' }),
      submitButton('Set secret'), formError());
    onSubmit(form, async (data) => {
      await gql('mutation($p: String!, $n: String!, $v: String!) { setSecret(project: $p, name: $n, value: $v) { name } }',
        { p: p.name, n: text(data, 'name'), v: data.get('value') });
      notify(`Secret ${text(data, 'name')} set.`);
      form.reset();
      await load();
    });
    return form;
  };

  const setSecret = (secret) => formDialog({
    title: `Replace secret ${secret}`, submit: 'Replace',
    intro: 'The old value is destroyed; deployments made from now on get the new one.',
    fields: [field({ label: 'New value', name: 'value', type: 'password', required: true, autocomplete: 'new-password' })],
    run: async (data) => {
      await gql('mutation($p: String!, $n: String!, $v: String!) { setSecret(project: $p, name: $n, value: $v) { name } }', { p: p.name, n: secret, v: data.get('value') });
      notify(`Secret ${secret} replaced.`);
      await load();
    },
  });

  const deleteSecret = async (secret) => {
    await confirmThen({ title: `Delete secret ${secret}?`, message: `Its value is destroyed for good. Pipelines or services of ${p.name} that use it will fail until it is set again.`, action: `Delete ${secret}` }, status, async () => {
      await gql('mutation($p: String!, $n: String!) { deleteSecret(project: $p, name: $n) }', { p: p.name, n: secret });
      notify(`Secret ${secret} deleted.`);
      await load();
    });
  };

  const edit = async () => {
    const { environments } = await gql('{ environments { name } }');
    formDialog({
      title: `Edit project ${p.name}`, submit: 'Save', wide: true,
      fields: projectFields(p, environments.map((e) => e.name)),
      run: async (data) => {
        await gql('mutation($i: ProjectInput!) { updateProject(input: $i) { name } }', { i: projectInput(data, p.name) });
        notify(`Project ${p.name} saved.`);
        await load();
      },
    });
  };

  const remove = async () => {
    const live = [...deployments.values()].filter((d) => !ended(d)).length;
    await confirmThen({ title: `Delete project ${p.name}?`,
      message: `Its pipeline versions, its ${p.secrets.length} secret(s) and every team's access to it are removed for good.${live ? ` It has ${live} deployment(s) now.` : ''}`,
      action: `Delete ${p.name}` }, status, async () => {
      await gql('mutation($n: String!) { deleteProject(name: $n) }', { n: p.name });
      notify(`Project ${p.name} deleted.`);
      ctx.navigate('projects');
    });
  };

  await load();
  previews = previewsSection(previewsSlot, ctx, p);
  await previews.load();
  stops.push(previews.stop);
  clear(root, head, about,
    h('div', { class: 'grid-2' }, section('Pipeline', [], pipelineSlot), section('Access', [], grantsSlot)),
    section('Secrets', [], secretsSlot),
    section('Deployments', [], deploymentsSlot),
    section('Pull-request previews', [], previewsSlot));
  ctx.ready();
  const reloadPreviews = () => previews.load().catch((e) => showError(status, e));
  stops.push(followCatalog(['PROJECT', 'PIPELINE', 'SECRET', 'TEAM'], () => { load(true).catch((e) => showError(status, e)); reloadPreviews(); }));
  stops.push(live('subscription($p: String) { deploymentsUpdated(project: $p) { id name environment state stage createdBy failure { reason } } }', { p: name }, {
    next: (d) => { deployments.set(d.deploymentsUpdated.id, d.deploymentsUpdated); renderDeployments(); reloadPreviews(); },
    resync: () => load(true).catch((e) => showError(status, e)),
    error: (e) => showError(status, e),
  }));
  return stopAll(stops);
}
