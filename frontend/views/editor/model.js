// The pipeline editor's model: the graph being edited and everything decided about it, with no
// DOM of its own and no clock (the time an edit happened is passed in). The canvas draws it, the
// interaction and the inspector change it through the editor's `commit`; this module's unit
// tests run in the browser suite (tests/python/test_editor_model.py).
//
// A model is `{ nodes: [{ id, kind: 'SERVICE'|'PLUGIN', service?, plugin?, parameters?, x, y }],
// edges: [{ from, to }] }`, positions in canvas units.

import { edgeRefusal, freeId, GRID, NODE_ID, tidy, upstream } from '../../lib/graph.js';
import { problemsOf } from '../../lib/schema-form.js';

export const NODE_W = 184;
export const NODE_H = 66;
export const SNAP = 8;
export const ZOOMS = { min: 0.3, max: 2 };
export const HISTORY_LIMIT = 200;
// Edits with the same key this close together are one step to undo (a typing run, a nudge).
export const COALESCE_MS = 1000;
const EXPRESSION = /\$\{\{(.*?)\}\}/g;
const ID_RULE = 'Use 1 to 63 lower-case letters, digits, “_” or “-”, starting with a letter or digit.';

export const snap = (v) => Math.round(v / SNAP) * SNAP;
export const edgeKey = (e) => `${e.from}>${e.to}`;
export const emptyModel = () => ({ nodes: [], edges: [] });

// What a node runs, in words.
export function whatItRuns(n) {
  return n.kind === 'SERVICE' ? `service ${n.service}` : `plugin ${n.plugin}`;
}

// The problems the browser can see itself: ids, parameters against their schema (the schema
// form's check), and the expressions in them (an upstream node's outputs, a secret the project
// has).
export function localProblems(model, { plugins, services, secrets }) {
  const out = [];
  const seen = new Set();
  for (const n of model.nodes) {
    if (!NODE_ID.test(n.id)) out.push({ node: n.id, field: 'id', code: 'BAD_NODE_ID', message: ID_RULE });
    if (seen.has(n.id)) out.push({ node: n.id, field: 'id', code: 'DUPLICATE_NODE', message: 'Two nodes have this id.' });
    seen.add(n.id);
    if (n.kind === 'SERVICE' && !services.has(n.service)) out.push({ node: n.id, field: 'service', code: 'UNKNOWN_SERVICE', message: `There is no service named ${n.service}.` });
    if (n.kind !== 'PLUGIN') continue;
    const plugin = plugins.get(n.plugin);
    if (!plugin) {
      out.push({ node: n.id, field: 'plugin', code: 'UNKNOWN_PLUGIN', message: `There is no plugin named ${n.plugin}.` });
      continue;
    }
    for (const p of problemsOf(plugin.parametersSchema, n.parameters)) out.push({ node: n.id, ...p });
    const before = upstream(model.edges, n.id);
    for (const [name, v] of Object.entries(n.parameters ?? {})) {
      if (typeof v !== 'string') continue;
      for (const m of v.matchAll(EXPRESSION)) {
        const parts = m[1].trim().split('.');
        const field = `parameters.${name}`;
        if (parts[0] === 'secrets' && parts.length === 2) {
          if (!secrets.includes(parts[1])) out.push({ node: n.id, field, code: 'UNKNOWN_SECRET', message: `There is no secret named ${parts[1]} in this project: set it on the project's page.` });
        } else if (parts[0] === 'nodes' && parts.length === 4 && parts[2] === 'outputs') {
          if (!before.has(parts[1])) {
            const why = model.nodes.some((x) => x.id === parts[1]) ? 'which does not run before it: join it with an edge first' : 'which is not in the pipeline';
            out.push({ node: n.id, field, code: 'NOT_UPSTREAM', message: `It uses outputs of node ${parts[1]}, ${why}.` });
          }
        } else {
          out.push({ node: n.id, field, code: 'BAD_EXPRESSION', message: `Unknown expression \${{${m[1]}}}: use \${{ secrets.NAME }} or \${{ nodes.ID.outputs.KEY }}.` });
        }
      }
    }
  }
  return out;
}

