// The pipeline editor: a canvas of nodes (each an HTML element carrying `data-node-id`) joined
// by edges (SVG paths), a palette of the catalog's services and plugins to drag onto it, and an
// inspector for the selected node (its id, what it runs, the plugin's parameters as a form made
// from its JSON Schema, the nodes it runs after). Every change can be undone; everything the
// mouse does, the keyboard can do: palette entries are buttons, nodes take the focus and move
// with the arrow keys, the inspector's "Runs after" boxes make and remove edges.
//
// The editor keeps the graph (`model`) and draws it; the page around it loads and saves.

import { h, clear, words } from '../lib/dom.js';
import { setFieldError } from '../lib/forms.js';
import { schemaForm, problemsOf } from '../lib/schema-form.js';
import { edgeRefusal, freeId, GRID, NODE_ID, tidy, upstream } from '../lib/graph.js';

const NODE_W = 184;
const NODE_H = 66;
const SNAP = 8;
const ZOOMS = { min: 0.3, max: 2 };
const HISTORY_LIMIT = 200;
const EXPRESSION = /\$\{\{(.*?)\}\}/g;

const snap = (v) => Math.round(v / SNAP) * SNAP;
const edgeKey = (e) => `${e.from}>${e.to}`;

// What a node runs, in words.
function whatItRuns(n) {
  return n.kind === 'SERVICE' ? `service ${n.service}` : `plugin ${n.plugin}`;
}

