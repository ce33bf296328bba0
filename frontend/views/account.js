// The signed-in user's account: their password, and personal API tokens for scripts and CI
// (a new token is shown once; revoking one stops it at once).

import { gql } from '../lib/api.js';
import { h, clear, copyButton, pageHead, section, table, statusLine, notify } from '../lib/dom.js';
import { shortTime } from '../lib/format.js';
import { infoDialog, confirmThen } from '../lib/dialog.js';
import { field, formError, int, onSubmit, rules, submitButton, text } from '../lib/forms.js';

export async function show(root, ctx) {
  const status = statusLine();
  const tokensSlot = h('div', { class: 'table-scroll' });
  ctx.title('Your account');

  const load = async () => {
    const { apiTokens } = await gql('{ apiTokens { id name createdAt expiresAt revokedAt } }');
    clear(tokensSlot, table(['Token', 'Created', 'Expires', 'State', ''], apiTokens.map((t) => [
      h('strong', {}, t.name), shortTime(t.createdAt), t.expiresAt ? shortTime(t.expiresAt) : 'never', t.revokedAt ? `revoked ${shortTime(t.revokedAt)}` : 'works',
      t.revokedAt ? '' : h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Revoke token ${t.name}`, onclick: () => revoke(t) }, 'Revoke'),
    ]), { caption: 'API tokens', empty: 'No token yet.' }));
  };

  const revoke = async (t) => {
    await confirmThen({ title: `Revoke token ${t.name}?`, message: 'Scripts and CI jobs using it are refused from now on.', action: `Revoke ${t.name}` }, status, async () => {
      await gql('mutation($id: ID!) { revokeApiToken(id: $id) { id } }', { id: t.id });
      notify(`Token ${t.name} revoked.`);
      await load();
    });
  };

  const tokenForm = h('form', { class: 'inline-form', id: 'token-form', 'aria-label': 'Create an API token' },
    field({ label: 'Token name', name: 'name', required: true, placeholder: 'ci', hint: 'What uses it, such as ci.' }),
    field({ label: 'Expires after (days)', name: 'expiresInDays', type: 'number', min: 1, max: 3650, hint: 'Empty: never.' }),
    submitButton('Create token'), formError());
  onSubmit(tokenForm, async (d) => {
    const { createApiToken } = await gql('mutation($n: String!, $d: Int) { createApiToken(name: $n, expiresInDays: $d) { token } }', { n: text(d, 'name'), d: int(d, 'expiresInDays') });
    tokenForm.reset();
    await load();
    infoDialog({ title: `Token ${text(d, 'name')}`, body: [
      h('p', { class: 'callout' }, 'Copy it now: it is shown only this once.'),
      h('div', { class: 'copyable' }, h('pre', { class: 'secret-once', id: 'new-token' }, createApiToken.token), copyButton(createApiToken.token, 'Copy', 'the token')),
      h('p', { class: 'hint' }, 'Send it as Authorization: Bearer TOKEN to /graphql.'),
    ] });
  });

  const passwordForm = h('form', { id: 'password-form', 'aria-label': 'Change your password' },
    field({ label: 'Current password', name: 'currentPassword', type: 'password', required: true, autocomplete: 'current-password' }),
    field({ label: 'New password', name: 'newPassword', type: 'password', required: true, check: rules.password, autocomplete: 'new-password' }),
    formError(), submitButton('Change password'));
  onSubmit(passwordForm, async (d) => {
    await gql('mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }', { c: d.get('currentPassword'), n: d.get('newPassword') });
    passwordForm.reset();
    notify('Password changed.');
  });

  clear(root, pageHead('Your account', { subtitle: `Signed in as ${ctx.me.username} (${ctx.me.role === 'ADMIN' ? 'admin' : 'user'}).` }), status,
    section('API tokens', [], h('p', { class: 'intro' }, 'For scripts and CI: a token acts as you, with your access.'), tokensSlot, tokenForm),
    section('Password', [], passwordForm));
  await load();
  ctx.ready();
}
