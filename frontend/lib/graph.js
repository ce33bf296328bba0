// Pipeline graphs in the browser: the same rules the server applies (`nullops_domain::pipeline`),
// so the editor can refuse an edge as it is drawn. The server checks again on save.

// Nodes by stage: a node's stage is one more than the latest of those it follows.
export function stages(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < nodes.length; round += 1) {
    let moved = false;
    for (const e of edges) {
      const want = (depth.get(e.from) ?? 0) + 1;
      if (depth.has(e.to) && depth.get(e.to) < want) { depth.set(e.to, want); moved = true; }
    }
    if (!moved) break;
  }
  const out = [];
  for (const n of nodes) (out[depth.get(n.id)] ??= []).push(n);
  return out.filter(Boolean);
}

// The ids of the nodes that finish before `id` starts (its ancestors).
export function upstream(edges, id) {
  const seen = new Set();
  const todo = [id];
  while (todo.length) {
    const at = todo.pop();
    for (const e of edges) {
      if (e.to === at && !seen.has(e.from)) { seen.add(e.from); todo.push(e.from); }
    }
  }
  return seen;
}

// Why an edge `from` -> `to` cannot be added to `nodes`/`edges`, or null when it can.
export function edgeRefusal(nodes, edges, from, to) {
  const ids = new Set(nodes.map((n) => n.id));
  for (const end of [from, to]) if (!ids.has(end)) return `there is no node ${end} in the pipeline`;
  if (from === to) return 'an edge cannot lead from a node to itself';
  if (edges.some((e) => e.from === from && e.to === to)) return `${to} already runs after ${from}`;
  if (upstream(edges, from).has(to)) {
    return `it would make a cycle: ${from} already runs after ${to} (${pathBetween(edges, to, from).join(' → ')})`;
  }
  return null;
}

// One path of edges from `a` to `b` (node ids), or [] when there is none.
function pathBetween(edges, a, b) {
  const back = new Map([[a, null]]);
  const queue = [a];
  while (queue.length) {
    const at = queue.shift();
    if (at === b) break;
    for (const e of edges) {
      if (e.from === at && !back.has(e.to)) { back.set(e.to, at); queue.push(e.to); }
    }
  }
  if (!back.has(b)) return [];
  const path = [];
  for (let at = b; at !== null; at = back.get(at)) path.unshift(at);
  return path;
}

// Where a tidy layout puts each node: stages left to right, a stage's nodes top to bottom.
export const GRID = { x: 240, y: 104, left: 24, top: 24 };

export function tidy(nodes, edges) {
  const placed = new Map();
  stages(nodes, edges).forEach((stage, i) => stage.forEach((n, j) => placed.set(n.id, { x: GRID.left + i * GRID.x, y: GRID.top + j * GRID.y })));
  return placed;
}

// A node id is 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit.
export const NODE_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;

// A free id from `name` among `taken`: `name`, else `name-2`, `name-3`…
export function freeId(name, taken) {
  let stem = String(name).toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 56) || 'node';
  if (!taken.has(stem)) return stem;
  for (let i = 2; ; i += 1) if (!taken.has(`${stem}-${i}`)) return `${stem}-${i}`;
}

// `node ID` / `edge A -> B` subjects of the server's pipeline diff, as ids and edge keys.
export function diffMarks(changes) {
  const nodes = new Map();
  const edges = new Map();
  for (const c of changes) {
    const kind = c.kind.toLowerCase();
    if (c.subject.startsWith('node ')) nodes.set(c.subject.slice(5), { kind, detail: c.detail });
    else if (c.subject.startsWith('edge ')) edges.set(c.subject.slice(5).replace(' -> ', '>'), { kind });
  }
  return { nodes, edges };
}