// The problems the browser can see itself: ids, parameters against their schema, and the
// expressions in them (an upstream node's outputs, a secret the project has).
export function localProblems(model, { plugins, services, secrets }) {
  const out = [];
  const seen = new Set();
  for (const n of model.nodes) {
    if (!NODE_ID.test(n.id)) out.push({ node: n.id, field: 'id', code: 'BAD_NODE_ID', message: 'Use 1 to 63 lower-case letters, digits, “_” or “-”, starting with a letter or digit.' });
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

export function pipelineEditor({ catalog, secrets: secretNames = [], readOnly = false, onChange = () => {} }) {
  let secrets = secretNames;
  const services = new Map(catalog.services.map((s) => [s.name, s]));
  const plugins = new Map(catalog.plugins.map((p) => [p.name, p]));
  let model = { nodes: [], edges: [] };
  let view = { x: 0, y: 0, zoom: 1 };
  let selected = null; // { node } or { edge }
  let problems = [];
  let marks = null; // a diff: { nodes: Map(id -> {kind, detail}), edges: Map(key -> {kind}), removed: {nodes, edges} }
  const past = [];
  const future = [];
  let coalesce = null; // { key, at }: edits to one field in a row are one step to undo
  let shownForm = null; // the parameters form in the inspector, with the node it edits

  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.classList.add('edges');
  svg.setAttribute('aria-hidden', 'true');
  const world = h('div', { class: 'world' }, svg);
  const canvas = h('div', { class: `canvas${readOnly ? ' read-only' : ''}`, tabindex: 0, role: 'group',
    'aria-roledescription': 'pipeline canvas',
    'aria-label': readOnly ? 'Pipeline (read-only)' : 'Pipeline canvas: drag services and plugins here, then drag from a node’s right port to another node to make it run after. Arrow keys move the selected node, Delete removes it.' }, world);
  const status = h('p', { class: 'canvas-status', role: 'status', 'aria-live': 'polite' });
  // What the last gesture did, or why it was refused, under the canvas.
  const say = (message, bad = false) => {
    status.textContent = message;
    status.classList.toggle('error', bad);
  };
  const inspector = h('aside', { class: 'inspector', 'aria-label': 'Selected node' });
  const zoomText = h('output', { class: 'zoom-text', 'aria-label': 'Zoom' }, '100%');
  const undoButton = h('button', { type: 'button', class: 'btn btn-small', onclick: () => undo(), title: 'Undo (Ctrl+Z)' }, 'Undo');
  const redoButton = h('button', { type: 'button', class: 'btn btn-small', onclick: () => redo(), title: 'Redo (Ctrl+Shift+Z)' }, 'Redo');
  const toolbar = h('div', { class: 'canvas-toolbar', role: 'toolbar', 'aria-label': 'Canvas' },
    readOnly ? null : [undoButton, redoButton, h('button', { type: 'button', class: 'btn btn-small', onclick: () => tidyUp(), title: 'Lay the nodes out in stages' }, 'Tidy layout')],
    h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Zoom out', onclick: () => zoomBy(1 / 1.2) }, '−'), zoomText,
    h('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Zoom in', onclick: () => zoomBy(1.2) }, '+'),
    h('button', { type: 'button', class: 'btn btn-small', onclick: () => fit() }, 'Fit'));
  const palette = readOnly ? null : paletteOf();
  const el = h('div', { class: `editor${readOnly ? ' editor-read-only' : ''}` },
    palette, h('div', { class: 'canvas-wrap' }, toolbar, canvas, status), inspector);

  // -------------------------------------------------------------------------------- model

  const nodeOf = (id) => model.nodes.find((n) => n.id === id);
  const snapshot = () => JSON.stringify({ model, selected });

  // Applies `change` to the model as one step to undo (`key`: edits with the same key within
  // a second of each other are one step).
  function commit(change, key = null, { redrawInspector = true } = {}) {
    const now = Date.now();
    if (!(key && coalesce?.key === key && now - coalesce.at < 1000)) {
      past.push(snapshot());
      if (past.length > HISTORY_LIMIT) past.shift();
    }
    coalesce = key ? { key, at: now } : null;
    future.length = 0;
    change();
    changed({ redrawInspector });
  }

  // After any edit: the browser's own checks replace what was marked (a server's answer was
  // about the graph as it was), then everything is drawn again.
  function changed({ redrawInspector = true } = {}) {
    problems = localProblems(model, { plugins, services, secrets });
    render();
    if (redrawInspector) showInspector();
    else if (shownForm) shownForm.form.showProblems(problems.filter((p) => p.node === shownForm.node));
    onChange();
  }

  function restore(text) {
    const s = JSON.parse(text);
    model = s.model;
    selected = s.selected;
    coalesce = null;
    changed();
  }

  function undo() {
    if (readOnly || !past.length) return;
    future.push(snapshot());
    restore(past.pop());
    say('Undone.');
  }

  function redo() {
    if (readOnly || !future.length) return;
    past.push(snapshot());
    restore(future.pop());
    say('Redone.');
  }

  // A free place for a new node: right of everything, at the top.
  function freeSpot() {
    if (!model.nodes.length) return { x: GRID.left, y: GRID.top };
    const right = Math.max(...model.nodes.map((n) => n.x));
    return { x: snap(right + GRID.x), y: GRID.top };
  }

  function addNode(kind, name, at = freeSpot()) {
    const taken = new Set(model.nodes.map((n) => n.id));
    const id = freeId(name, taken);
    const node = kind === 'SERVICE'
      ? { id, kind, service: name, x: snap(at.x), y: snap(at.y) }
      : { id, kind, plugin: name, parameters: {}, x: snap(at.x), y: snap(at.y) };
    commit(() => {
      model.nodes.push(node);
      selected = { node: id };
    });
    say(`Added node ${id} (${whatItRuns(node)}).`);
    reveal(node);
    nodeElement(id)?.focus({ preventScroll: true });
    return id;
  }

  // Pans the view, when needed, so that node `n` is inside the canvas.
  function reveal(n) {
    const rect = canvas.getBoundingClientRect();
    const left = view.x + n.x * view.zoom;
    const top = view.y + n.y * view.zoom;
    const margin = 24;
    let { x, y } = view;
    if (left < margin) x += margin - left;
    if (left + NODE_W * view.zoom > rect.width - margin) x -= left + NODE_W * view.zoom - (rect.width - margin);
    if (top < margin) y += margin - top;
    if (top + NODE_H * view.zoom > rect.height - margin) y -= top + NODE_H * view.zoom - (rect.height - margin);
    if (x !== view.x || y !== view.y) {
      view = { ...view, x, y };
      render();
    }
  }

  function addEdge(from, to) {
    const refusal = edgeRefusal(model.nodes, model.edges, from, to);
    if (refusal) {
      say(`Edge refused: ${refusal}.`, true);
      const target = nodeElement(to);
      target?.classList.add('refused');
      setTimeout(() => target?.classList.remove('refused'), 1200);
      return false;
    }
    commit(() => { model.edges.push({ from, to }); });
    say(`${to} now runs after ${from}.`);
    return true;
  }

  function removeEdge(from, to) {
    commit(() => {
      model.edges = model.edges.filter((e) => !(e.from === from && e.to === to));
      if (selected?.edge === `${from}>${to}`) selected = null;
    });
    say(`${to} no longer runs after ${from}.`);
  }

  function removeSelected() {
    if (readOnly || !selected) return;
    if (selected.node) {
      const id = selected.node;
      commit(() => {
        model.nodes = model.nodes.filter((n) => n.id !== id);
        model.edges = model.edges.filter((e) => e.from !== id && e.to !== id);
        selected = null;
      });
      say(`Removed node ${id} and its edges.`);
    } else if (selected.edge) {
      const [from, to] = selected.edge.split('>');
      removeEdge(from, to);
    }
    canvas.focus({ preventScroll: true });
  }

  // Renames a node, and every edge and expression that names it.
  function rename(oldId, newId) {
    const pattern = new RegExp(`(\\$\\{\\{\\s*nodes\\.)${oldId.replace(/[-]/g, '\\-')}(\\.outputs\\.)`, 'g');
    commit(() => {
      for (const n of model.nodes) {
        if (n.id === oldId) n.id = newId;
        for (const [k, v] of Object.entries(n.parameters ?? {})) if (typeof v === 'string') n.parameters[k] = v.replace(pattern, `$1${newId}$2`);
      }
      for (const e of model.edges) {
        if (e.from === oldId) e.from = newId;
        if (e.to === oldId) e.to = newId;
      }
      selected = { node: newId };
    });
    say(`Renamed ${oldId} to ${newId}.`);
  }

  function tidyUp() {
    const placed = tidy(model.nodes, model.edges);
    commit(() => model.nodes.forEach((n) => Object.assign(n, placed.get(n.id))));
    fit();
    say('Laid out in stages.');
  }

  // -------------------------------------------------------------------------------- drawing

  const nodeElements = new Map();
  const nodeElement = (id) => nodeElements.get(id);

  function render() {
    const problemsAt = new Map();
    for (const p of problems) if (p.node) (problemsAt.get(p.node) ?? problemsAt.set(p.node, []).get(p.node)).push(p);
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
    drawEdges();
    zoomText.textContent = `${Math.round(view.zoom * 100)}%`;
    world.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
    undoButton.disabled = !past.length;
    redoButton.disabled = !future.length;
  }

  function place(e, n) {
    e.style.transform = `translate(${n.x}px, ${n.y}px)`;
  }

  function edgePath(a, b) {
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const bend = Math.max(40, Math.abs(x2 - x1) / 2);
    return `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
  }

  function drawEdges() {
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
    svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrow"/></marker></defs>${parts.join('')}<path class="edge-draft" d=""/>`;
  }

  function escapeAttr(s) {
    return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  }

  // Only the edges at `id` follow a node while it is dragged: cheap for large graphs.
  function moveEdgesOf(id) {
    const at = new Map(model.nodes.map((n) => [n.id, n]));
    for (const g of svg.querySelectorAll('g.edge')) {
      const [from, to] = g.dataset.edge.split('>');
      if (from !== id && to !== id) continue;
      const a = at.get(from);
      const b = at.get(to);
      if (!a || !b) continue;
      const d = edgePath(a, b);
      for (const p of g.querySelectorAll('path')) p.setAttribute('d', d);
    }
  }

  // -------------------------------------------------------------------------------- view

  function zoomBy(factor, around = null) {
    const rect = canvas.getBoundingClientRect();
    const cx = around?.x ?? rect.width / 2;
    const cy = around?.y ?? rect.height / 2;
    const zoom = Math.min(ZOOMS.max, Math.max(ZOOMS.min, view.zoom * factor));
    view = { zoom, x: cx - ((cx - view.x) / view.zoom) * zoom, y: cy - ((cy - view.y) / view.zoom) * zoom };
    render();
  }

  function fit() {
    const rect = canvas.getBoundingClientRect();
    const all = [...model.nodes, ...(marks?.removed?.nodes ?? [])];
    if (!all.length || !rect.width) { view = { x: 0, y: 0, zoom: 1 }; render(); return; }
    const minX = Math.min(...all.map((n) => n.x));
    const minY = Math.min(...all.map((n) => n.y));
    const maxX = Math.max(...all.map((n) => n.x + NODE_W));
    const maxY = Math.max(...all.map((n) => n.y + NODE_H));
    const zoom = Math.min(1, Math.max(ZOOMS.min, Math.min((rect.width - 48) / (maxX - minX), (rect.height - 48) / (maxY - minY))));
    view = { zoom, x: 24 - minX * zoom, y: 24 - minY * zoom };
    render();
  }

  // Client coordinates to canvas (world) coordinates.
  function toWorld(clientX, clientY) {
    const rect = canvas.getBoundingClientRect();
    return { x: (clientX - rect.left - view.x) / view.zoom, y: (clientY - rect.top - view.y) / view.zoom };
  }

  // -------------------------------------------------------------------------------- pointer

  let gesture = null;

  canvas.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0) return;
    const port = ev.target.closest('.port-out');
    const node = ev.target.closest('.enode:not(.enode-ghost)');
    const edge = ev.target.closest('g.edge');
    if (port && node && !readOnly) {
      gesture = { kind: 'edge', from: node.dataset.nodeId };
      ev.preventDefault();
    } else if (node) {
      const n = nodeOf(node.dataset.nodeId);
      select({ node: n.id });
      gesture = { kind: 'move', id: n.id, start: toWorld(ev.clientX, ev.clientY), origin: { x: n.x, y: n.y }, moved: false, frames: [] };
    } else if (edge) {
      select({ edge: edge.dataset.edge });
      gesture = null;
      return;
    } else {
      gesture = { kind: 'pan', start: { x: ev.clientX, y: ev.clientY }, origin: { ...view }, moved: false };
    }
    canvas.setPointerCapture(ev.pointerId);
  });

  canvas.addEventListener('pointermove', (ev) => {
    if (!gesture) return;
    if (gesture.kind === 'move' && !readOnly) {
      const started = performance.now();
      const at = toWorld(ev.clientX, ev.clientY);
      const n = nodeOf(gesture.id);
      const x = snap(gesture.origin.x + at.x - gesture.start.x);
      const y = snap(gesture.origin.y + at.y - gesture.start.y);
      if (x === n.x && y === n.y) return;
      if (!gesture.moved) { past.push(snapshot()); future.length = 0; coalesce = null; gesture.moved = true; }
      n.x = x;
      n.y = y;
      place(nodeElement(n.id), n);
      moveEdgesOf(n.id);
      performance.measure?.('editor:drag-frame', { start: started, end: performance.now() });
    } else if (gesture.kind === 'pan') {
      const dx = ev.clientX - gesture.start.x;
      const dy = ev.clientY - gesture.start.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) gesture.moved = true;
      view = { ...view, x: gesture.origin.x + dx, y: gesture.origin.y + dy };
      world.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
    } else if (gesture.kind === 'edge') {
      const a = nodeOf(gesture.from);
      const b = toWorld(ev.clientX, ev.clientY);
      svg.querySelector('.edge-draft')?.setAttribute('d', edgePath(a, { x: b.x, y: b.y - NODE_H / 2 }));
    }
  });

  const endGesture = (ev) => {
    const g = gesture;
    gesture = null;
    if (!g) return;
    if (g.kind === 'edge') {
      svg.querySelector('.edge-draft')?.setAttribute('d', '');
      const target = document.elementFromPoint(ev.clientX, ev.clientY)?.closest('.enode:not(.enode-ghost)');
      if (target && target.dataset.nodeId !== g.from) addEdge(g.from, target.dataset.nodeId);
      else if (target) say('Edge refused: an edge cannot lead from a node to itself.', true);
      else say(`No edge: drop it on the node that should run after ${g.from}.`);
    } else if (g.kind === 'move' && g.moved) {
      changed();
      say(`Moved ${g.id}.`);
    } else if (g.kind === 'pan' && !g.moved) {
      select(null);
    }
  };
  canvas.addEventListener('pointerup', endGesture);
  canvas.addEventListener('pointercancel', () => { gesture = null; svg.querySelector('.edge-draft')?.setAttribute('d', ''); });

  canvas.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    if (ev.ctrlKey || ev.metaKey) {
      const rect = canvas.getBoundingClientRect();
      zoomBy(ev.deltaY < 0 ? 1.1 : 1 / 1.1, { x: ev.clientX - rect.left, y: ev.clientY - rect.top });
    } else {
      view = { ...view, x: view.x - ev.deltaX, y: view.y - ev.deltaY };
      render();
    }
  }, { passive: false });

  // -------------------------------------------------------------------------------- keys

  canvas.addEventListener('focusin', (ev) => {
    const node = ev.target.closest?.('.enode:not(.enode-ghost)');
    if (node && selected?.node !== node.dataset.nodeId) select({ node: node.dataset.nodeId }, { focus: false });
  });

  canvas.addEventListener('keydown', (ev) => {
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (arrows[ev.key] && selected?.node && !readOnly) {
      ev.preventDefault();
      const [dx, dy] = arrows[ev.key];
      const step = ev.shiftKey ? SNAP * 5 : SNAP;
      const n = nodeOf(selected.node);
      commit(() => { n.x += dx * step; n.y += dy * step; }, `move:${n.id}`);
      reveal(n);
      nodeElement(n.id)?.focus({ preventScroll: true });
    } else if ((ev.key === 'Delete' || ev.key === 'Backspace') && selected && !readOnly) {
      ev.preventDefault();
      removeSelected();
    } else if (ev.key === 'Escape') {
      select(null);
      canvas.focus({ preventScroll: true });
    } else if (ev.key === 'Enter' && selected?.node && ev.target.closest?.('.enode')) {
      ev.preventDefault();
      inspector.querySelector('input, select, textarea, button')?.focus();
    } else if (ev.key === '+' || ev.key === '=') {
      zoomBy(1.2);
    } else if (ev.key === '-') {
      zoomBy(1 / 1.2);
    }
  });

  el.addEventListener('keydown', (ev) => {
    if (!(ev.ctrlKey || ev.metaKey) || readOnly) return;
    // Typing in a field undoes the typing, not the graph.
    if (ev.target.matches?.('input, textarea')) return;
    const key = ev.key.toLowerCase();
    if (key === 'z' && !ev.shiftKey) { ev.preventDefault(); undo(); }
    else if ((key === 'z' && ev.shiftKey) || key === 'y') { ev.preventDefault(); redo(); }
  });

  // -------------------------------------------------------------------------------- palette

  function paletteOf() {
    const entry = (kind, name, detail) => {
      const b = h('button', { type: 'button', class: `palette-item palette-${kind.toLowerCase()}`, dataset: { kind, name },
        'aria-label': `Add ${kind === 'SERVICE' ? 'service' : 'plugin'} ${name}`, title: `${detail}\nDrag onto the canvas, or press Enter to add it.` },
      h('strong', {}, name), h('small', {}, detail));
      let drag = null;
      b.addEventListener('pointerdown', (ev) => {
        if (ev.button !== 0) return;
        drag = { start: { x: ev.clientX, y: ev.clientY }, ghost: null };
        b.setPointerCapture(ev.pointerId);
      });
      b.addEventListener('pointermove', (ev) => {
        if (!drag) return;
        if (!drag.ghost && Math.abs(ev.clientX - drag.start.x) + Math.abs(ev.clientY - drag.start.y) > 4) {
          drag.ghost = h('div', { class: 'enode drag-ghost', 'aria-hidden': 'true' }, h('strong', {}, name), h('small', {}, kind === 'SERVICE' ? 'service' : 'plugin'));
          document.body.append(drag.ghost);
        }
        if (drag.ghost) drag.ghost.style.transform = `translate(${ev.clientX - 20}px, ${ev.clientY - 20}px) scale(${view.zoom})`;
      });
      b.addEventListener('pointerup', (ev) => {
        const d = drag;
        drag = null;
        if (!d?.ghost) return;
        d.ghost.remove();
        b.dataset.dragged = 'yes';
        const rect = canvas.getBoundingClientRect();
        if (ev.clientX < rect.left || ev.clientX > rect.right || ev.clientY < rect.top || ev.clientY > rect.bottom) {
          say('Drop it on the canvas to add it.');
          return;
        }
        const at = toWorld(ev.clientX - 20, ev.clientY - 20);
        addNode(kind, name, at);
      });
      b.addEventListener('click', () => {
        // A drag ends in a click on the entry itself: it already added the node.
        if (b.dataset.dragged) { delete b.dataset.dragged; return; }
        addNode(kind, name);
      });
      return h('li', {}, b);
    };
    const tagWords = (s) => (s.tagMode === 'PINNED' ? `tag ${s.tag}` : `tag chosen per deployment${s.tagPattern ? ` (${s.tagPattern})` : ''}`);
    return h('nav', { class: 'palette', 'aria-label': 'Add a node' },
      h('h3', {}, 'Services'),
      catalog.services.length ? h('ul', {}, catalog.services.map((s) => entry('SERVICE', s.name, `${s.image}, ${tagWords(s)}`)))
        : h('p', { class: 'muted' }, 'No services in the catalog yet.'),
      h('h3', {}, 'Plugins'),
      catalog.plugins.length ? h('ul', {}, catalog.plugins.map((p) => entry('PLUGIN', p.name, p.description || `${p.repository}:${p.tag}`)))
        : h('p', { class: 'muted' }, 'No plugins in the catalog yet.'),
      h('p', { class: 'hint' }, 'Drag onto the canvas (or focus and press Enter). Join two nodes by dragging from the right-hand port of one onto the other.'));
  }

  // -------------------------------------------------------------------------------- inspector

  function select(what, { focus = false } = {}) {
    selected = what;
    render();
    showInspector();
    if (focus && what?.node) nodeElement(what.node)?.focus({ preventScroll: true });
  }

  // Expression help for a string parameter of node `id`: what can be inserted at the cursor.
  function expressionHelp(id) {
    return (input) => {
      const before = [...upstream(model.edges, id)].sort();
      const choices = [];
      for (const u of before) {
        const n = nodeOf(u);
        if (n?.kind === 'SERVICE') for (const key of ['host', 'port']) choices.push([`\${{ nodes.${u}.outputs.${key} }}`, `${u}: its ${key}`]);
        else if (n) choices.push([`\${{ nodes.${u}.outputs.KEY }}`, `${u}: an output (type its key)`]);
      }
      for (const s of secrets) choices.push([`\${{ secrets.${s} }}`, `secret ${s}`]);
      const listId = `${input.id}-expressions`;
      input.setAttribute('list', listId);
      const list = h('datalist', { id: listId }, choices.map(([v, label]) => h('option', { value: v }, label)));
      const pick = h('select', { class: 'insert', 'aria-label': `Insert a reference into ${input.dataset.field.replace('parameters.', '')}` },
        h('option', { value: '' }, choices.length ? 'Insert…' : 'Nothing to insert'),
        before.length ? h('optgroup', { label: 'Outputs of nodes that run before' }, choices.filter(([v]) => v.includes('nodes.')).map(([v, label]) => h('option', { value: v }, label))) : null,
        secrets.length ? h('optgroup', { label: 'Project secrets' }, choices.filter(([v]) => v.includes('secrets.')).map(([v, label]) => h('option', { value: v }, label))) : null);
      pick.disabled = !choices.length;
      pick.addEventListener('change', () => {
        const v = pick.value;
        if (!v) return;
        const start = input.selectionStart ?? input.value.length;
        const end = input.selectionEnd ?? input.value.length;
        input.value = input.value.slice(0, start) + v + input.value.slice(end);
        pick.value = '';
        input.focus();
        const key = v.indexOf('KEY');
        if (key >= 0) input.setSelectionRange(start + key, start + key + 3);
        input.dispatchEvent(new Event('input', { bubbles: true }));
      });
      return [pick, list];
    };
  }

  function showInspector() {
    shownForm = null;
    const node = selected?.node ? nodeOf(selected.node) : null;
    if (selected?.edge) {
      const [from, to] = selected.edge.split('>');
      clear(inspector, h('h2', {}, 'Edge'), h('p', {}, `${to} runs after ${from} has finished.`),
        readOnly ? null : h('button', { type: 'button', class: 'btn btn-danger', onclick: () => removeSelected() }, 'Remove edge'));
      return;
    }
    if (!node) {
      const totals = `${model.nodes.length} node${model.nodes.length === 1 ? '' : 's'}, ${model.edges.length} edge${model.edges.length === 1 ? '' : 's'}`;
      const loose = problems.filter((p) => !p.node);
      clear(inspector, h('h2', {}, 'Pipeline'), h('p', {}, totals),
        loose.length ? h('ul', { class: 'problems' }, loose.map((p) => h('li', { class: 'error' }, h('code', { class: 'error-code' }, p.code), ' ', p.message))) : null,
        h('p', { class: 'hint' }, readOnly ? 'Select a node to see what it runs.' : 'Select a node to set its parameters and what it runs after.'));
      return;
    }
    const mine = problems.filter((p) => p.node === node.id);
    const idInput = h('input', { type: 'text', name: 'id', value: node.id, readOnly, spellcheck: false, autocomplete: 'off', 'aria-describedby': 'node-id-hint node-id-error' });
    idInput.id = 'node-id';
    const applyId = () => {
      const next = idInput.value.trim();
      if (next === node.id) { setFieldError(idInput, null); return; }
      if (!NODE_ID.test(next)) { setFieldError(idInput, 'Use 1 to 63 lower-case letters, digits, “_” or “-”, starting with a letter or digit.'); return; }
      if (nodeOf(next)) { setFieldError(idInput, `Node ${next} already exists.`); return; }
      rename(node.id, next);
    };
    idInput.addEventListener('change', applyId);
    idInput.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); applyId(); } });
    const parts = [h('h2', {}, `Node ${node.id}`),
      h('div', { class: 'field' }, h('label', { for: 'node-id' }, 'Id'), idInput,
        h('p', { class: 'hint', id: 'node-id-hint' }, 'Other nodes use its outputs as ${{ nodes.ID.outputs.KEY }}.'), h('p', { class: 'field-error', id: 'node-id-error', hidden: true }))];
    let form = null;
    if (node.kind === 'SERVICE') {
      const s = services.get(node.service);
      parts.push(h('p', {}, `Starts service ${node.service}`),
        s ? h('p', { class: 'hint' }, `${s.image}, ${s.tagMode === 'PINNED' ? `tag ${s.tag}` : 'the tag is chosen for each deployment'}; port ${s.port}. Its outputs: host and port.`) : h('p', { class: 'error' }, 'Not in the catalog.'));
    } else {
      const p = plugins.get(node.plugin);
      parts.push(h('p', {}, `Runs plugin ${node.plugin}`));
      if (p) {
        parts.push(h('p', { class: 'hint' }, p.description ? `${p.description.replace(/\.?$/, '.')} ` : '', `Image ${p.repository}:${p.tag}; at most ${p.timeoutSeconds} s, ${p.cpuMillis} millicores and ${p.memoryMib} MiB (set by the plugin's definition).`));
        form = schemaForm({ schema: p.parametersSchema, value: node.parameters ?? {}, readOnly, suggest: expressionHelp(node.id),
          onChange: () => {
            const { value } = form.read();
            // One typing run is one step to undo; the form stays as it is while one types.
            commit(() => { node.parameters = value; }, `params:${node.id}`, { redrawInspector: false });
          } });
        shownForm = { node: node.id, form };
        parts.push(h('fieldset', { class: 'params' }, h('legend', {}, 'Parameters'), form.el,
          h('p', { class: 'hint' }, 'In text, ${{ nodes.ID.outputs.KEY }} is the output of a node that runs before, ${{ secrets.NAME }} a project secret.')));
      } else {
        parts.push(h('p', { class: 'error' }, 'Not in the catalog.'));
      }
    }
    const others = model.nodes.filter((n) => n.id !== node.id);
    parts.push(h('fieldset', { class: 'after' }, h('legend', {}, 'Runs after'),
      others.length ? others.map((o) => {
        const on = model.edges.some((e) => e.from === o.id && e.to === node.id);
        const refusal = on ? null : edgeRefusal(model.nodes, model.edges, o.id, node.id);
        const box = h('input', { type: 'checkbox', id: `after-${o.id}`, checked: on, disabled: readOnly || Boolean(refusal), dataset: { after: o.id } });
        box.addEventListener('change', () => (box.checked ? addEdge(o.id, node.id) : removeEdge(o.id, node.id)));
        return h('div', { class: 'field field-check' }, box, h('label', { for: box.id }, o.id), refusal ? h('small', { class: 'muted' }, ` (${refusal})`) : null);
      }) : h('p', { class: 'muted' }, 'No other node yet.')));
    const rest = form ? form.showProblems(mine) : mine;
    const idProblem = rest.find((p) => p.field === 'id');
    if (idProblem) setFieldError(idInput, idProblem.message);
    const shown = rest.filter((p) => p !== idProblem);
    if (shown.length) parts.splice(1, 0, h('ul', { class: 'problems', 'aria-label': `Problems of ${node.id}` }, shown.map((p) => h('li', { class: 'error' }, h('code', { class: 'error-code' }, p.code), ' ', p.message))));
    if (!readOnly) parts.push(h('button', { type: 'button', class: 'btn btn-danger', onclick: () => removeSelected() }, 'Remove node'));
    clear(inspector, parts);
  }

  // -------------------------------------------------------------------------------- API

  return {
    el,
    // Shows a saved version (or a draft): its nodes where it drew them, the rest laid out.
    load(version, { keepView = false } = {}) {
      const started = performance.now();
      const placed = new Map((version?.layout ?? []).map((p) => [p.node, p]));
      const nodes = (version?.nodes ?? []).map((n) => ({ id: n.id, kind: n.kind, service: n.service ?? undefined, plugin: n.plugin ?? undefined,
        parameters: n.kind === 'PLUGIN' ? structuredClone(n.parameters ?? {}) : undefined, x: 0, y: 0 }));
      const edges = (version?.edges ?? []).map((e) => ({ from: e.from, to: e.to }));
      const auto = tidy(nodes, edges);
      for (const n of nodes) Object.assign(n, placed.has(n.id) ? { x: placed.get(n.id).x, y: placed.get(n.id).y } : auto.get(n.id));
      model = { nodes, edges };
      selected = null;
      problems = [];
      past.length = 0;
      future.length = 0;
      render();
      showInspector();
      if (!keepView) fit();
      // Drawn, with the layout done: what the tests report as the time to draw a pipeline.
      performance.measure?.('editor:load', { start: started, end: performance.now() });
    },
    // The graph as savePipeline and dryRunPipeline take it.
    draft() {
      return {
        nodes: model.nodes.map((n) => (n.kind === 'SERVICE' ? { id: n.id, service: n.service } : { id: n.id, plugin: n.plugin, parameters: n.parameters ?? {} })),
        edges: model.edges.map((e) => ({ from: e.from, to: e.to })),
        layout: model.nodes.map((n) => ({ node: n.id, x: Math.round(n.x), y: Math.round(n.y) })),
      };
    },
    isEmpty: () => !model.nodes.length,
    // The project's secret names now (a secret set or deleted elsewhere).
    setSecrets(names) {
      secrets = names;
      problems = localProblems(model, { plugins, services, secrets });
      render();
      if (shownForm) shownForm.form.showProblems(problems.filter((p) => p.node === shownForm.node));
    },
    localProblems: () => localProblems(model, { plugins, services, secrets }),
    // Marks `list` ({ node, field, code, message }) on their nodes and in the inspector.
    setProblems(list) {
      problems = list;
      render();
      showInspector();
    },
    // Marks a diff on the canvas: nodes and edges added or changed here, and ghosts of what
    // the other version had and this one does not.
    setDiff(d) {
      marks = d;
      render();
    },
    select: (id) => select(id ? { node: id } : null, { focus: true }),
    undo,
    redo,
    fit,
    stats: () => ({ nodes: model.nodes.length, edges: model.edges.length, history: past.length }),
  };
}
