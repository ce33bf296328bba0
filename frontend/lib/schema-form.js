// A form for a plugin's parameters, made from its JSON Schema: one labelled control per
// property (a list for an enum, a box for a boolean, a line for a string or number, JSON for
// anything nested), required fields marked, descriptions as hints, defaults as placeholders,
// and the schema's rules checked as one types. The server checks again with a full JSON Schema
// validator; these are the rules people meet most, so the form can say at once what is wrong.

import { h, newId } from './dom.js';
import { setFieldError } from './forms.js';

// What a property's control is made from.
function kindOf(prop) {
  if (Array.isArray(prop.enum)) return 'enum';
  const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== 'null') : prop.type;
  if (['string', 'integer', 'number', 'boolean'].includes(type)) return type;
  return 'json';
}

// Why `raw` (as typed) is not a valid value of `prop`, or null; and the value it stands for.
export function parse(prop, raw, required) {
  const kind = kindOf(prop);
  if (kind === 'boolean') return { value: raw };
  if (raw === '' || raw === undefined) return required ? { problem: 'Required: give a value.', code: 'MISSING_PARAMETER' } : { empty: true };
  let value = raw;
  if (kind === 'integer' || kind === 'number') {
    value = Number(raw);
    if (!Number.isFinite(value) || (kind === 'integer' && !Number.isInteger(value))) {
      return { problem: kind === 'integer' ? 'Use a whole number.' : 'Use a number.', code: 'BAD_PARAMETER' };
    }
    if (prop.minimum !== undefined && value < prop.minimum) return { problem: `Use ${prop.minimum} or more.`, code: 'BAD_PARAMETER' };
    if (prop.maximum !== undefined && value > prop.maximum) return { problem: `Use ${prop.maximum} or less.`, code: 'BAD_PARAMETER' };
  } else if (kind === 'json') {
    try { value = JSON.parse(raw); } catch (e) { return { problem: `Not JSON: ${e.message}`, code: 'BAD_PARAMETER' }; }
  } else if (kind === 'enum') {
    value = prop.enum.find((v) => String(v) === raw) ?? raw;
  } else if (kind === 'string') {
    const n = [...raw].length;
    if (prop.minLength !== undefined && n < prop.minLength) return { problem: `Use at least ${prop.minLength} characters.`, code: 'BAD_PARAMETER' };
    if (prop.maxLength !== undefined && n > prop.maxLength) return { problem: `Use at most ${prop.maxLength} characters.`, code: 'BAD_PARAMETER' };
    // An expression is filled in when the step runs: the pattern applies to what it becomes.
    if (prop.pattern && !raw.includes('${{')) {
      try {
        if (!new RegExp(prop.pattern, 'u').test(raw)) return { problem: `Must match ${prop.pattern}.`, code: 'BAD_PARAMETER' };
      } catch { /* a pattern the browser cannot read: the server has the last word */ }
    }
  }
  return { value };
}

