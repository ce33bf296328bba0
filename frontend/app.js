import { gql, subscribe } from './graphql-client.js';
import { loadProjects, loadServices, loadTeams } from './catalog.js';
import { loadNodes } from './nodes.js';
import { loadDeployments, prepareCreateForm } from './deployments.js';

const $ = (id) => document.getElementById(id);
const el = (tag, text) => { const e = document.createElement(tag); e.textContent = text ?? ''; return e; };
const when = (iso) => new Date(iso).toLocaleString();

async function start() {
  try {
    const { me } = await gql('{ me { username role } }');
    showApp(me);
  } catch (e) {
    if (e.code !== 'UNAUTHENTICATED') console.error(e);
    $('login-view').hidden = false;
  }
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    const { login } = await gql('mutation($u: String!, $p: String!) { login(username: $u, password: $p) { user { username role } } }',
      { u: f.get('username'), p: f.get('password') });
    $('login-view').hidden = true;
    showApp(login.user);
  } catch (e) {
    $('login-error').textContent = e.message;
  }
});

$('logout').addEventListener('click', async () => {
  await gql('mutation { logout }').catch(() => {});
  location.reload();
});

let signedIn = null;

function showApp(me) {
  signedIn = me.username;
  $('whoami').textContent = `${me.username} (${me.role.toLowerCase()})`;
  $('logout').hidden = false;
  $('app-view').hidden = false;
  loadTokens();
  loadProjects().catch((e) => console.error(e));
  loadServices().catch((e) => console.error(e));
  loadDeployments().catch((e) => console.error(e));
  prepareCreateForm().catch((e) => console.error(e));
  // States arrive live in the open deployment; the list and countdowns refresh now and then.
  setInterval(() => loadDeployments().catch(() => {}), 5000);
  if (me.role === 'ADMIN') {
    $('admin').hidden = false;
    loadUsers();
    loadTeams();
    loadNodes().catch((e) => console.error(e));
    // Usage changes without events: refresh it now and then; status changes arrive as events.
    setInterval(() => loadNodes().catch(() => {}), 5000);
    loadAudit();
  }
}

async function loadTokens() {
  const { apiTokens } = await gql('{ apiTokens { id name createdAt revokedAt } }');
  const list = $('token-list');
  list.replaceChildren(...apiTokens.map((t) => {
    const li = el('li', `${t.name} — created ${when(t.createdAt)}${t.revokedAt ? ' — revoked' : ''}`);
    if (!t.revokedAt) {
      const b = el('button', 'Revoke');
      b.onclick = async () => { await gql('mutation($id: ID!) { revokeApiToken(id: $id) { id } }', { id: t.id }); loadTokens(); };
      li.append(' ', b);
    }
    return li;
  }));
}

$('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = new FormData(ev.target).get('name');
  const { createApiToken } = await gql('mutation($n: String!) { createApiToken(name: $n) { token } }', { n: name });
  const p = $('new-token');
  p.textContent = `Copy it now, it is shown only once: ${createApiToken.token}`;
  p.hidden = false;
  ev.target.reset();
  loadTokens();
});

async function loadUsers() {
  const { users } = await gql('{ users { username role disabled } }');
  $('user-list').replaceChildren(...users.map((u) => {
    const tr = el('tr');
    tr.append(el('td', u.username), el('td', u.role), el('td', u.disabled ? 'disabled' : 'active'));
    const td = el('td');
    if (u.username !== signedIn) {
      const b = el('button', u.disabled ? 'Enable' : 'Disable');
      b.onclick = async () => {
        const m = u.disabled ? 'enableUser' : 'disableUser';
        try { await gql(`mutation($u: String!) { ${m}(username: $u) { username } }`, { u: u.username }); }
        catch (e) { $('user-error').textContent = e.message; }
        loadUsers();
      };
      td.append(b);
    }
    tr.append(td);
    return tr;
  }));
}

$('user-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await gql('mutation($u: String!, $p: String!, $r: Role!) { createUser(username: $u, password: $p, role: $r) { username } }',
      { u: f.get('username'), p: f.get('password'), r: f.get('role') });
    $('user-error').textContent = '';
    ev.target.reset();
    loadUsers();
  } catch (e) {
    $('user-error').textContent = e.message;
  }
});

function auditRow(e) {
  const tr = el('tr');
  tr.append(el('td', when(e.occurredAt)), el('td', e.actor), el('td', e.eventType), el('td', e.stream));
  return tr;
}

async function loadAudit() {
  const fields = 'occurredAt actor eventType stream';
  const { auditLog } = await gql(`{ auditLog(page: { first: 50 }) { entries { ${fields} } } }`);
  const body = $('audit-list');
  body.replaceChildren(...auditLog.entries.map(auditRow));
  subscribe(`subscription { auditEvents { ${fields} } }`, {}, (d) => {
    body.prepend(auditRow(d.auditEvents));
    if (d.auditEvents.eventType.startsWith('node.')) loadNodes().catch(() => {});
    while (body.children.length > 200) body.lastChild.remove();
  }, (e) => console.warn('audit feed', e.message));
}

start();
