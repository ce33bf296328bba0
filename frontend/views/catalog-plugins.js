// Plugins: containers a pipeline runs with JSON on stdin (create a database, run SQL) and reads
// JSON from. Image, the JSON Schema of their parameters (checked as it is typed), limits,
// timeout, and whether they join the deployment's network.

import { gql } from '../lib/api.js';
import { h, clear, table, notify, showError } from '../lib/dom.js';
import { cpu, mib } from '../lib/format.js';
import { formDialog } from '../lib/dialog.js';
import { deleteUnlessUsed } from './catalog-uses.js';
import { field, int, rules, text } from '../lib/forms.js';

// A JSON Schema must be an object (or a boolean); the server checks it is a valid schema.
function schemaRule(v) {
  const problem = rules.json(v);
  if (problem) return problem;
  const value = JSON.parse(v);
  return typeof value === 'object' && value !== null && !Array.isArray(value) || typeof value === 'boolean' ? null : 'A JSON Schema is an object, such as {"type": "object"}.';
}

export function pluginsTab({ body, actions, data, ctx, reload, status }) {
  const admin = ctx.isAdmin;
  clear(actions, admin ? h('button', { type: 'button', class: 'btn btn-primary', onclick: () => edit(null) }, 'Add plugin') : null);
  clear(body, h('p', { class: 'intro' }, 'A plugin is a container a pipeline step runs: it gets its parameters and the project\'s secrets as JSON on stdin and answers JSON on stdout, whose outputs later nodes can use.'),
    h('div', { class: 'table-scroll' }, table(['Plugin', 'Image', 'What it does', 'Limits', 'Network', ''], data.plugins.map((p) => [
      h('strong', {}, p.name), h('code', {}, `${p.registry}: ${p.repository}:${p.tag}`), p.description || h('span', { class: 'muted' }, '—'),
      `${cpu(p.cpuMillis)}, ${mib(p.memoryMib)}, ${p.timeoutSeconds} s`, p.joinsDeploymentNetwork ? 'joins the deployment' : 'isolated',
      admin ? h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Edit plugin ${p.name}`, onclick: () => edit(p) }, 'Edit'),
        h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Delete plugin ${p.name}`, onclick: () => remove(p) }, 'Delete')) : '',
    ]), { caption: 'Plugins', empty: 'No plugin yet.' })));

  function edit(p) {
    const registries = data.registries.map((r) => r.name);
    formDialog({
      title: p ? `Edit plugin ${p.name}` : 'Add a plugin', submit: p ? 'Save' : 'Add plugin', wide: true,
      intro: p ? 'Saved pipeline versions keep the image they pinned; new versions use this.' : null,
      fields: [
        p ? null : field({ label: 'Name', name: 'name', required: true, check: rules.dnsLabel, hint: 'Such as create-db.' }),
        field({ label: 'Registry', name: 'registry', options: registries, value: p?.registry ?? registries.find((r) => r !== 'docker-hub') ?? registries[0], required: true }),
        field({ label: 'Image', name: 'repository', required: true, value: p?.repository, placeholder: 'tools/create-db' }),
        field({ label: 'Tag', name: 'tag', required: true, value: p?.tag, check: rules.tag, placeholder: '1.4' }),
        field({ label: 'Description', name: 'description', value: p?.description, placeholder: 'Creates a database and a user for the deployment' }),
        field({ label: 'Parameters (JSON Schema)', name: 'parametersSchema', multiline: 8, required: true, check: schemaRule, spellcheck: false,
          value: JSON.stringify(p?.parametersSchema ?? { type: 'object', properties: {} }, null, 2),
          hint: 'What a pipeline node may pass it; checked when a pipeline is saved. {} accepts anything.' }),
        h('div', { class: 'inline-form' },
          field({ label: 'CPU (millicores)', name: 'cpuMillis', type: 'number', min: 1, value: p?.cpuMillis ?? 500 }),
          field({ label: 'Memory (MiB)', name: 'memoryMib', type: 'number', min: 1, value: p?.memoryMib ?? 256 }),
          field({ label: 'Timeout (s)', name: 'timeoutSeconds', type: 'number', min: 1, value: p?.timeoutSeconds ?? 300 })),
        field({ label: 'Joins the deployment\'s network (to reach its services)', name: 'joinsDeploymentNetwork', type: 'checkbox', value: p?.joinsDeploymentNetwork ?? false }),
      ],
      run: async (d) => {
        const input = {
          name: p?.name ?? text(d, 'name'), registry: d.get('registry'), repository: text(d, 'repository'), tag: text(d, 'tag'),
          description: text(d, 'description') ?? '', parametersSchema: JSON.parse(d.get('parametersSchema')),
          cpuMillis: int(d, 'cpuMillis'), memoryMib: int(d, 'memoryMib'), timeoutSeconds: int(d, 'timeoutSeconds'),
          joinsDeploymentNetwork: d.get('joinsDeploymentNetwork') === 'on',
        };
        await gql(`mutation($i: PluginInput!) { ${p ? 'updatePlugin' : 'createPlugin'}(input: $i) { name } }`, { i: input });
        notify(`Plugin ${input.name} ${p ? 'saved' : 'added'}.`);
        await reload();
      },
    });
  }

  async function remove(p) {
    try {
      await deleteUnlessUsed({ kind: 'plugin', name: p.name, message: 'It is forgotten; deployments already made keep what it did.', status, reload });
    } catch (e) { showError(status, e); }
  }
}
