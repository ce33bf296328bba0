// One environment: its domain and the DNS record to create for it, its cleanup timer, and its
// Docker nodes, live: status, agent version, usage and what is reserved, as bars; add a node
// (its token and `docker run` line shown once), rotate or revoke its token, disable, enable,
// remove, and approve a new certificate with the old and new thumbprints side by side.

import { gql, live } from '../lib/api.js';
import { h, clear, badge, bar, copyButton, facts, keepFocus, notify, pageHead, section, table, statusLine, showError, errorText } from '../lib/dom.js';
import { bytes, cpu, lifetime, ago, mib } from '../lib/format.js';
import { describe } from '../lib/schema.js';
import { blockedDialog, confirmAction, formDialog, infoDialog, confirmThen } from '../lib/dialog.js';
import { field, int, rules, text } from '../lib/forms.js';
import { followCatalog, stopAll } from '../lib/follow.js';
import { environmentFields, environmentInput } from './environments.js';
import { nodeCharts } from './charts.js';

const NODE = `id environment host port status statusDetail enabled thumbprint pendingThumbprint agentVersion changedAt
  allocated { cpuMillicores memoryMib deployments } usage { cpuCores cpuUsedMillicores memoryTotalBytes memoryUsedBytes sampledAt }
  images { image digest present detail }`;

// The images a node holds ahead of deployments: how many of those asked, and each on demand.
function imagesCell(n) {
  if (!n.images?.length) return h('span', { class: 'muted' }, '—');
  const held = n.images.filter((i) => i.present).length;
  return h('details', { class: 'node-images', dataset: { node: `${n.host}:${n.port}` } },
    h('summary', {}, `${held} of ${n.images.length} held`),
    h('ul', {}, n.images.map((i) => h('li', { dataset: { present: String(i.present) } },
      h('code', {}, i.image), ' ', i.present ? h('span', { class: 'ok-line' }, 'held') : h('span', { class: 'muted' }, i.detail || 'not held')))));
}

// A command to copy, under its heading.
function copyable(heading, id, text, what) {
  return [h('h3', {}, heading), h('div', { class: 'copyable' }, h('pre', { class: 'secret-once', id }, text), copyButton(text, 'Copy', what))];
}

// Whether the control plane reaches the node's agent, in words, as the node is now.
function reached(n) {
  if (!n) return 'Waiting for the node…';
  if (n.status === 'ONLINE') return `Connected: the agent at ${n.host}:${n.port} answers (agent ${n.agentVersion ?? 'unknown'}).`;
  return `Not reached yet at ${n.host}:${n.port}${n.statusDetail ? `: ${n.statusDetail}` : ''}. It is tried again every few seconds.`;
}

// Shows a node's new token and the ways to start its agent (once, with copy buttons), and then
// whether the control plane reaches it, live.
function credentials(title, creds, note, environment) {
  const load = `curl -fsS ${window.location.origin}${creds.imagePath} | docker load`;
  const found = h('p', { class: 'reach', role: 'status', 'aria-live': 'polite', id: 'node-reach' }, reached(null));
  const dialog = infoDialog({
    title, wide: true,
    body: [
      h('p', { class: 'callout' }, 'Copy these now: the token is shown only this once (only its hash is kept).'),
      ...copyable('Token', 'node-token', creds.token, 'the token'),
      ...copyable('1. On the node: load the agent\'s image from this server', 'node-load', load, 'the image command'),
      ...copyable('2. Start the agent', 'node-command', creds.runCommand, 'the command'),
      h('details', {}, h('summary', {}, 'Or run it as a process, without Docker\'s image'),
        ...copyable('With the nullops binary on the node', 'node-agent-command', creds.agentCommand, 'the agent command')),
      h('p', { class: 'hint' }, note),
      h('h3', {}, 'What the control plane finds'), found,
    ],
    onClose: () => stop(),
  });
  // The dialog follows the node until it is closed.
  const id = creds.node.id;
  const show = (n) => { found.textContent = reached(n); found.dataset.status = n?.status ?? ''; };
  gql(`query($e: String!) { nodes(environment: $e) { ${NODE} } }`, { e: environment }).then(({ nodes }) => show(nodes.find((n) => n.id === id))).catch(() => {});
  const stop = live(`subscription($e: String) { nodesUpdated(environment: $e) { id node { ${NODE} } } }`, { e: environment }, {
    next: ({ nodesUpdated: u }) => { if (u.id === id) show(u.node); },
    resync: () => {},
    error: () => {},
  });
  return dialog;
}