// The controls for `schema` holding `value`. `suggest(input)` may add expression help beside a
// string's control. `onChange()` runs after every edit. Returns { el, read() -> { value,
// problems: [{ field, code, message }] }, showProblems(list) }.
export function schemaForm({ schema, value = {}, readOnly = false, suggest, onChange }) {
  const props = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  const controls = [];
  const el = h('div', { class: 'schema-form' });
  const names = Object.keys(props);
  if (!names.length) el.append(h('p', { class: 'muted' }, 'This plugin takes no parameters.'));
  for (const name of names) {
    const prop = props[name] ?? {};
    const kind = kindOf(prop);
    const id = newId(`param-${name}`);
    const field = `parameters.${name}`;
    const has = Object.hasOwn(value, name);
    const current = has ? value[name] : undefined;
    let input;
    if (kind === 'enum') {
      input = h('select', { id, name: field, disabled: readOnly },
        required.has(name) ? null : h('option', { value: '' }, prop.default !== undefined ? `(default: ${prop.default})` : '(not set)'),
        prop.enum.map((v) => h('option', { value: String(v), selected: has && String(current) === String(v) }, String(v))));
    } else if (kind === 'boolean') {
      input = h('input', { id, name: field, type: 'checkbox', disabled: readOnly });
      input.checked = has ? Boolean(current) : Boolean(prop.default);
    } else if (kind === 'json') {
      input = h('textarea', { id, name: field, rows: 3, spellcheck: false, readOnly, class: 'mono' }, has ? JSON.stringify(current, null, 2) : '');
    } else {
      input = h('input', { id, name: field, type: 'text', readOnly, spellcheck: false, autocomplete: 'off',
        inputMode: kind === 'string' ? null : 'decimal', value: has ? String(current) : '' });
    }
    if (prop.default !== undefined && kind !== 'boolean' && kind !== 'enum') input.placeholder = `default: ${JSON.stringify(prop.default)}`;
    input.dataset.field = field;
    if (required.has(name)) input.setAttribute('aria-required', 'true');
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    input.setAttribute('aria-describedby', [prop.description ? hintId : null, errorId].filter(Boolean).join(' '));
    const typeWords = kind === 'enum' ? `one of ${prop.enum.join(', ')}` : kind === 'json' ? 'JSON' : kind;
    const label = h('label', { for: id, class: required.has(name) ? 'required' : null }, prop.title ?? name, ' ', h('small', { class: 'muted' }, `(${typeWords})`));
    const help = kind === 'string' && !readOnly && suggest ? suggest(input) : null;
    const wrap = kind === 'boolean'
      ? h('div', { class: 'field field-check' }, input, label)
      : h('div', { class: 'field' }, label, help ? h('div', { class: 'with-help' }, input, help) : input);
    if (prop.description) wrap.append(h('p', { class: 'hint', id: hintId }, prop.description));
    wrap.append(h('p', { class: 'field-error', id: errorId, hidden: true }));
    el.append(wrap);
    controls.push({ name, prop, kind, input, touched: has });
    const edited = () => {
      const c = controls.find((x) => x.input === input);
      c.touched = true;
      const { problem } = readOne(c);
      setFieldError(input, problem ?? null);
      onChange?.();
    };
    input.addEventListener(kind === 'boolean' || kind === 'enum' ? 'change' : 'input', edited);
  }

  const readOne = (c) => parse(c.prop, c.kind === 'boolean' ? c.input.checked : c.input.value.trim(), required.has(c.name));

  const read = () => {
    const out = {};
    const problems = [];
    for (const c of controls) {
      // A box never ticked and absent before stays absent (the plugin's default applies).
      if (c.kind === 'boolean' && !c.touched && !c.input.checked) continue;
      const r = readOne(c);
      if (r.problem) {
        problems.push({ field: `parameters.${c.name}`, code: r.code, message: r.problem });
        // Kept as typed: the graph holds what the form shows, and its checks say what is wrong.
        const raw = c.input.value.trim();
        if (raw !== '') out[c.name] = raw;
      } else if (!r.empty) out[c.name] = r.value;
    }
    // Properties the schema does not list are kept as they were.
    for (const [k, v] of Object.entries(value)) if (!Object.hasOwn(props, k)) out[k] = v;
    return { value: out, problems };
  };

  // Shows problems (`field` as `parameters.NAME`) beside their controls; others are returned.
  const showProblems = (list) => {
    const rest = [];
    for (const c of controls) setFieldError(c.input, null);
    for (const p of list) {
      const c = controls.find((x) => p.field === `parameters.${x.name}` || p.field?.startsWith(`parameters.${x.name}.`));
      if (c) setFieldError(c.input, p.message);
      else rest.push(p);
    }
    return rest;
  };

  return { el, read, showProblems };
}

// The problems of a stored `value` against `schema`, without a form: what the editor marks on
// a node it has not opened.
export function problemsOf(schema, value = {}) {
  const props = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  const out = [];
  for (const [name, prop] of Object.entries(props)) {
    const has = Object.hasOwn(value, name);
    const v = value[name];
    const raw = !has ? '' : typeof v === 'string' ? v : kindOf(prop ?? {}) === 'json' ? JSON.stringify(v) : kindOf(prop ?? {}) === 'boolean' ? v : String(v);
    const r = parse(prop ?? {}, raw, required.has(name));
    if (r.problem) out.push({ field: `parameters.${name}`, code: r.code, message: r.problem });
  }
  return out;
}