// Why `next` cannot be node `current`'s new id, or null.
export function idRefusal(model, current, next) {
  if (next === current) return null;
  if (!NODE_ID.test(next)) return ID_RULE;
  if (model.nodes.some((n) => n.id === next)) return `Node ${next} already exists.`;
  return null;
}

// ---------------------------------------------------------------------------- edits
// Each edit changes `model` in place (the editor snapshots it first, for undo) and says what
// it did.

// A free place for a new node: right of everything, at the top.
export function freeSpot(model) {
  if (!model.nodes.length) return { x: GRID.left, y: GRID.top };
  const right = Math.max(...model.nodes.map((n) => n.x));
  return { x: snap(right + GRID.x), y: GRID.top };
}

// Adds a node running service or plugin `name`, under a free id made from the name.
export function addNode(model, kind, name, at = freeSpot(model)) {
  const id = freeId(name, new Set(model.nodes.map((n) => n.id)));
  const node = kind === 'SERVICE'
    ? { id, kind, service: name, x: snap(at.x), y: snap(at.y) }
    : { id, kind, plugin: name, parameters: {}, x: snap(at.x), y: snap(at.y) };
  model.nodes.push(node);
  return node;
}

// Makes `to` run after `from`, unless the graph's rules refuse it: the refusal, or null.
export function addEdge(model, from, to) {
  const refusal = edgeRefusal(model.nodes, model.edges, from, to);
  if (!refusal) model.edges.push({ from, to });
  return refusal;
}

export function removeEdge(model, from, to) {
  model.edges = model.edges.filter((e) => !(e.from === from && e.to === to));
}

// Removes a node and every edge at it.
export function removeNode(model, id) {
  model.nodes = model.nodes.filter((n) => n.id !== id);
  model.edges = model.edges.filter((e) => e.from !== id && e.to !== id);
}

// Renames a node, and every edge and expression that names it.
export function rename(model, oldId, newId) {
  const pattern = new RegExp(`(\\$\\{\\{\\s*nodes\\.)${oldId.replace(/[-]/g, '\\-')}(\\.outputs\\.)`, 'g');
  for (const n of model.nodes) {
    if (n.id === oldId) n.id = newId;
    for (const [k, v] of Object.entries(n.parameters ?? {})) if (typeof v === 'string') n.parameters[k] = v.replace(pattern, `$1${newId}$2`);
  }
  for (const e of model.edges) {
    if (e.from === oldId) e.from = newId;
    if (e.to === oldId) e.to = newId;
  }
}

// Lays every node out in stages.
export function tidyUp(model) {
  const placed = tidy(model.nodes, model.edges);
  model.nodes.forEach((n) => Object.assign(n, placed.get(n.id)));
}

// ---------------------------------------------------------------------------- undo

// Snapshots to go back and forth through, at most `limit` back. `record` is called before an
// edit; edits with the same `key` within COALESCE_MS of each other are one step.
export class History {
  constructor(limit = HISTORY_LIMIT) {
    this.limit = limit;
    this.past = [];
    this.future = [];
    this.coalesce = null;
  }

  record(snapshot, key = null, now = 0) {
    if (!(key && this.coalesce?.key === key && now - this.coalesce.at < COALESCE_MS)) {
      this.past.push(snapshot);
      if (this.past.length > this.limit) this.past.shift();
    }
    this.coalesce = key ? { key, at: now } : null;
    this.future.length = 0;
  }

  // The snapshot to go back to, given the one now; null when there is none.
  undo(current) {
    if (!this.past.length) return null;
    this.future.push(current);
    this.coalesce = null;
    return this.past.pop();
  }