export async function show(root, ctx) {
  const name = ctx.params.name;
  const stops = [];
  const status = statusLine();
  const head = h('div');
  const about = h('div');
  const dnsSlot = h('div');
  const nodesSlot = h('div', { class: 'table-scroll' });
  const chartsSlot = h('div');
  const charts = nodeCharts(chartsSlot, name);
  const nodes = new Map();
  let env = null;
  const admin = ctx.isAdmin;

  const nodeActions = (n) => {
    if (!admin) return '';
    const label = `${n.host}:${n.port}`;
    const b = (text, run, danger) => h('button', { type: 'button', class: `btn btn-small ${danger ? 'btn-danger' : ''}`, 'aria-label': `${text} node ${label}`, onclick: run }, text);
    return h('div', { class: 'row-actions' },
      n.pendingThumbprint ? b('Approve certificate', () => approve(n)) : null,
      b('Rotate token', () => rotate(n)),
      n.status !== 'REVOKED' ? b('Revoke', () => revoke(n), true) : null,
      n.enabled ? b('Disable', () => toggle(n, false)) : b('Enable', () => toggle(n, true)),
      b('Remove', () => removeNode(n), true));
  };

  const renderNodes = () => {
    const rows = [...nodes.values()].sort((a, b) => `${a.host}:${a.port}`.localeCompare(`${b.host}:${b.port}`)).map((n) => {
      const u = n.usage;
      const cores = u?.cpuCores ?? 0;
      return [
        [h('strong', {}, `${n.host}:${n.port}`), h('br'), h('small', { class: 'muted' }, n.agentVersion ? `agent ${n.agentVersion}` : 'agent not reached yet')],
        [badge(n.status, describe('NodeStatus', n.status)), n.statusDetail ? [h('br'), h('small', { class: 'wrap' }, n.statusDetail)] : null],
        u ? [bar(u.cpuUsedMillicores, cores * 1000, `${cpu(u.cpuUsedMillicores)} of ${cores} cores used`, `CPU used on ${n.host}`),
          bar(n.allocated.cpuMillicores, cores * 1000, `${cpu(n.allocated.cpuMillicores)} reserved`, `CPU reserved on ${n.host}`)] : h('span', { class: 'muted' }, 'no report yet'),
        u ? [bar(u.memoryUsedBytes, u.memoryTotalBytes, `${bytes(u.memoryUsedBytes)} of ${bytes(u.memoryTotalBytes)} used`, `Memory used on ${n.host}`),
          bar(n.allocated.memoryMib * 1048576, u.memoryTotalBytes, `${mib(n.allocated.memoryMib)} reserved`, `Memory reserved on ${n.host}`)] : '',
        [String(n.allocated.deployments), u ? h('small', { class: 'muted' }, h('br'), `measured ${ago(u.sampledAt)}`) : null],
        imagesCell(n),
        nodeActions(n),
      ];
    });
    clear(nodesSlot, table(['Node', 'Status', 'CPU', 'Memory', 'Deployments', 'Images ahead', ''], rows,
      { caption: 'Nodes', empty: admin ? 'No node yet: add one, then start its agent with the command shown.'
        : 'No node you may see: nodes are shown to admins and to teams granted this environment.' }));
  };

  const load = async () => {
    const data = await gql(`query($e: String!) { environments { name baseDomain cleanupAfterSeconds dnsRecord { name type value zoneLine } } nodes(environment: $e) { ${NODE} } }`, { e: name });
    env = data.environments.find((e) => e.name === name);
    if (!env) throw Object.assign(new Error(`There is no environment named ${name}, or it is not shared with your teams.`), { code: 'NOT_FOUND' });
    nodes.clear();
    data.nodes.forEach((n) => nodes.set(n.id, n));
    render();
  };

  const render = () => {
    ctx.title(`Environment ${env.name}`);
    clear(head, pageHead(`Environment ${env.name}`, { crumbs: [['#/environments', 'Environments']],
      actions: admin ? [h('button', { type: 'button', class: 'btn', onclick: edit }, 'Edit'), h('button', { type: 'button', class: 'btn btn-danger', onclick: remove }, 'Delete')] : [] }));
    clear(about, h('section', { class: 'panel', 'aria-label': 'About' }, facts([
      ['Service URLs', h('code', {}, `http://SERVICE.DEPLOYMENT.${env.name}.${env.baseDomain}`)],
      ['Cleanup', `${lifetime(env.cleanupAfterSeconds)} after creation or the last extension (a project may override it)`],
    ]), status));
    const r = env.dnsRecord;
    clear(dnsSlot, r ? [
      h('p', {}, 'Create this record in your DNS zone so that every deployment\'s URLs reach the ingress:'),
      h('div', { class: 'copyable' }, h('pre', { class: 'preview', id: 'dns-record' }, r.zoneLine), copyButton(r.zoneLine, 'Copy', 'the DNS record')),
      r.value ? null : h('p', { class: 'hint' }, 'INGRESS-ADDRESS stands for the address users reach the ingress at; start the server with --ingress-public-address to have it filled in.'),
    ] : h('p', {}, `No record is needed: names under ${env.baseDomain} resolve to this machine.`));
    renderNodes();
  };

  const addNode = () => formDialog({
    title: `Add a node to ${name}`, submit: 'Add node',
    intro: 'A node is a Docker host running the NullOps agent. The control plane dials the agent at this address.',
    fields: [
      field({ label: 'Host name or IP address', name: 'host', required: true, placeholder: 'node-1.internal', hint: 'Where the control plane reaches the agent.' }),
      field({ label: 'Agent port', name: 'port', type: 'number', min: 1, max: 65535, value: 5000, required: true, check: rules.port }),
    ],
    run: async (d) => {
      const { addNode: creds } = await gql('mutation($e: String!, $h: String!, $p: Int!) { addNode(environment: $e, host: $h, port: $p) { token runCommand agentCommand imagePath node { id } } }',
        { e: name, h: text(d, 'host'), p: int(d, 'port') });
      await load();
      credentials(`Node ${text(d, 'host')} added`, creds, 'Run the two commands on the node (or the process instead). Its agent listens only on the address given.', name);
    },
  });

  const rotate = async (n) => {
    await confirmThen({ title: `Rotate the token of ${n.host}:${n.port}?`, message: 'The current token stops working at once and the agent is disconnected until it is restarted with the new one.', action: `Rotate ${n.host}'s token`, danger: false }, status, async () => {
      const { rotateNodeToken } = await gql('mutation($id: ID!) { rotateNodeToken(id: $id) { token runCommand agentCommand imagePath node { id } } }', { id: n.id });
      credentials(`New token for ${n.host}:${n.port}`, rotateNodeToken, 'Restart the agent with this token: the old one no longer works.', name);
    });
  };

  const revoke = async (n) => {
    await confirmThen({ title: `Revoke the token of ${n.host}:${n.port}?`, message: 'The agent is disconnected at once and not dialled again until its token is rotated. Its deployments keep running but show OFFLINE.', action: `Revoke ${n.host}'s token` }, status, async () => {
      await gql('mutation($id: ID!) { revokeNodeToken(id: $id) { id } }', { id: n.id });
    });
  };

  const toggle = async (n, enable) => {
    if (!enable && !(await confirmAction({ title: `Disable ${n.host}:${n.port}?`, message: 'It takes no new deployments and is not dialled; what runs there keeps running. Enable it again after maintenance.', action: `Disable ${n.host}`, danger: false }))) return;
    try { await gql(`mutation($id: ID!) { ${enable ? 'enableNode' : 'disableNode'}(id: $id) { id } }`, { id: n.id }); } catch (e) { showError(status, e); }
  };

  const removeNode = async (n) => {
    // A node that holds deployments cannot be removed: say so, name them all, and offer no
    // button that must fail.
    const { deployments } = await gql('query($e: String!) { deployments(environment: $e) { id name project node { id } } }', { e: name });
    const holding = deployments.filter((d) => d.node?.id === n.id);
    if (holding.length) {
      blockedDialog({
        title: `Node ${n.host}:${n.port} cannot be removed yet`,
        intro: `It runs ${holding.length === 1 ? 'a deployment' : `${holding.length} deployments`}. Delete ${holding.length === 1 ? 'it' : 'them'} first (or let ${holding.length === 1 ? 'it' : 'them'} expire), then remove the node:`,
        items: holding.map((d) => [d.name, `#/deployments/${encodeURIComponent(d.id)}`, `(${d.project})`]),
      });
      return;
    }
    await confirmThen({ title: `Remove node ${n.host}:${n.port}?`, message: 'It is forgotten and its token destroyed; its agent is no longer dialled.', action: `Remove ${n.host}` }, status, async () => {
      await gql('mutation($id: ID!) { removeNode(id: $id) }', { id: n.id });
    });
  };

  const approve = (n) => {
    const result = h('div');
    formDialog({
      title: `Approve the new certificate of ${n.host}:${n.port}?`, submit: 'Approve the new certificate', wide: true,
      intro: 'The agent presents a certificate other than the one trusted. Approve it only if its agent was reinstalled or its data lost: compare the new thumbprint with the one in the agent\'s startup log on the node.',
      fields: [h('div', { class: 'side-by-side' },
        h('div', {}, h('h3', {}, 'Trusted until now'), h('code', { id: 'old-thumbprint' }, n.thumbprint ?? '(none)')),
        h('div', {}, h('h3', {}, 'Presented now'), h('code', { id: 'new-thumbprint' }, n.pendingThumbprint))), result],
      run: async () => {
        await gql('mutation($id: ID!, $t: String!) { approveNodeThumbprint(id: $id, thumbprint: $t) { id } }', { id: n.id, t: n.pendingThumbprint });
        notify(`The new certificate of ${n.host} is trusted.`);
      },
    });
  };

  const edit = () => formDialog({
    title: `Edit environment ${env.name}`, submit: 'Save', fields: environmentFields(env),
    run: async (d) => {
      await gql('mutation($i: EnvironmentInput!) { updateEnvironment(input: $i) { name } }', { i: environmentInput(d, env.name) });
      notify(`Environment ${env.name} saved.`);
      await load();
    },
  });

  const remove = async () => {
    await confirmThen({ title: `Delete environment ${env.name}?`, message: 'Only an environment no project deploys to and no node belongs to can be deleted. Grants on it are removed.', action: `Delete ${env.name}` }, status, async () => {
      await gql('mutation($n: String!) { deleteEnvironment(name: $n) }', { n: env.name });
      notify(`Environment ${env.name} deleted.`);
      ctx.navigate('environments');
    });
  };

  await load();
  await charts.now();
  clear(root, head, about, section('DNS', [], dnsSlot),
    section('Nodes', admin ? [h('button', { type: 'button', class: 'btn btn-primary', onclick: addNode }, 'Add node')] : [], nodesSlot),
    section('Usage over the last hour', [], chartsSlot));
  ctx.ready();
  stops.push(charts.stop);
  stops.push(followCatalog(['ENVIRONMENT'], () => load().catch((e) => showError(status, e))));
  stops.push(live(`subscription($e: String) { nodesUpdated(environment: $e) { id node { ${NODE} } } }`, { e: name }, {
    next: (d) => {
      const { id, node } = d.nodesUpdated;
      if (node) nodes.set(id, node); else nodes.delete(id);
      keepFocus(nodesSlot, renderNodes);
      charts.poke();
    },
    resync: () => load().catch((e) => showError(status, e)),
    error: (e) => { clear(status, 'Live updates stopped: ', errorText(e)); },
  }));
  return stopAll(stops);
}
