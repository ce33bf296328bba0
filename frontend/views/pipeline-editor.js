// The pipeline editor: a canvas of nodes joined by edges, a palette of the catalog's services
// and plugins to drag onto it, and an inspector for the selected node. Every change can be
// undone; everything the mouse does, the keyboard can do: palette entries are buttons, nodes
// take the focus and move with the arrow keys, the inspector's "Runs after" boxes make and
// remove edges.
//
// Its parts, in `editor/`: `model.js` (the graph and every rule about it, pure, unit-tested in
// the browser suite), `canvas.js` (drawing and the view), `interaction.js` (pointer, keys,
// palette) and `inspector.js`. This module holds the editor's state `ed`, the edits as steps to
// undo (`ed.act`), and the API the pipeline page uses; the page around it loads and saves.

import { h } from '../lib/dom.js';
import { edgeRefusal } from '../lib/graph.js';
import { createCanvas, fit, render, reveal, zoomBy } from './editor/canvas.js';
import { showInspector } from './editor/inspector.js';
import { palette, wireCanvas } from './editor/interaction.js';
import * as graph from './editor/model.js';

export { localProblems } from './editor/model.js';

export function pipelineEditor({ catalog, secrets = [], readOnly = false, onChange = () => {} }) {
  const { svg, world, canvas } = createCanvas(readOnly);
  const status = h('p', { class: 'canvas-status', role: 'status', 'aria-live': 'polite' });
  const ed = {
    catalog,
    readOnly,
    secrets,
    services: new Map(catalog.services.map((s) => [s.name, s])),
    plugins: new Map(catalog.plugins.map((p) => [p.name, p])),
    model: graph.emptyModel(),
    view: { x: 0, y: 0, zoom: 1 },
    selected: null, // { node } or { edge }
    problems: [],
    marks: null, // a diff: { nodes: Map(id -> {kind, detail}), edges: Map(key -> {kind}), removed: {nodes, edges} }
    history: new graph.History(),
    shownForm: null, // the parameters form in the inspector, with the node it edits
    nodeElements: new Map(),
    svg,
    world,
    canvas,
    inspector: h('aside', { class: 'inspector', 'aria-label': 'Selected node' }),
  };
  const snapshot = () => JSON.stringify({ model: ed.model, selected: ed.selected });
  const problemsNow = () => graph.localProblems(ed.model, ed);

  // What the last gesture did, or why it was refused, under the canvas.
  function say(message, bad = false) {
    status.textContent = message;
    status.classList.toggle('error', bad);
  }

  // After any edit: the browser's own checks replace what was marked (a server's answer was
  // about the graph as it was), then everything is drawn again.
  function changed({ redrawInspector = true } = {}) {
    ed.problems = problemsNow();
    render(ed);
    if (redrawInspector) showInspector(ed);
    else if (ed.shownForm) ed.shownForm.form.showProblems(ed.problems.filter((p) => p.node === ed.shownForm.node));
    onChange();
  }

  // Applies `change` to the model as one step to undo (`key`: edits with the same key within
  // a second of each other are one step).
  function commit(change, key = null, { redrawInspector = true } = {}) {
    ed.history.record(snapshot(), key, Date.now());
    change();
    changed({ redrawInspector });
  }

  function restore(text) {
    const s = JSON.parse(text);
    ed.model = s.model;
    ed.selected = s.selected;
    changed();
  }

  function undo() {
    if (ed.readOnly) return;
    const back = ed.history.undo(snapshot());
    if (back === null) return;
    restore(back);
    say('Undone.');
  }

  function redo() {
    if (ed.readOnly) return;
    const forth = ed.history.redo(snapshot());
    if (forth === null) return;
    restore(forth);
    say('Redone.');
  }

  function select(what, { focus = false } = {}) {
    ed.selected = what;
    render(ed);
    showInspector(ed);
    if (focus && what?.node) ed.nodeElements.get(what.node)?.focus({ preventScroll: true });
  }

  function addNode(kind, name, at) {
    let node = null;
    commit(() => {
      node = graph.addNode(ed.model, kind, name, at);
      ed.selected = { node: node.id };
    });
    say(`Added node ${node.id} (${graph.whatItRuns(node)}).`);
    reveal(ed, node);
    ed.nodeElements.get(node.id)?.focus({ preventScroll: true });
    return node.id;
  }

  function addEdge(from, to) {
    const refusal = edgeRefusal(ed.model.nodes, ed.model.edges, from, to);
    if (refusal) {
      say(`Edge refused: ${refusal}.`, true);
      const target = ed.nodeElements.get(to);
      target?.classList.add('refused');
      setTimeout(() => target?.classList.remove('refused'), 1200);
      return false;
    }
    commit(() => { graph.addEdge(ed.model, from, to); });
    say(`${to} now runs after ${from}.`);
    return true;
  }

  function removeEdge(from, to) {
    commit(() => {
      graph.removeEdge(ed.model, from, to);
      if (ed.selected?.edge === graph.edgeKey({ from, to })) ed.selected = null;
    });
    say(`${to} no longer runs after ${from}.`);
  }

  function removeSelected() {
    const { selected } = ed;
    if (ed.readOnly || !selected) return;
    if (selected.node) {
      const id = selected.node;
      commit(() => {
        graph.removeNode(ed.model, id);
        ed.selected = null;
      });
      say(`Removed node ${id} and its edges.`);
    } else if (selected.edge) {
      const [from, to] = selected.edge.split('>');
      removeEdge(from, to);
    }
    canvas.focus({ preventScroll: true });
  }

  function rename(oldId, newId) {
    commit(() => {
      graph.rename(ed.model, oldId, newId);
      ed.selected = { node: newId };
    });
    say(`Renamed ${oldId} to ${newId}.`);
  }

  function tidyUp() {
    commit(() => graph.tidyUp(ed.model));
    fit(ed);
    say('Laid out in stages.');
  }

  ed.act = {
    say, changed, commit, undo, redo, select, addNode, addEdge, removeEdge, removeSelected, rename,
    // The state before a gesture that edits as it goes (a drag), as one step to undo.
    remember: () => ed.history.record(snapshot(), null, Date.now()),
  };

  ed.zoomText = h('output', { class: 'zoom-text', 'aria-label': 'Zoom' }, '100%');
  ed.undoButton = h('button', { type: 'button', class: 'btn btn-small', onclick: () => undo(), title: 'Undo (Ctrl+Z)' }, 'Undo');
  ed.redoButton = h('button', { type: 'button', class: 'btn btn-small', onclick: () => redo(), title: 'Redo (Ctrl+Shift+Z)' }, 'Redo');
  const zoom = (factor) => () => zoomBy(ed, factor);
  const toolbar = h('div', { class: 'canvas-toolbar', role: 'toolbar', 'aria-label': 'Canvas' },
    readOnly ? null : [ed.undoButton, ed.redoButton, h('button', { type: 'button', class: 'btn btn-small', onclick: () => tidyUp(), title: 'Lay the nodes out in stages' }, 'Tidy layout')],
    h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Zoom out', onclick: zoom(1 / 1.2) }, '−'), ed.zoomText,
    h('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Zoom in', onclick: zoom(1.2) }, '+'),
    h('button', { type: 'button', class: 'btn btn-small', onclick: () => fit(ed) }, 'Fit'));
  ed.el = h('div', { class: `editor${readOnly ? ' editor-read-only' : ''}` },
    readOnly ? null : palette(ed), h('div', { class: 'canvas-wrap' }, toolbar, canvas, status), ed.inspector);
  wireCanvas(ed);

  return {
    el: ed.el,
    // Shows a saved version (or a draft): its nodes where it drew them, the rest laid out.
    load(version, { keepView = false } = {}) {
      const started = performance.now();
      ed.model = graph.fromVersion(version);
      ed.selected = null;
      ed.problems = [];
      ed.history.clear();
      render(ed);
      showInspector(ed);
      if (!keepView) fit(ed);
      // Drawn, with the layout done: what the tests report as the time to draw a pipeline.
      performance.measure?.('editor:load', { start: started, end: performance.now() });
    },
    // The graph as savePipeline and dryRunPipeline take it.
    draft: () => graph.toDraft(ed.model),
    isEmpty: () => !ed.model.nodes.length,
    // The project's secret names now (a secret set or deleted elsewhere).
    setSecrets(names) {
      ed.secrets = names;
      ed.problems = problemsNow();
      render(ed);
      if (ed.shownForm) ed.shownForm.form.showProblems(ed.problems.filter((p) => p.node === ed.shownForm.node));
    },
    localProblems: problemsNow,
    // Marks `list` ({ node, field, code, message }) on their nodes and in the inspector.
    setProblems(list) {
      ed.problems = list;
      render(ed);
      showInspector(ed);
    },
    // Marks a diff on the canvas: nodes and edges added or changed here, and ghosts of what
    // the other version had and this one does not.
    setDiff(d) {
      ed.marks = d;
      render(ed);
    },
    select: (id) => select(id ? { node: id } : null, { focus: true }),
    undo,
    redo,
    fit: () => fit(ed),
    stats: () => ({ nodes: ed.model.nodes.length, edges: ed.model.edges.length, history: ed.history.past.length }),
  };
}
