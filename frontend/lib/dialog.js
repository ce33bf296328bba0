// Dialogs: forms that open over the page, and the confirmation every destructive action asks
// for. Native <dialog>: focus moves in and back, Escape closes, the page behind is inert.

import { h, newId, showError } from './dom.js';
import { formError, onSubmit, submitButton } from './forms.js';

function open(dialog, { onClose } = {}) {
  const opener = document.activeElement;
  document.body.append(dialog);
  dialog.addEventListener('close', () => {
    dialog.remove();
    onClose?.(dialog.returnValue);
    if (opener && document.contains(opener)) opener.focus();
  });
  dialog.showModal();
  const first = dialog.querySelector('[autofocus], input:not([type=hidden]):not([disabled]), select, textarea, button:not(.dialog-close)');
  first?.focus();
  return dialog;
}

function frame(title, ...body) {
  const id = newId('dialog');
  const close = h('button', { type: 'button', class: 'dialog-close', 'aria-label': 'Close' }, '×');
  const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': id },
    h('div', { class: 'dialog-head' }, h('h2', { id }, title), close), body);
  close.addEventListener('click', () => dialog.close('cancel'));
  return dialog;
}

// A form in a dialog. `run(formData, dialog)` submits it; the dialog closes when it returns
// without throwing (unless it returns false), else the error shows beside its field.
export function formDialog({ title, fields, submit = 'Save', run, intro, wide }) {
  const form = h('form', { class: 'dialog-form', method: 'dialog' }, intro ? h('p', { class: 'intro' }, intro) : null, fields, formError(),
    h('div', { class: 'dialog-actions' },
      h('button', { type: 'button', class: 'btn', onclick: () => dialog.close('cancel') }, 'Cancel'),
      submitButton(submit)));
  const dialog = frame(title, form);
  if (wide) dialog.classList.add('dialog-wide');
  onSubmit(form, async (data) => {
    const keep = await run(data, dialog);
    if (keep !== false) dialog.close('done');
  });
  return open(dialog);
}

// Shows `body` (and a Close button) in a dialog: for things shown once, such as a token.
export function infoDialog({ title, body, onClose, wide }) {
  const dialog = frame(title, h('div', { class: 'dialog-body' }, body),
    h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'btn btn-primary', onclick: () => dialog.close('done') }, 'Done')));
  if (wide) dialog.classList.add('dialog-wide');
  return open(dialog, { onClose });
}

// Says why something cannot be done yet and names every blocker (`items`: [label, href, note]),
// offering no button that must fail. Following a link leaves the dialog behind.
export function blockedDialog({ title, intro, items }) {
  const dialog = infoDialog({
    title,
    body: [h('p', {}, intro),
      h('ul', { class: 'blockers' }, items.map(([label, href, note]) => h('li', {}, h('a', { href }, label), note ? ` ${note}` : '')))],
  });
  dialog.addEventListener('click', (ev) => { if (ev.target.closest('a')) dialog.close('done'); });
  return dialog;
}

// Asks before a destructive action. `action` names it and its object ("Delete deployment
// pr-42"); resolves true when confirmed.
export function confirmAction({ title, message, action, danger = true, keep = 'Keep it' }) {
  return new Promise((resolve) => {
    let confirmed = false;
    const yes = h('button', { type: 'button', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}` }, action);
    const no = h('button', { type: 'button', class: 'btn', autofocus: true }, keep);
    const dialog = frame(title, h('div', { class: 'dialog-body' }, h('p', {}, message)), h('div', { class: 'dialog-actions' }, no, yes));
    dialog.setAttribute('role', 'alertdialog');
    yes.addEventListener('click', () => { confirmed = true; dialog.close('confirm'); });
    no.addEventListener('click', () => dialog.close('cancel'));
    open(dialog, { onClose: () => resolve(confirmed) });
  });
}

// Asks first (confirmAction); once confirmed, runs `run` (the change, and what follows it), and
// shows in `status` what went wrong.
export async function confirmThen(ask, status, run) {
  if (!(await confirmAction(ask))) return;
  try {
    await run();
  } catch (e) {
    showError(status, e);
  }
}
