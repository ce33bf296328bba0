// Teams and users. Admins create teams (then give them members and access on their page) and
// users (disable, enable, reset a password); others see the teams they belong to.

import { gql } from '../lib/api.js';
import { h, clear, badge, pageHead, section, table, statusLine, showError, notify } from '../lib/dom.js';
import { shortTime } from '../lib/format.js';
import { confirmAction, formDialog } from '../lib/dialog.js';
import { field, rules, text } from '../lib/forms.js';
import { followCatalog, stopAll } from '../lib/follow.js';

export function grantWords(g) {
  return [badge(g.access), ` on ${g.targetKind.toLowerCase()} `, h('a', { href: `#/${g.targetKind === 'PROJECT' ? 'projects' : 'environments'}/${encodeURIComponent(g.target)}` }, g.target)];
}

export async function show(root, ctx) {
  const stops = [];
  const status = statusLine();
  const teamsSlot = h('div', { class: 'table-scroll' });
  const usersSlot = h('div', { class: 'table-scroll' });
  const admin = ctx.isAdmin;
  ctx.title('Teams & users');

  const load = async () => {
    const data = await gql(`{ teams { name members grants { targetKind target access } createdAt } ${admin ? 'users { username role disabled createdAt }' : ''} }`);
    clear(teamsSlot, table(['Team', 'Members', 'Access', 'Created'], data.teams.map((t) => [
      h('a', { href: `#/teams/${encodeURIComponent(t.name)}` }, t.name),
      t.members.join(', ') || h('span', { class: 'muted' }, 'nobody yet'),
      t.grants.length ? t.grants.map((g) => h('div', {}, grantWords(g))) : h('span', { class: 'muted' }, 'none yet'),
      shortTime(t.createdAt),
    ]), { caption: 'Teams', empty: admin ? 'No team yet: create one, add members, then give it access to projects or environments.' : 'You belong to no team yet: ask an admin.' }));
    if (admin) {
      clear(usersSlot, table(['User', 'Role', 'Status', 'Created', ''], data.users.map((u) => [
        h('strong', {}, u.username), badge(u.role === 'ADMIN' ? 'ADMIN' : 'USER'), u.disabled ? badge('DISABLED') : badge('ACTIVE'), shortTime(u.createdAt),
        u.username === ctx.me.username ? h('span', { class: 'muted' }, 'you') : h('div', { class: 'row-actions' },
          u.disabled
            ? h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Enable user ${u.username}`, onclick: () => setEnabled(u, true) }, 'Enable')
            : h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Disable user ${u.username}`, onclick: () => setEnabled(u, false) }, 'Disable'),
          h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Reset the password of ${u.username}`, onclick: () => resetPassword(u) }, 'Reset password')),
      ]), { caption: 'Users' }));
    }
    clear(status);
  };

  const newTeam = () => formDialog({
    title: 'New team', submit: 'Create team', fields: [field({ label: 'Name', name: 'name', required: true, check: rules.dnsLabel, hint: 'A DNS label, such as qa.' })],
    run: async (d) => {
      const { createTeam } = await gql('mutation($n: String!) { createTeam(name: $n) { name } }', { n: text(d, 'name') });
      notify(`Team ${createTeam.name} created: add members and access.`);
      ctx.navigate(`teams/${encodeURIComponent(createTeam.name)}`);
    },
  });

  const newUser = () => formDialog({
    title: 'New user', submit: 'Create user',
    intro: 'Give them the password by a safe way; they can change it under their account.',
    fields: [
      field({ label: 'Username', name: 'username', required: true, check: rules.username, autocomplete: 'off' }),
      field({ label: 'Initial password', name: 'password', type: 'password', required: true, check: rules.password, autocomplete: 'new-password' }),
      field({ label: 'Role', name: 'role', options: [['USER', 'User: sees and deploys what their teams may'], ['ADMIN', 'Admin: sets everything up']], value: 'USER' }),
    ],
    run: async (d) => {
      await gql('mutation($u: String!, $p: String!, $r: Role) { createUser(username: $u, password: $p, role: $r) { username } }', { u: text(d, 'username'), p: d.get('password'), r: d.get('role') });
      notify(`User ${text(d, 'username')} created.`);
      await load();
    },
  });

  const setEnabled = async (u, enable) => {
    if (!enable && !(await confirmAction({ title: `Disable user ${u.username}?`, message: 'Their sessions and API tokens stop working at once, and they cannot sign in until enabled again.', action: `Disable ${u.username}` }))) return;
    try {
      await gql(`mutation($u: String!) { ${enable ? 'enableUser' : 'disableUser'}(username: $u) { username } }`, { u: u.username });
      notify(`User ${u.username} ${enable ? 'enabled' : 'disabled'}.`);
      await load();
    } catch (e) { showError(status, e); }
  };

  const resetPassword = (u) => formDialog({
    title: `Reset the password of ${u.username}`, submit: 'Set password',
    fields: [field({ label: 'New password', name: 'newPassword', type: 'password', required: true, check: rules.password, autocomplete: 'new-password' })],
    run: async (d) => {
      await gql('mutation($u: String!, $p: String!) { resetPassword(username: $u, newPassword: $p) { username } }', { u: u.username, p: d.get('newPassword') });
      notify(`Password of ${u.username} reset.`);
    },
  });

  clear(root, pageHead('Teams & users', { subtitle: admin ? 'Teams hold FULL or READ_ONLY access to projects and environments; users see what their teams may.' : 'The teams you belong to and what they may do.' }),
    status,
    section('Teams', admin ? [h('button', { type: 'button', class: 'btn btn-primary', onclick: newTeam }, 'New team')] : [], teamsSlot),
    admin ? section('Users', [h('button', { type: 'button', class: 'btn btn-primary', onclick: newUser }, 'New user')], usersSlot) : null);
  stops.push(followCatalog(['TEAM', 'USER'], () => load().catch((e) => showError(status, e))));
  await load();
  ctx.ready();
  return stopAll(stops);
}
