// The catalog views: projects (with their pipeline version and secret names), services (with
// their selectable versions, asked of the registry live) and, for admins, teams.
import { gql } from './graphql-client.js';

const $ = (id) => document.getElementById(id);
const el = (tag, text) => { const e = document.createElement(tag); e.textContent = text ?? ''; return e; };

export async function loadProjects() {
  const { projects } = await gql('{ projects { name environments myAccess pipeline { version } secrets { name } } }');
  $('project-list').replaceChildren(...projects.map((p) => {
    const tr = el('tr');
    tr.dataset.project = p.name;
    tr.append(el('td', p.name), el('td', p.environments.join(', ')), el('td', p.myAccess ?? 'via environment'),
      el('td', p.pipeline ? `v${p.pipeline.version}` : '—'));
    const secrets = el('td', p.secrets.map((s) => s.name).join(', ') || '—');
    secrets.className = 'secret-names';
    tr.append(secrets);
    const actions = el('td');
    if (p.myAccess === 'FULL') {
      // The value goes in and never comes back: only names are listed.
      const form = el('form');
      form.className = 'secret-form';
      form.innerHTML = '<input name="name" placeholder="NAME" required pattern="[A-Z_][A-Z0-9_]*"> '
        + '<input name="value" type="password" placeholder="value" required autocomplete="off"> <button>Set secret</button>';
      const error = el('p');
      error.className = 'error';
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const f = new FormData(form);
        try {
          await gql('mutation($p: String!, $n: String!, $v: String!) { setSecret(project: $p, name: $n, value: $v) { name } }',
            { p: p.name, n: f.get('name'), v: f.get('value') });
          loadProjects();
        } catch (e) { error.textContent = e.message; }
      });
      actions.append(form, error);
    }
    tr.append(actions);
    return tr;
  }));
}

export async function loadServices() {
  const { services } = await gql('{ services { name registry image tagMode tag tagPattern } }');
  $('service-list').replaceChildren(...services.map((s) => {
    const tr = el('tr');
    tr.dataset.service = s.name;
    const rule = s.tagMode === 'PINNED' ? `pinned ${s.tag}` : `selectable ${s.tagPattern ?? '(any tag)'}`;
    tr.append(el('td', s.name), el('td', `${s.registry}/${s.image}`), el('td', rule));
    const versions = el('td');
    versions.className = 'versions';
    const b = el('button', 'Versions');
    b.onclick = async () => {
      versions.textContent = 'asking the registry…';
      try {
        const { availableTags } = await gql('query($s: String!) { availableTags(service: $s) }', { s: s.name });
        versions.textContent = availableTags.join(', ') || 'no matching tags';
      } catch (e) {
        versions.textContent = '';
        versions.append(Object.assign(el('span', e.message), { className: 'error' }));
      }
    };
    const action = el('td');
    action.append(b);
    tr.append(versions, action);
    return tr;
  }));
}

export async function loadTeams() {
  const { teams } = await gql('{ teams { name members grants { targetKind target access } } }');
  $('team-list').replaceChildren(...teams.map((t) => {
    const tr = el('tr');
    tr.dataset.team = t.name;
    tr.append(el('td', t.name), el('td', t.members.join(', ') || '—'),
      el('td', t.grants.map((g) => `${g.access} on ${g.targetKind.toLowerCase()} ${g.target}`).join('; ') || '—'));
    return tr;
  }));
}

$('team-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await gql('mutation($n: String!) { createTeam(name: $n) { name } }', { n: f.get('name') });
    $('team-error').textContent = '';
    ev.target.reset();
    loadTeams();
  } catch (e) {
    $('team-error').textContent = e.message;
  }
});
