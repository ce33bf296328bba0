// The pipeline editor's gestures: the pointer on the canvas (select, move a node, pan, draw an
// edge from a node's out port), the wheel (pan, Ctrl to zoom), the keys (arrows move, Delete
// removes, Escape deselects, Enter goes to the inspector, Ctrl+Z / Ctrl+Shift+Z), and the
// palette (drag an entry onto the canvas, or press it). Edits go through `ed.act`.

import { h } from '../../lib/dom.js';
import { moveEdgesOf, place, render, reveal, setTransform, toWorld, zoomBy } from './canvas.js';
import { edgePath, NODE_H, SNAP, snap } from './model.js';

export function wireCanvas(ed) {
  const { canvas, svg, act } = ed;
  const nodeOf = (id) => ed.model.nodes.find((n) => n.id === id);
  let gesture = null;

  canvas.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0) return;
    const port = ev.target.closest('.port-out');
    const node = ev.target.closest('.enode:not(.enode-ghost)');
    const edge = ev.target.closest('g.edge');
    if (port && node && !ed.readOnly) {
      gesture = { kind: 'edge', from: node.dataset.nodeId };
      ev.preventDefault();
    } else if (node) {
      const n = nodeOf(node.dataset.nodeId);
      act.select({ node: n.id });
      gesture = { kind: 'move', id: n.id, start: toWorld(ed, ev.clientX, ev.clientY), origin: { x: n.x, y: n.y }, moved: false };
    } else if (edge) {
      act.select({ edge: edge.dataset.edge });
      gesture = null;
      return;
    } else {
      gesture = { kind: 'pan', start: { x: ev.clientX, y: ev.clientY }, origin: { ...ed.view }, moved: false };
    }
    canvas.setPointerCapture(ev.pointerId);
  });

  canvas.addEventListener('pointermove', (ev) => {
    if (!gesture) return;
    if (gesture.kind === 'move' && !ed.readOnly) {
      const started = performance.now();
      const at = toWorld(ed, ev.clientX, ev.clientY);
      const n = nodeOf(gesture.id);
      const x = snap(gesture.origin.x + at.x - gesture.start.x);
      const y = snap(gesture.origin.y + at.y - gesture.start.y);
      if (x === n.x && y === n.y) return;
      // The whole drag is one step to undo.
      if (!gesture.moved) { act.remember(); gesture.moved = true; }
      n.x = x;
      n.y = y;
      place(ed.nodeElements.get(n.id), n);
      moveEdgesOf(ed, n.id);
      performance.measure?.('editor:drag-frame', { start: started, end: performance.now() });
    } else if (gesture.kind === 'pan') {
      const dx = ev.clientX - gesture.start.x;
      const dy = ev.clientY - gesture.start.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) gesture.moved = true;
      ed.view = { ...ed.view, x: gesture.origin.x + dx, y: gesture.origin.y + dy };
      setTransform(ed);
    } else if (gesture.kind === 'edge') {
      const a = nodeOf(gesture.from);
      const b = toWorld(ed, ev.clientX, ev.clientY);
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
      if (target && target.dataset.nodeId !== g.from) act.addEdge(g.from, target.dataset.nodeId);
      else if (target) act.say('Edge refused: an edge cannot lead from a node to itself.', true);
      else act.say(`No edge: drop it on the node that should run after ${g.from}.`);
    } else if (g.kind === 'move' && g.moved) {
      act.changed();
      act.say(`Moved ${g.id}.`);
    } else if (g.kind === 'pan' && !g.moved) {
      act.select(null);
    }
  };
  canvas.addEventListener('pointerup', endGesture);
  canvas.addEventListener('pointercancel', () => { gesture = null; svg.querySelector('.edge-draft')?.setAttribute('d', ''); });

  canvas.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    if (ev.ctrlKey || ev.metaKey) {
      const rect = canvas.getBoundingClientRect();
      zoomBy(ed, ev.deltaY < 0 ? 1.1 : 1 / 1.1, { x: ev.clientX - rect.left, y: ev.clientY - rect.top });
    } else {
      ed.view = { ...ed.view, x: ed.view.x - ev.deltaX, y: ed.view.y - ev.deltaY };
      render(ed);
    }
  }, { passive: false });

  canvas.addEventListener('focusin', (ev) => {
    const node = ev.target.closest?.('.enode:not(.enode-ghost)');
    if (node && ed.selected?.node !== node.dataset.nodeId) act.select({ node: node.dataset.nodeId }, { focus: false });
  });

  canvas.addEventListener('keydown', (ev) => {
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    const { selected } = ed;
    if (arrows[ev.key] && selected?.node && !ed.readOnly) {
      ev.preventDefault();
      const [dx, dy] = arrows[ev.key];
      const step = ev.shiftKey ? SNAP * 5 : SNAP;
      const n = nodeOf(selected.node);
      act.commit(() => { n.x += dx * step; n.y += dy * step; }, `move:${n.id}`);
      reveal(ed, n);
      ed.nodeElements.get(n.id)?.focus({ preventScroll: true });
    } else if ((ev.key === 'Delete' || ev.key === 'Backspace') && selected && !ed.readOnly) {
      ev.preventDefault();
      act.removeSelected();
    } else if (ev.key === 'Escape') {
      act.select(null);
      canvas.focus({ preventScroll: true });
    } else if (ev.key === 'Enter' && selected?.node && ev.target.closest?.('.enode')) {
      ev.preventDefault();
      ed.inspector.querySelector('input, select, textarea, button')?.focus();
    } else if (ev.key === '+' || ev.key === '=') {
      zoomBy(ed, 1.2);
    } else if (ev.key === '-') {
      zoomBy(ed, 1 / 1.2);
    }
  });

  ed.el.addEventListener('keydown', (ev) => {
    if (!(ev.ctrlKey || ev.metaKey) || ed.readOnly) return;
    // Typing in a field undoes the typing, not the graph.
    if (ev.target.matches?.('input, textarea')) return;
    const key = ev.key.toLowerCase();
    if (key === 'z' && !ev.shiftKey) { ev.preventDefault(); act.undo(); }
    else if ((key === 'z' && ev.shiftKey) || key === 'y') { ev.preventDefault(); act.redo(); }
  });
}

// The palette of the catalog's services and plugins.
export function palette(ed) {
  const { catalog, act } = ed;
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
      if (drag.ghost) drag.ghost.style.transform = `translate(${ev.clientX - 20}px, ${ev.clientY - 20}px) scale(${ed.view.zoom})`;
    });
    b.addEventListener('pointerup', (ev) => {
      const d = drag;
      drag = null;
      if (!d?.ghost) return;
      d.ghost.remove();
      b.dataset.dragged = 'yes';
      const rect = ed.canvas.getBoundingClientRect();
      if (ev.clientX < rect.left || ev.clientX > rect.right || ev.clientY < rect.top || ev.clientY > rect.bottom) {
        act.say('Drop it on the canvas to add it.');
        return;
      }
      act.addNode(kind, name, toWorld(ed, ev.clientX - 20, ev.clientY - 20));
    });
    b.addEventListener('click', () => {
      // A drag ends in a click on the entry itself: it already added the node.
      if (b.dataset.dragged) { delete b.dataset.dragged; return; }
      act.addNode(kind, name);
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
