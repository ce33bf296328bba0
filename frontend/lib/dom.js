// Building the page: `h` makes elements, and the few widgets every view uses (a copy button, a
// status line, a state badge, a bar, a table that turns into cards on phones).

// h('a', { href: '#/x', class: 'btn', onclick: fn, dataset: { id } }, 'text', child, [more])
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key in el && !key.includes('-') && key !== 'list' && key !== 'form') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export function newId(prefix = 'id') {
  uid += 1;
  return `${prefix}-${uid}`;
}

// Words for an enum value: TOKEN_REFUSED -> "token refused".
export function words(value) {
  return String(value ?? '').toLowerCase().replaceAll('_', ' ');
}

export function capitalised(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

// A state badge; `title` explains it (the API's description of the value).
export function badge(value, title) {
  return h('span', { class: `badge badge-${String(value).toLowerCase()}`, title }, words(value));
}

// Copies `text` to the clipboard; the button says when it did.
export function copyButton(text, label = 'Copy', what = 'text') {
  const b = h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `${label} ${what}` }, label);
  b.addEventListener('click', async () => {
    const value = typeof text === 'function' ? text() : text;
    try {
      await navigator.clipboard.writeText(value);
    } catch {
      const area = h('textarea', { class: 'offscreen', readOnly: true }, value);
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    b.textContent = 'Copied';
    setTimeout(() => { b.textContent = label; }, 1500);
  });
  return b;
}

// A bar of `used` out of `total`, with its words beside it.
export function bar(used, total, text, label) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const fill = h('span', { class: 'bar-fill' });
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  const tone = share > 0.9 ? 'bar-high' : share > 0.7 ? 'bar-mid' : '';
  return h('div', { class: 'meter' },
    h('span', { class: `bar ${tone}`, role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': total, 'aria-valuenow': used, 'aria-label': label }, fill),
    h('span', { class: 'meter-text' }, text));
}

// A table whose rows become labelled cards on narrow screens: each cell carries its column's name.
export function table(columns, rows, { caption, empty = 'Nothing here yet.' } = {}) {
  const head = h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c))));
  const body = h('tbody');
  const t = h('table', { class: 'list' }, caption ? h('caption', { class: 'offscreen' }, caption) : null, head, body);
  fillTable(t, rows, empty);
  return t;
}

export function fillTable(t, rows, empty = 'Nothing here yet.') {
  const columns = [...t.tHead.rows[0].cells].map((c) => c.textContent);
  const body = t.tBodies[0];
  if (!rows.length) {
    clear(body, h('tr', { class: 'empty' }, h('td', { colSpan: columns.length }, empty)));
    return;
  }
  clear(body, rows.map((cells) => row(columns, cells)));
}

export function row(columns, cells) {
  const tr = h('tr');
  cells.forEach((cell, i) => tr.append(h('td', { dataset: { label: columns[i] } }, h('div', { class: 'cell' }, cell))));
  return tr;
}

// A line that says what is going on: loading, an error with its code, or nothing.
export function statusLine() {
  return h('p', { class: 'status-line', role: 'status', 'aria-live': 'polite' });
}

export function showError(el, error) {
  clear(el, errorText(error));
  el.classList.add('error');
}

export function errorText(error) {
  const code = error?.code;
  const message = error?.message ?? String(error);
  return [code ? h('code', { class: 'error-code' }, code) : null, ' ', message];
}

// A page section with a heading and optional actions beside it.
export function section(title, actions, ...body) {
  const id = newId('section');
  return h('section', { class: 'panel', 'aria-labelledby': id },
    h('div', { class: 'panel-head' }, h('h2', { id }, title), h('div', { class: 'actions' }, actions)),
    body);
}

export function link(href, text, props = {}) {
  return h('a', { href, ...props }, text);
}

// A definition list from [term, value] pairs.
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

// A short notice in the corner, read out by screen readers; gone after a few seconds.
export function notify(message, tone = '') {
  const box = document.getElementById('notices');
  if (!box) return;
  const n = h('p', { class: `notice ${tone ? `notice-${tone}` : ''}`, title: 'Click to dismiss' }, message);
  // A notice never stands in the way: a click dismisses it at once.
  n.addEventListener('click', () => n.remove());
  box.append(n);
  // The newest few are enough: older ones go at once, each goes after 5 s.
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => n.remove(), 5000);
}

// A page's heading, with breadcrumbs above and actions beside it.
export function pageHead(title, { crumbs = [], subtitle, actions = [] } = {}) {
  return h('div', { class: 'page-head' },
    h('div', {},
      crumbs.length ? h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, crumbs.flatMap(([href, text], i) => [i ? ' / ' : null, h('a', { href }, text)])) : null,
      h('h1', {}, title),
      subtitle ? h('p', { class: 'subtitle' }, subtitle) : null),
    h('div', { class: 'actions' }, actions));
}

// Runs `redraw()`, which replaces what `container` shows, and gives the focus back to the
// control that had it (the one with the same label), so live updates never steal a keyboard
// user's place.
export function keepFocus(container, redraw) {
  const had = document.activeElement;
  const inside = had && had !== document.body && container.contains(had);
  const key = inside ? focusKey(had) : null;
  // What was typed or chosen in the container's forms (those with an id), in document order.
  const entered = [];
  for (const form of container.querySelectorAll('form[id]')) {
    for (const c of form.elements) {
      if (!c.name || ['submit', 'button', 'file'].includes(c.type)) continue;
      const box = c.type === 'checkbox' || c.type === 'radio';
      entered.push({ form: form.id, name: c.name, value: box ? c.value : null, state: box ? c.checked : c.value });
    }
  }
  redraw();
  for (const e of entered) {
    const form = document.getElementById(e.form);
    if (!form || !container.contains(form)) continue;
    for (const c of [...form.elements].filter((x) => x.name === e.name)) {
      if (e.value !== null) {
        if (c.value === e.value) c.checked = e.state;
      } else if (c.value !== e.state && (c.tagName !== 'SELECT' || [...c.options].some((o) => o.value === e.state))) {
        c.value = e.state;
        // A choice other fields depend on (such as a grant's kind) redraws them as it would have.
        if (c.tagName === 'SELECT') c.dispatchEvent(new Event('change', { bubbles: true }));
      }
    }
  }
  if (!inside || document.contains(had)) return;
  const same = [...container.querySelectorAll(had.tagName)].find((x) => focusKey(x) === key);
  same?.focus({ preventScroll: true });
}

// Redraws with `draw`: a redraw caused by a live update keeps focus and what was being entered.
export function redraw(container, live, draw) {
  if (live) keepFocus(container, draw);
  else draw();
}

function focusKey(e) {
  return e.form?.id && e.name ? `${e.form.id}/${e.name}` : (e.getAttribute('aria-label') || e.id || e.textContent);
}
