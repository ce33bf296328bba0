// The pipeline editor's inspector: what is selected, in words and fields. A node's id (renamed
// with every edge and expression that names it), what it runs, a plugin's parameters as a form
// made from its JSON Schema (with the references that can be inserted), and the nodes it runs
// after as checkboxes (the keyboard's way to make and remove edges). Edits go through `ed.act`.

import { h, clear } from '../../lib/dom.js';
import { setFieldError } from '../../lib/forms.js';
import { schemaForm } from '../../lib/schema-form.js';
import { edgeRefusal, upstream } from '../../lib/graph.js';
import { idRefusal } from './model.js';

// Expression help for a string parameter of node `id`: what can be inserted at the cursor.
function expressionHelp(ed, id) {
  return (input) => {
    const nodeOf = (x) => ed.model.nodes.find((n) => n.id === x);
    const { secrets } = ed;
    const before = [...upstream(ed.model.edges, id)].sort();
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

const problemList = (list, label) => h('ul', { class: 'problems', 'aria-label': label },
  list.map((p) => h('li', { class: 'error' }, h('code', { class: 'error-code' }, p.code), ' ', p.message)));

// Draws the inspector for what `ed.selected` is: an edge, a node, or the pipeline as a whole.
export function showInspector(ed) {
  const { model, selected, readOnly, inspector, act } = ed;
  ed.shownForm = null;
  const nodeOf = (id) => model.nodes.find((n) => n.id === id);
  const node = selected?.node ? nodeOf(selected.node) : null;
  if (selected?.edge) {
    const [from, to] = selected.edge.split('>');
    clear(inspector, h('h2', {}, 'Edge'), h('p', {}, `${to} runs after ${from} has finished.`),
      readOnly ? null : h('button', { type: 'button', class: 'btn btn-danger', onclick: () => act.removeSelected() }, 'Remove edge'));
    return;
  }
  if (!node) {
    const totals = `${model.nodes.length} node${model.nodes.length === 1 ? '' : 's'}, ${model.edges.length} edge${model.edges.length === 1 ? '' : 's'}`;
    const loose = ed.problems.filter((p) => !p.node);
    clear(inspector, h('h2', {}, 'Pipeline'), h('p', {}, totals),
      loose.length ? problemList(loose) : null,
      h('p', { class: 'hint' }, readOnly ? 'Select a node to see what it runs.' : 'Select a node to set its parameters and what it runs after.'));
    return;
  }
  const mine = ed.problems.filter((p) => p.node === node.id);
  const idInput = h('input', { type: 'text', name: 'id', value: node.id, readOnly, spellcheck: false, autocomplete: 'off', 'aria-describedby': 'node-id-hint node-id-error' });
  idInput.id = 'node-id';
  const applyId = () => {
    const next = idInput.value.trim();
    const refusal = idRefusal(model, node.id, next);
    setFieldError(idInput, refusal);
    if (!refusal && next !== node.id) act.rename(node.id, next);
  };
  idInput.addEventListener('change', applyId);
  idInput.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); applyId(); } });
  const parts = [h('h2', {}, `Node ${node.id}`),
    h('div', { class: 'field' }, h('label', { for: 'node-id' }, 'Id'), idInput,
      h('p', { class: 'hint', id: 'node-id-hint' }, 'Other nodes use its outputs as ${{ nodes.ID.outputs.KEY }}.'), h('p', { class: 'field-error', id: 'node-id-error', hidden: true }))];
  let form = null;
  if (node.kind === 'SERVICE') {
    const s = ed.services.get(node.service);
    parts.push(h('p', {}, `Starts service ${node.service}`),
      s ? h('p', { class: 'hint' }, `${s.image}, ${s.tagMode === 'PINNED' ? `tag ${s.tag}` : 'the tag is chosen for each deployment'}; port ${s.port}. Its outputs: host and port.`) : h('p', { class: 'error' }, 'Not in the catalog.'));
  } else {
    const p = ed.plugins.get(node.plugin);
    parts.push(h('p', {}, `Runs plugin ${node.plugin}`));
    if (p) {
      parts.push(h('p', { class: 'hint' }, p.description ? `${p.description.replace(/\.?$/, '.')} ` : '', `Image ${p.repository}:${p.tag}; at most ${p.timeoutSeconds} s, ${p.cpuMillis} millicores and ${p.memoryMib} MiB (set by the plugin's definition).`));
      form = schemaForm({ schema: p.parametersSchema, value: node.parameters ?? {}, readOnly, suggest: expressionHelp(ed, node.id),
        onChange: () => {
          const { value } = form.read();
          // One typing run is one step to undo; the form stays as it is while one types.
          act.commit(() => { node.parameters = value; }, `params:${node.id}`, { redrawInspector: false });
        } });
      ed.shownForm = { node: node.id, form };
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
      box.addEventListener('change', () => (box.checked ? act.addEdge(o.id, node.id) : act.removeEdge(o.id, node.id)));
      return h('div', { class: 'field field-check' }, box, h('label', { for: box.id }, o.id), refusal ? h('small', { class: 'muted' }, ` (${refusal})`) : null);
    }) : h('p', { class: 'muted' }, 'No other node yet.')));
  const rest = form ? form.showProblems(mine) : mine;
  const idProblem = rest.find((p) => p.field === 'id');
  if (idProblem) setFieldError(idInput, idProblem.message);
  const shown = rest.filter((p) => p !== idProblem);
  if (shown.length) parts.splice(1, 0, problemList(shown, `Problems of ${node.id}`));
  if (!readOnly) parts.push(h('button', { type: 'button', class: 'btn btn-danger', onclick: () => act.removeSelected() }, 'Remove node'));
  clear(inspector, parts);
}
