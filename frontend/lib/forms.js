// Forms: labelled fields with a place for their error, the server's rules checked as one types
// (the server checks again and has the last word), and an error from the API shown beside the
// field it names (extensions.field) or, failing that, under the form.

import { h, newId, clear, errorText } from './dom.js';

// The server's input rules, mirrored (services/domain/src/names.rs and tags.rs); each returns
// what is wrong, or null. A test compares them with the server's answers.
export const rules = {
  dnsLabel(v) {
    return /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(v) ? null
      : 'Use 1 to 63 lower-case letters, digits or “-”, not starting or ending with “-”.';
  },
  domain(v) {
    const labels = v.toLowerCase().split('.');
    return v.length <= 253 && labels.every((l) => !rules.dnsLabel(l)) ? null : 'Use a domain name such as qa.example.com.';
  },
  username(v) {
    return /^[a-z0-9][a-z0-9._-]{0,63}$/.test(v) ? null
      : 'Use 1 to 64 lower-case letters, digits, “.”, “_” or “-”, starting with a letter or digit.';
  },
  password(v) {
    return [...v].length >= 10 ? null : 'Use at least 10 characters.';
  },
  secretName(v) {
    return /^[A-Z_][A-Z0-9_]{0,127}$/.test(v) ? null : 'Use upper-case letters, digits and “_”, not starting with a digit (e.g. DB_PASSWORD).';
  },
  tag(v) {
    return /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(v) ? null : 'Use letters, digits, “.”, “_” and “-” (at most 128).';
  },
  tagPattern(v) {
    return /^[A-Za-z0-9._*?-]{1,128}$/.test(v) ? null : 'Use letters, digits, “.”, “_”, “-” and the wildcards * and ?, such as v* or 1.2.*.';
  },
  port(v) {
    const n = Number(v);
    return Number.isInteger(n) && n >= 1 && n <= 65535 ? null : 'Use a port from 1 to 65535.';
  },
  json(v) {
    try { JSON.parse(v); return null; } catch (e) { return `Not JSON: ${e.message}`; }
  },
};

// A labelled control. `control` defaults to an <input>; pass `options` for a <select>,
// `multiline` for a <textarea>. `check` is a rule run as one types.
export function field({ label, name, type = 'text', value, hint, options, multiline, check, required, control, ...attrs }) {
  const id = newId(name ?? 'field');
  const hintId = hint ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  let input = control;
  if (!input && options) {
    input = h('select', { id, name, required });
    for (const o of options) {
      const [v, text] = Array.isArray(o) ? o : [o, o];
      input.append(h('option', { value: v, selected: String(v) === String(value ?? '') }, text));
    }
  } else if (!input && multiline) {
    input = h('textarea', { id, name, required, rows: multiline === true ? 4 : multiline, ...attrs }, value ?? '');
  } else if (!input) {
    input = h('input', { id, name, type, required, ...attrs });
    if (value !== undefined && value !== null) {
      if (type === 'checkbox') input.checked = Boolean(value);
      else input.value = value;
    }
  } else {
    input.id = id;
  }
  input.setAttribute('aria-describedby', [hintId, errorId].filter(Boolean).join(' '));
  const error = h('p', { class: 'field-error', id: errorId, hidden: true });
  if (check) {
    input.dataset.check = 'yes';
    input.addEventListener('blur', () => validate(input, check));
    input.addEventListener('input', () => { if (!error.hidden) validate(input, check); });
    input._check = check;
  }
  const wrap = type === 'checkbox'
    ? h('div', { class: 'field field-check' }, input, h('label', { for: id }, label), hint ? h('p', { class: 'hint', id: hintId }, hint) : null, error)
    : h('div', { class: 'field' }, h('label', { for: id, class: required ? 'required' : null }, label), input,
      hint ? h('p', { class: 'hint', id: hintId }, hint) : null, error);
  return wrap;
}

function errorOf(input) {
  return document.getElementById(`${input.id}-error`);
}

function validate(input, check) {
  const value = input.value.trim();
  const problem = value === '' ? null : check(value);
  setFieldError(input, problem);
  return !problem;
}

export function setFieldError(input, message) {
  const error = errorOf(input);
  if (!error) return;
  if (message) {
    clear(error, message);
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
  } else {
    error.hidden = true;
    clear(error);
    input.removeAttribute('aria-invalid');
  }
}

// The form's own error line (for errors not about one field).
export function formError() {
  return h('p', { class: 'form-error', role: 'alert', hidden: true });
}

function formErrorOf(form) {
  return form.querySelector(':scope .form-error');
}

export function clearErrors(form) {
  form.querySelectorAll('[aria-invalid]').forEach((i) => setFieldError(i, null));
  const e = formErrorOf(form);
  if (e) { e.hidden = true; clear(e); }
}

// Shows `error` beside the field it names (an input whose name or data-field is that field, or
// ends with it: `input.baseDomain` finds baseDomain), else under the form.
export function showFormError(form, error) {
  const field = error?.field;
  if (field) {
    const last = field.split('.').pop();
    const input = form.querySelector(`[name="${CSS.escape(field)}"], [data-field="${CSS.escape(field)}"]`)
      ?? form.querySelector(`[name="${CSS.escape(last)}"], [data-field="${CSS.escape(last)}"]`);
    if (input) {
      setFieldError(input, errorText(error));
      input.focus();
      return;
    }
  }
  const e = formErrorOf(form);
  if (e) {
    clear(e, errorText(error));
    e.hidden = false;
  }
}

// Runs the client-side checks of `form`'s fields: false (with the messages shown) when one fails.
export function checkFields(form) {
  let ok = true;
  for (const input of form.querySelectorAll('[data-check]')) {
    if (input.closest('[hidden]')) continue;
    if (!validate(input, input._check)) ok = false;
  }
  const first = form.querySelector('[aria-invalid="true"]');
  first?.focus();
  return ok;
}

// Submits `form` with `run(formData)`: the button is busy meanwhile, errors go beside their fields.
export function onSubmit(form, run) {
  form.noValidate = false;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    if (!form.reportValidity() || !checkFields(form)) return;
    const button = ev.submitter ?? form.querySelector('button[type=submit]');
    button?.setAttribute('aria-busy', 'true');
    if (button) button.disabled = true;
    try {
      await run(new FormData(form));
    } catch (e) {
      showFormError(form, e);
    } finally {
      button?.removeAttribute('aria-busy');
      if (button) button.disabled = false;
    }
  });
  return form;
}

export function submitButton(text, props = {}) {
  return h('button', { type: 'submit', class: 'btn btn-primary', ...props }, text);
}

// The value of a field as a trimmed string, or null when empty.
export function text(data, name) {
  const v = data.get(name);
  if (v === null) return null;
  const t = String(v).trim();
  return t === '' ? null : t;
}

export function int(data, name) {
  const t = text(data, name);
  return t === null ? null : Number(t);
}
