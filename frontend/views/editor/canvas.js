// The pipeline editor's canvas: nodes as HTML elements (`data-node-id`) on a transformed
// "world", edges as one SVG, the view (pan and zoom). It draws the editor's state `ed` (see
// `pipeline-editor.js`) and changes nothing but the view.

import { h, words } from '../../lib/dom.js';
import { edgeKey, edgePath, fitted, revealed, whatItRuns, zoomed } from './model.js';

// The canvas's elements.
export function createCanvas(readOnly) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.classList.add('edges');
  svg.setAttribute('aria-hidden', 'true');
  const world = h('div', { class: 'world' }, svg);
  const canvas = h('div', { class: `canvas${readOnly ? ' read-only' : ''}`, tabindex: 0, role: 'group',
    'aria-roledescription': 'pipeline canvas',
    'aria-label': readOnly ? 'Pipeline (read-only)' : 'Pipeline canvas: drag services and plugins here, then drag from a node’s right port to another node to make it run after. Arrow keys move the selected node, Delete removes it.' }, world);
  return { svg, world, canvas };
}

export function place(e, n) {
  e.style.transform = `translate(${n.x}px, ${n.y}px)`;
}

function escapeAttr(s) {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

export function setTransform(ed) {
  ed.world.style.transform = `translate(${ed.view.x}px, ${ed.view.y}px) scale(${ed.view.zoom})`;
}

// Draws everything: nodes (with their problems and diff marks), ghosts of removed nodes,
// edges, the zoom and the undo buttons.
export function render(ed) {
  const { model, marks, selected, readOnly, world, nodeElements } = ed;
  const problemsAt = new Map();
  for (const p of ed.problems) if (p.node) (problemsAt.get(p.node) ?? problemsAt.set(p.node, []).get(p.node)).push(p);
  const wanted = new Set(model.nodes.map((n) => n.id));
  for (const [id, e] of nodeElements) if (!wanted.has(id)) { e.remove(); nodeElements.delete(id); }
  const ghosts = marks?.removed?.nodes ?? [];
  world.querySelectorAll('.enode-ghost').forEach((g) => g.remove());
  for (const n of model.nodes) {
    let e = nodeElements.get(n.id);
    if (!e) {
      e = h('div', { class: 'enode', tabindex: 0, role: 'button' },
        h('span', { class: 'port port-in', dataset: { port: 'in' }, title: 'Runs after the nodes joined here' }),
        h('strong', { class: 'enode-id' }), h('small', { class: 'enode-what' }), h('small', { class: 'enode-note' }),
        readOnly ? null : h('span', { class: 'port port-out', dataset: { port: 'out' }, title: 'Drag to the node that should run after this one' }));
      world.append(e);
      nodeElements.set(n.id, e);
    }
    const mine = problemsAt.get(n.id) ?? [];
    const mark = marks?.nodes.get(n.id);
    e.dataset.nodeId = n.id;
    e.className = ['enode', `enode-${n.kind.toLowerCase()}`, selected?.node === n.id ? 'selected' : '', mine.length ? 'has-problem' : '', mark ? `diff-${mark.kind}` : ''].filter(Boolean).join(' ');
    e.querySelector('.enode-id').textContent = n.id;
    e.querySelector('.enode-what').textContent = whatItRuns(n);
    const first = mine[0] ? `${mine[0].field?.startsWith('parameters.') ? `${mine[0].field.slice(11)}: ` : ''}${mine[0].message}` : '';
    const note = mine.length ? (mine.length === 1 ? first : `${mine.length} problems: ${first}`) : mark ? words(mark.kind) : '';
    e.querySelector('.enode-note').textContent = note;
    e.setAttribute('aria-label', `${n.id}: ${whatItRuns(n)}${mark ? `, ${mark.kind}` : ''}${mine.length ? `, ${mine.length} problem${mine.length > 1 ? 's' : ''}: ${mine.map((p) => p.message).join(' ')}` : ''}`);
    e.setAttribute('aria-pressed', selected?.node === n.id ? 'true' : 'false');
    place(e, n);
  }
  for (const g of ghosts) {
    const e = h('div', { class: 'enode enode-ghost diff-removed', dataset: { removedNodeId: g.id }, 'aria-label': `${g.id}: removed` },
      h('strong', { class: 'enode-id' }, g.id), h('small', { class: 'enode-what' }, g.what), h('small', { class: 'enode-note' }, 'removed'));
    world.append(e);
    place(e, g);
  }
  drawEdges(ed);
  ed.zoomText.textContent = `${Math.round(ed.view.zoom * 100)}%`;
  setTransform(ed);
  ed.undoButton.disabled = !ed.history.canUndo;
  ed.redoButton.disabled = !ed.history.canRedo;
}

function drawEdges(ed) {
  const { model, marks, selected } = ed;
  const parts = [];
  const at = new Map(model.nodes.map((n) => [n.id, n]));
  for (const g of marks?.removed?.nodes ?? []) at.set(g.id, g);
  const all = [...model.edges.map((e) => ({ ...e, removed: false })), ...(marks?.removed?.edges ?? []).map((e) => ({ ...e, removed: true }))];
  for (const e of all) {
    const a = at.get(e.from);
    const b = at.get(e.to);
    if (!a || !b) continue;
    const key = edgeKey(e);
    const mark = e.removed ? 'removed' : marks?.edges.get(key)?.kind;
    const d = edgePath(a, b);
    const cls = ['edge', selected?.edge === key ? 'selected' : '', mark ? `diff-${mark}` : ''].filter(Boolean).join(' ');
    parts.push(`<g class="${cls}" data-edge="${escapeAttr(key)}"><path class="edge-hit" d="${d}"/><path class="edge-line" d="${d}" marker-end="url(#arrow)"/></g>`);
  }
  ed.svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrow"/></marker></defs>${parts.join('')}<path class="edge-draft" d=""/>`;
}

// Only the edges at `id` follow a node while it is dragged: cheap for large graphs.
export function moveEdgesOf(ed, id) {
  const at = new Map(ed.model.nodes.map((n) => [n.id, n]));
  for (const g of ed.svg.querySelectorAll('g.edge')) {
    const [from, to] = g.dataset.edge.split('>');
    if (from !== id && to !== id) continue;
    const a = at.get(from);
    const b = at.get(to);
    if (!a || !b) continue;
    const d = edgePath(a, b);
    for (const p of g.querySelectorAll('path')) p.setAttribute('d', d);
  }
}

export function zoomBy(ed, factor, around = null) {
  const rect = ed.canvas.getBoundingClientRect();
  ed.view = zoomed(ed.view, factor, { x: around?.x ?? rect.width / 2, y: around?.y ?? rect.height / 2 });
  render(ed);
}

// Shows every node (and every ghost of a removed one).
export function fit(ed) {
  const rect = ed.canvas.getBoundingClientRect();
  ed.view = fitted([...ed.model.nodes, ...(ed.marks?.removed?.nodes ?? [])], rect.width, rect.height);
  render(ed);
}

// Pans the view, when needed, so that node `n` is inside the canvas.
export function reveal(ed, n) {
  const rect = ed.canvas.getBoundingClientRect();
  const next = revealed(ed.view, n, rect.width, rect.height);
  if (next.x !== ed.view.x || next.y !== ed.view.y) {
    ed.view = next;
    render(ed);
  }
}

// Client coordinates to canvas (world) coordinates.
export function toWorld(ed, clientX, clientY) {
  const rect = ed.canvas.getBoundingClientRect();
  return { x: (clientX - rect.left - ed.view.x) / ed.view.zoom, y: (clientY - rect.top - ed.view.y) / ed.view.zoom };
}
