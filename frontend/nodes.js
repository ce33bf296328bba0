// The nodes view (admins): each Docker node's status, trust and usage, refreshed live as node
// events arrive; adding a node shows its token and the agent's run command once.
import { gql } from './graphql-client.js';

const $ = (id) => document.getElementById(id);
const el = (tag, text) => { const e = document.createElement(tag); e.textContent = text ?? ''; return e; };
const gib = (bytes) => (bytes / 2 ** 30).toFixed(1);

const FIELDS = 'id environment host port status statusDetail thumbprint pendingThumbprint agentVersion '
  + 'usage { cpuCores cpuUsedMillicores memoryTotalBytes memoryUsedBytes } allocated { cpuMillicores memoryMib deployments }';

function button(label, run) {
  const b = el('button', label);
  b.onclick = async () => {
    try { await run(); } catch (e) { $('node-error').textContent = e.message; }
    loadNodes();
  };
  return b;
}

function showCredentials(heading, creds) {
  const box = $('node-credentials');
  box.replaceChildren(el('strong', heading), el('br'), el('span', 'Token (shown once): '), el('code', creds.token),
    el('br'), el('span', 'Start the agent on the node: '), el('code', creds.runCommand));
  box.hidden = false;
}

export async function loadNodes() {
  const { nodes } = await gql(`{ nodes { ${FIELDS} } }`);
  $('node-list').replaceChildren(...nodes.map((n) => {
    const tr = el('tr');
    tr.dataset.node = n.id;
    const status = el('td', n.status);
    status.className = `status status-${n.status.toLowerCase()}`;
    status.title = n.statusDetail;
    const usage = n.usage
      ? `${(n.usage.cpuUsedMillicores / 1000).toFixed(2)}/${n.usage.cpuCores} CPU, ${gib(n.usage.memoryUsedBytes)}/${gib(n.usage.memoryTotalBytes)} GiB`
      : '—';
    const reserved = `reserved ${(n.allocated.cpuMillicores / 1000).toFixed(2)} CPU, ${(n.allocated.memoryMib / 1024).toFixed(1)} GiB`
      + ` for ${n.allocated.deployments} deployment${n.allocated.deployments === 1 ? '' : 's'}`;
    const trust = el('td', n.pendingThumbprint ? `presents ${n.pendingThumbprint.slice(0, 16)}…` : (n.thumbprint ? `${n.thumbprint.slice(0, 16)}…` : '—'));
    trust.title = n.pendingThumbprint ?? n.thumbprint ?? '';
    const capacity = el('td', `used ${usage}`);
    capacity.append(el('br'), el('small', reserved));
    tr.append(el('td', n.environment), el('td', `${n.host}:${n.port}`), status, el('td', n.statusDetail), trust, capacity);
    const actions = el('td');
    const id = { id: n.id };
    if (n.pendingThumbprint) {
      actions.append(button('Approve certificate', () => gql('mutation($id: ID!, $t: String!) { approveNodeThumbprint(id: $id, thumbprint: $t) { id } }',
        { ...id, t: n.pendingThumbprint })));
    }
    actions.append(button('Rotate token', async () => {
      const { rotateNodeToken } = await gql('mutation($id: ID!) { rotateNodeToken(id: $id) { token runCommand } }', id);
      showCredentials(`New token for ${n.host}:${n.port}; restart its agent with it.`, rotateNodeToken);
    }));
    if (n.status !== 'REVOKED') actions.append(button('Revoke', () => gql('mutation($id: ID!) { revokeNodeToken(id: $id) { id } }', id)));
    actions.append(n.status === 'DISABLED'
      ? button('Enable', () => gql('mutation($id: ID!) { enableNode(id: $id) { id } }', id))
      : button('Disable', () => gql('mutation($id: ID!) { disableNode(id: $id) { id } }', id)));
    actions.append(button('Remove', () => gql('mutation($id: ID!) { removeNode(id: $id) }', id)));
    tr.append(actions);
    return tr;
  }));
}

$('node-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  $('node-error').textContent = '';
  try {
    const { addNode } = await gql('mutation($e: String!, $h: String!, $p: Int!) { addNode(environment: $e, host: $h, port: $p) { token runCommand } }',
      { e: f.get('environment'), h: f.get('host'), p: Number(f.get('port')) });
    showCredentials(`Node ${f.get('host')} added.`, addNode);
    ev.target.reset();
    loadNodes();
  } catch (e) { $('node-error').textContent = e.message; }
});