  redo(current) {
    if (!this.future.length) return null;
    this.past.push(current);
    this.coalesce = null;
    return this.future.pop();
  }

  clear() {
    this.past.length = 0;
    this.future.length = 0;
    this.coalesce = null;
  }

  get canUndo() { return this.past.length > 0; }

  get canRedo() { return this.future.length > 0; }
}

// ---------------------------------------------------------------------------- versions

// The model of a saved version (or a draft): its nodes where it drew them, the rest laid out.
export function fromVersion(version) {
  const placed = new Map((version?.layout ?? []).map((p) => [p.node, p]));
  const nodes = (version?.nodes ?? []).map((n) => ({ id: n.id, kind: n.kind, service: n.service ?? undefined, plugin: n.plugin ?? undefined,
    parameters: n.kind === 'PLUGIN' ? structuredClone(n.parameters ?? {}) : undefined, x: 0, y: 0 }));
  const edges = (version?.edges ?? []).map((e) => ({ from: e.from, to: e.to }));
  const auto = tidy(nodes, edges);
  for (const n of nodes) Object.assign(n, placed.has(n.id) ? { x: placed.get(n.id).x, y: placed.get(n.id).y } : auto.get(n.id));
  return { nodes, edges };
}

// The graph as savePipeline and dryRunPipeline take it.
export function toDraft(model) {
  return {
    nodes: model.nodes.map((n) => (n.kind === 'SERVICE' ? { id: n.id, service: n.service } : { id: n.id, plugin: n.plugin, parameters: n.parameters ?? {} })),
    edges: model.edges.map((e) => ({ from: e.from, to: e.to })),
    layout: model.nodes.map((n) => ({ node: n.id, x: Math.round(n.x), y: Math.round(n.y) })),
  };
}

// ---------------------------------------------------------------------------- geometry

// The path of an edge from the right of node `a` to the left of node `b`.
export function edgePath(a, b) {
  const x1 = a.x + NODE_W;
  const y1 = a.y + NODE_H / 2;
  const x2 = b.x;
  const y2 = b.y + NODE_H / 2;
  const bend = Math.max(40, Math.abs(x2 - x1) / 2);
  return `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
}

// The view zoomed by `factor` around point `at` (canvas pixels), within ZOOMS.
export function zoomed(view, factor, at) {
  const zoom = Math.min(ZOOMS.max, Math.max(ZOOMS.min, view.zoom * factor));
  return { zoom, x: at.x - ((at.x - view.x) / view.zoom) * zoom, y: at.y - ((at.y - view.y) / view.zoom) * zoom };
}

// The view that shows every node of `nodes` in a canvas `width` x `height`, never above 100%.
export function fitted(nodes, width, height) {
  if (!nodes.length || !width) return { x: 0, y: 0, zoom: 1 };
  const minX = Math.min(...nodes.map((n) => n.x));
  const minY = Math.min(...nodes.map((n) => n.y));
  const maxX = Math.max(...nodes.map((n) => n.x + NODE_W));
  const maxY = Math.max(...nodes.map((n) => n.y + NODE_H));
  const zoom = Math.min(1, Math.max(ZOOMS.min, Math.min((width - 48) / (maxX - minX), (height - 48) / (maxY - minY))));
  return { zoom, x: 24 - minX * zoom, y: 24 - minY * zoom };
}

// The view moved (least) so that node `n` is inside a canvas `width` x `height`, `margin` in.
export function revealed(view, n, width, height, margin = 24) {
  const left = view.x + n.x * view.zoom;
  const top = view.y + n.y * view.zoom;
  let { x, y } = view;
  if (left < margin) x += margin - left;
  if (left + NODE_W * view.zoom > width - margin) x -= left + NODE_W * view.zoom - (width - margin);
  if (top < margin) y += margin - top;
  if (top + NODE_H * view.zoom > height - margin) y -= top + NODE_H * view.zoom - (height - margin);
  return { ...view, x, y };
}
