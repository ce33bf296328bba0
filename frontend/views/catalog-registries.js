// Registries: add, edit (URL, credentials replaced or removed: they are never shown), remove,
// and test one by listing an image's tags, with the registry's error when it fails.

import { gql } from '../lib/api.js';
import { h, clear, table, notify, errorText } from '../lib/dom.js';
import { shortTime } from '../lib/format.js';
import { formDialog, infoDialog, confirmThen } from '../lib/dialog.js';
import { field, rules, text } from '../lib/forms.js';

export function registriesTab({ body, actions, data, ctx, reload, status }) {
  const admin = ctx.isAdmin;
  const usedBy = (r) => data.services.filter((s) => s.registry === r.name).map((s) => `service ${s.name}`)
    .concat(data.plugins.filter((p) => p.registry === r.name).map((p) => `plugin ${p.name}`));
  clear(actions, admin ? h('button', { type: 'button', class: 'btn btn-primary', onclick: () => edit(null) }, 'Add registry') : null);
  clear(body, h('p', { class: 'intro' }, 'Registries speak the Registry HTTP API v2 (Docker Hub, GHCR, Harbor, GitLab, a registry of your own). Credentials are stored encrypted, used to list tags and to pull, and never shown again.'),
    h('div', { class: 'table-scroll' }, table(['Registry', 'URL', 'Credentials', 'Used by', 'Changed', ''], data.registries.map((r) => [
      h('strong', {}, r.name), h('code', {}, r.url), r.hasCredentials ? 'stored' : h('span', { class: 'muted' }, 'none (anonymous)'),
      usedBy(r).join(', ') || h('span', { class: 'muted' }, 'nothing yet'), shortTime(r.updatedAt),
      admin ? h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Test registry ${r.name}`, onclick: () => test(r) }, 'Test'),
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Edit registry ${r.name}`, onclick: () => edit(r) }, 'Edit'),
        h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Remove registry ${r.name}`, onclick: () => remove(r) }, 'Remove')) : '',
    ]), { caption: 'Registries', empty: 'No registry yet.' })));

  function edit(r) {
    const fields = [
      r ? null : field({ label: 'Name', name: 'name', required: true, check: rules.dnsLabel, hint: 'How services and plugins refer to it, such as ghcr or company.' }),
      field({ label: 'URL', name: 'url', type: 'url', required: true, value: r?.url, placeholder: 'https://registry.example.com', hint: 'The base URL of its HTTP API v2. Inside a private network only where the server allows it (NULLOPS_ALLOWED_PRIVATE_TARGETS).' }),
      r?.hasCredentials ? h('p', { class: 'hint' }, 'Credentials are stored. Enter a username and password to replace them, or remove them.') : null,
      field({ label: 'Username', name: 'username', autocomplete: 'off', hint: r ? 'Leave both empty to keep what is stored.' : 'Leave both empty for an anonymous registry.' }),
      field({ label: 'Password or token', name: 'password', type: 'password', autocomplete: 'new-password' }),
      r?.hasCredentials ? field({ label: 'Remove the stored credentials', name: 'clearCredentials', type: 'checkbox' }) : null,
    ];
    formDialog({
      title: r ? `Edit registry ${r.name}` : 'Add a registry', submit: r ? 'Save' : 'Add registry', fields,
      run: async (d) => {
        const creds = { username: text(d, 'username'), password: d.get('password') || null };
        if (r) {
          await gql('mutation($i: RegistryUpdateInput!) { updateRegistry(input: $i) { name } }',
            { i: { name: r.name, url: text(d, 'url'), ...creds, clearCredentials: d.get('clearCredentials') === 'on' } });
          notify(`Registry ${r.name} saved.`);
        } else {
          await gql('mutation($i: RegistryInput!) { createRegistry(input: $i) { name } }', { i: { name: text(d, 'name'), url: text(d, 'url'), ...creds } });
          notify(`Registry ${text(d, 'name')} added.`);
        }
        await reload();
      },
    });
  }

  function test(r) {
    const suggestion = data.services.find((s) => s.registry === r.name)?.image ?? data.plugins.find((p) => p.registry === r.name)?.repository ?? '';
    const result = h('div', { class: 'test-result', 'aria-live': 'polite' });
    formDialog({
      title: `Test registry ${r.name}`, submit: 'List tags',
      intro: 'Asks the registry, with its stored credentials, for the tags of an image.',
      fields: [field({ label: 'Image', name: 'repository', required: true, value: suggestion, placeholder: 'shop/api', hint: 'A repository in this registry, such as library/postgres.' }), result],
      run: async (d) => {
        clear(result, h('p', { class: 'muted' }, 'Asking…'));
        try {
          const { registryTags } = await gql('query($r: String!, $i: String!) { registryTags(registry: $r, repository: $i, refresh: true) }', { r: r.name, i: text(d, 'repository') });
          clear(result, h('p', { class: 'ok' }, `It answered: ${registryTags.length} tag(s), newest first.`), h('div', { class: 'preview' }, registryTags.join('  ') || '(none)'));
        } catch (e) {
          clear(result, h('p', { class: 'form-error', role: 'alert' }, 'It failed: ', errorText(e)));
        }
        return false;
      },
    });
  }

  async function remove(r) {
    const users = usedBy(r);
    if (users.length) {
      infoDialog({ title: `Registry ${r.name} is in use`, body: h('p', {}, `It cannot be removed while ${users.join(', ')} use it. Change or remove those first.`) });
      return;
    }
    await confirmThen({ title: `Remove registry ${r.name}?`, message: `Its stored credentials are destroyed for good.`, action: `Remove ${r.name}` }, status, async () => {
      await gql('mutation($n: String!) { deleteRegistry(name: $n) }', { n: r.name });
      notify(`Registry ${r.name} removed.`);
      await reload();
    });
  }
}
