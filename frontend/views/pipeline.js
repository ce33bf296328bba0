// A project's pipeline: every saved version (who saved it, when), the chosen one drawn as stages
// (a node runs after the nodes it follows), what changed from the version before, and, for
// FULL access, a new version saved as JSON (the visual editor is to come).

import { gql, live } from '../lib/api.js';
import { h, clear, pageHead, section, table, statusLine, showError, notify } from '../lib/dom.js';
import { shortTime, who } from '../lib/format.js';
import { field, formError, onSubmit, rules, submitButton } from '../lib/forms.js';
import { followCatalog, stopAll } from '../lib/follow.js';

const NODE = 'id kind service plugin parameters image { registry repository tag digest }';

// Nodes by stage: a node's stage is one more than the latest of those it follows.
export function stages(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < nodes.length; round += 1) {
    let moved = false;
    for (const e of edges) {
      const want = (depth.get(e.from) ?? 0) + 1;
      if ((depth.get(e.to) ?? 0) < want) { depth.set(e.to, want); moved = true; }
    }
    if (!moved) break;
  }
  const out = [];
  for (const n of nodes) (out[depth.get(n.id)] ??= []).push(n);
  return out.filter(Boolean);
}

function graph(version) {
  const after = (id) => version.edges.filter((e) => e.to === id).map((e) => e.from);
  return h('div', { class: 'graph', role: 'list', 'aria-label': `Pipeline version ${version.version}` },
    stages(version.nodes, version.edges).map((stage, i) => h('div', { class: 'stage', role: 'listitem' },
      h('h3', {}, `Stage ${i + 1}`),
      stage.map((n) => h('div', { class: `node node-${n.kind.toLowerCase()}`, dataset: { node: n.id } },
        h('strong', {}, n.id),
        h('small', {}, n.kind === 'SERVICE' ? `service ${n.service}` : `plugin ${n.plugin}${n.image ? ` (${n.image.repository}:${n.image.tag})` : ''}`),
        after(n.id).length ? h('small', {}, `after ${after(n.id).join(', ')}`) : null)))));
}

// The JSON a save takes, from a saved version.
function asInput(version) {
  if (!version) return { nodes: [], edges: [] };
  return {
    nodes: version.nodes.map((n) => (n.kind === 'SERVICE' ? { id: n.id, service: n.service } : { id: n.id, plugin: n.plugin, parameters: n.parameters ?? {} })),
    edges: version.edges.map((e) => ({ from: e.from, to: e.to })),
  };
}

export async function show(root, ctx) {
  const name = ctx.params.name;
  const stops = [];
  const status = statusLine();
  const versionsSlot = h('div', { class: 'table-scroll' });
  const graphSlot = h('div');
  const diffSlot = h('div');
  const editSlot = h('div');
  let chosen = Number(ctx.query.get('version')) || null;
  let project = null;

  const showVersion = async () => {
    const versions = project.pipelineVersions;
    const v = versions.find((x) => x.version === chosen) ?? versions[0];
    if (!v) {
      clear(graphSlot, h('p', { class: 'muted' }, 'No version saved yet.'));
      clear(diffSlot);
      return;
    }
    clear(graphSlot, h('p', {}, `Version ${v.version}, saved by ${who(v.savedBy)} ${shortTime(v.savedAt)}.`), graph(v));
    if (v.version > 1) {
      const { project: p } = await gql('query($n: String!, $f: Int!, $t: Int!) { project(name: $n) { pipelineDiff(from: $f, to: $t) { kind subject detail } } }',
        { n: name, f: v.version - 1, t: v.version });
      clear(diffSlot, table(['Change', 'What', 'Detail'], p.pipelineDiff.map((c) => [c.kind.toLowerCase(), c.subject, c.detail]),
        { caption: `Changes from version ${v.version - 1}`, empty: 'Nothing changed.' }));
    } else {
      clear(diffSlot, h('p', { class: 'muted' }, 'The first version.'));
    }
  };

  // Deployments keep the version they were made from: how many of those alive now run each.
  let counted = null;
  const countDeployments = async (force = false) => {
    const { deployments } = await gql('query($n: String!) { deployments(project: $n) { pipelineVersion } }', { n: name });
    const running = (v) => deployments.filter((d) => d.pipelineVersion === v.version).length;
    const key = JSON.stringify(project.pipelineVersions.map(running));
    if (!force && key === counted) return;
    counted = key;
    clear(versionsSlot, table(['Version', 'Saved', 'By', 'Deployments now', ''], project.pipelineVersions.map((v) => [
      `version ${v.version}`, shortTime(v.savedAt), who(v.savedBy), String(running(v)),
      h('a', { href: `#/projects/${encodeURIComponent(name)}/pipeline?version=${v.version}`, 'aria-label': `Show version ${v.version}`,
        'aria-current': (chosen ?? project.pipelineVersions[0]?.version) === v.version ? 'true' : null }, 'Show'),
    ]), { caption: 'Versions', empty: 'No version yet.' }));
  };

  const load = async () => {
    ({ project } = await gql(`query($n: String!) { project(name: $n) { name myAccess pipelineVersions { version savedAt savedBy nodes { ${NODE} } edges { from to } } } }`, { n: name }));
    ctx.title(`Pipeline of ${name}`);
    await countDeployments(true);
    await showVersion();
    if (project.myAccess === 'FULL' && !editSlot.firstChild) {
      const latest = project.pipelineVersions[0];
      const form = h('form', { id: 'pipeline-form' },
        h('p', { class: 'intro' }, 'Nodes run a service or a plugin (with parameters its schema accepts); an edge makes “to” start after “from” has finished. Saving a changed graph makes a new version; deployments made from then on use it.'),
        field({ label: 'Pipeline (JSON)', name: 'pipeline', multiline: 14, check: rules.json, value: JSON.stringify(asInput(latest), null, 2), spellcheck: false }),
        formError(), submitButton('Save as a new version'));
      onSubmit(form, async (data) => {
        const { savePipeline } = await gql('mutation($p: String!, $i: PipelineInput!) { savePipeline(project: $p, pipeline: $i) { version } }',
          { p: name, i: JSON.parse(data.get('pipeline')) });
        notify(`Pipeline version ${savePipeline.version} saved.`);
        chosen = savePipeline.version;
        await load();
      });
      clear(editSlot, section('Save a new version', [], form));
    }
  };

  clear(root, pageHead(`Pipeline of ${name}`, { crumbs: [['#/projects', 'Projects'], [`#/projects/${encodeURIComponent(name)}`, name]],
    subtitle: 'The graph a deployment runs: services and plugin steps, each after those it follows.' }), status,
  h('div', { class: 'grid-2' }, section('Graph', [], graphSlot), section('Versions', [], versionsSlot)),
  section('What changed', [], diffSlot), editSlot);
  await load();
  ctx.ready();
  stops.push(followCatalog(['PIPELINE', 'PROJECT'], () => load().catch((e) => showError(status, e))));
  stops.push(live('subscription($p: String) { deploymentsUpdated(project: $p) { id } }', { p: name }, {
    next: () => countDeployments().catch((e) => showError(status, e)),
    resync: () => countDeployments().catch((e) => showError(status, e)),
    error: (e) => showError(status, e),
  }));
  return stopAll(stops);
}
