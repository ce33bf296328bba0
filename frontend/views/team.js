// One team: its members (added and removed by admins) and its access to projects and
// environments (FULL changes them, READ_ONLY only sees); rename, delete.

import { gql } from '../lib/api.js';
import { h, clear, badge, pageHead, redraw, section, table, statusLine, showError, notify } from '../lib/dom.js';
import { formDialog, confirmThen } from '../lib/dialog.js';
import { field, formError, onSubmit, rules, submitButton, text } from '../lib/forms.js';
import { followCatalog, stopAll } from '../lib/follow.js';
import { describe } from '../lib/schema.js';

export async function show(root, ctx) {
  let name = ctx.params.name;
  const stops = [];
  const status = statusLine();
  const head = h('div');
  const membersSlot = h('div');
  const grantsSlot = h('div');
  const admin = ctx.isAdmin;

  // `live`: a change made elsewhere, so what is being typed into the forms is kept.
  const load = async (live = false) => {
    const data = await gql(`query($n: String!) { team(name: $n) { name members grants { targetKind target access } }
      ${admin ? 'users { username disabled } projects { name } environments { name }' : ''} }`, { n: name });
    const key = JSON.stringify(data);
    // The live echo of a change this page made: already drawn.
    if (live && key === shown) return;
    shown = key;
    redraw(root, live, () => draw(data));
  };
  let shown = null;

  const draw = (data) => {
    const t = data.team;
    ctx.title(`Team ${t.name}`);
    clear(head, pageHead(`Team ${t.name}`, { crumbs: [['#/teams', 'Teams & users']],
      actions: admin ? [h('button', { type: 'button', class: 'btn', onclick: () => rename(t) }, 'Rename'), h('button', { type: 'button', class: 'btn btn-danger', onclick: () => remove(t) }, 'Delete')] : [] }));

    const memberForm = admin ? h('form', { class: 'inline-form', id: 'member-form', 'aria-label': 'Add a member' },
      field({ label: 'User', name: 'username', required: true, options: [['', 'choose a user']].concat(data.users.filter((u) => !t.members.includes(u.username)).map((u) => [u.username, u.username + (u.disabled ? ' (disabled)' : '')])) }),
      submitButton('Add member'), formError()) : null;
    if (memberForm) onSubmit(memberForm, async (d) => {
      await gql('mutation($t: String!, $u: String!) { addTeamMember(team: $t, username: $u) { name } }', { t: t.name, u: d.get('username') });
      notify(`${d.get('username')} added to ${t.name}.`);
      await load();
    });
    clear(membersSlot, h('div', { class: 'table-scroll' }, table(['Member', ''], t.members.map((m) => [m,
      admin ? h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Remove ${m} from ${t.name}`, onclick: () => removeMember(t, m) }, 'Remove') : '']),
    { caption: 'Members', empty: 'No member yet.' })), memberForm);

    let grantForm = null;
    if (admin) {
      const kind = field({ label: 'On', name: 'kind', options: [['PROJECT', 'a project'], ['ENVIRONMENT', 'an environment']], value: 'PROJECT' });
      const targetSlot = h('div');
      const fillTargets = () => {
        const names = (kind.querySelector('select').value === 'PROJECT' ? data.projects : data.environments).map((x) => x.name);
        clear(targetSlot, field({ label: 'Which', name: 'target', required: true, options: [['', 'choose']].concat(names.map((n) => [n, n])), 'data-field': 'target' }));
      };
      kind.addEventListener('change', fillTargets);
      fillTargets();
      grantForm = h('form', { class: 'inline-form', id: 'grant-form', 'aria-label': 'Give access' }, kind, targetSlot,
        field({ label: 'Access', name: 'access', options: [['READ_ONLY', 'READ_ONLY: sees'], ['FULL', 'FULL: deploys and changes']], value: 'FULL',
          title: describe('Access', 'FULL') }),
        submitButton('Give access'), formError());
      onSubmit(grantForm, async (d) => {
        await gql('mutation($t: String!, $k: AccessTargetKind!, $n: String!, $a: Access!) { grantAccess(team: $t, target: {kind: $k, name: $n}, access: $a) { name } }',
          { t: t.name, k: d.get('kind'), n: d.get('target'), a: d.get('access') });
        notify(`${t.name} now has ${d.get('access')} access to ${d.get('target')}.`);
        await load();
      });
    }
    clear(grantsSlot, h('p', { class: 'intro' }, 'Access to a project covers its deployments everywhere; access to an environment covers every deployment in it. The higher of the two counts.'),
      h('div', { class: 'table-scroll' }, table(['On', 'Access', ''], t.grants.map((g) => [
        [g.targetKind.toLowerCase(), ' ', h('a', { href: `#/${g.targetKind === 'PROJECT' ? 'projects' : 'environments'}/${encodeURIComponent(g.target)}` }, g.target)],
        badge(g.access, describe('Access', g.access)),
        admin ? h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Revoke ${t.name}'s access to ${g.target}`, onclick: () => revoke(t, g) }, 'Revoke') : '',
      ]), { caption: 'Access', empty: 'No access yet: the members see nothing through this team.' })), grantForm);
  };

  const removeMember = async (t, m) => {
    await confirmThen({ title: `Remove ${m} from ${t.name}?`, message: `${m} loses what ${t.name} gives access to, at once (pages they have open stop updating).`, action: `Remove ${m}` }, status, async () => {
      await gql('mutation($t: String!, $u: String!) { removeTeamMember(team: $t, username: $u) { name } }', { t: t.name, u: m });
      await load();
    });
  };

  const revoke = async (t, g) => {
    await confirmThen({ title: `Revoke ${t.name}'s access to ${g.target}?`, message: `Its members lose ${g.access} access to ${g.targetKind.toLowerCase()} ${g.target} at once, unless another team gives it.`, action: `Revoke access to ${g.target}` }, status, async () => {
      await gql('mutation($t: String!, $k: AccessTargetKind!, $n: String!) { revokeAccess(team: $t, target: {kind: $k, name: $n}) { name } }', { t: t.name, k: g.targetKind, n: g.target });
      await load();
    });
  };

  const rename = (t) => formDialog({
    title: `Rename team ${t.name}`, submit: 'Rename',
    fields: [field({ label: 'New name', name: 'newName', required: true, value: t.name, check: rules.dnsLabel })],
    run: async (d) => {
      const { renameTeam } = await gql('mutation($n: String!, $m: String!) { renameTeam(name: $n, newName: $m) { name } }', { n: t.name, m: text(d, 'newName') });
      name = renameTeam.name;
      notify(`Team renamed ${renameTeam.name}.`);
      ctx.navigate(`teams/${encodeURIComponent(renameTeam.name)}`);
    },
  });

  const remove = async (t) => {
    await confirmThen({ title: `Delete team ${t.name}?`, message: `Its ${t.members.length} member(s) lose the access it gives (${t.grants.length} grant(s)). The users themselves stay.`, action: `Delete ${t.name}` }, status, async () => {
      await gql('mutation($n: String!) { deleteTeam(name: $n) }', { n: t.name });
      notify(`Team ${t.name} deleted.`);
      ctx.navigate('teams');
    });
  };

  await load();
  clear(root, head, status, h('div', { class: 'grid-2' }, section('Members', [], membersSlot), section('Access', [], grantsSlot)));
  ctx.ready();
  stops.push(followCatalog(['TEAM', 'USER', 'PROJECT', 'ENVIRONMENT'], () => load(true).catch((e) => showError(status, e))));
  return stopAll(stops);
}
