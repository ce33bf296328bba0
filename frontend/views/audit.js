// The audit history (admins): every change, who made it and when, in words; filtered by who,
// what it concerns (a name its summary mentions), its type and a time range; new entries arrive
// live; older ones page in.

import { gql, live } from '../lib/api.js';
import { h, clear, pageHead, row, statusLine, showError } from '../lib/dom.js';
import { dateTime, who } from '../lib/format.js';
import { stopAll } from '../lib/follow.js';

const FIELDS = 'occurredAt actor eventType summary stream';
const COLUMNS = ['When', 'Who', 'What', 'Type'];

function entryRow(e) {
  const actor = e.actor === 'system' ? h('span', { class: 'muted' }, who(e.actor)) : who(e.actor);
  return row(COLUMNS, [h('time', { datetime: e.occurredAt }, dateTime(e.occurredAt)), actor, h('span', { class: 'wrap' }, e.summary), h('code', {}, e.eventType)]);
}

export async function show(root, ctx) {
  if (!ctx.isAdmin) throw Object.assign(new Error('The audit history is for admins. A deployment\'s own history is on its page.'), { code: 'FORBIDDEN' });
  const stops = [];
  const { users, auditEventTypes } = await gql('{ users { username } auditEventTypes }');
  const status = statusLine();
  const actor = h('select', { id: 'audit-actor', name: 'actor' }, h('option', { value: '' }, 'anyone'), h('option', { value: 'system' }, 'NullOps itself'),
    users.map((u) => h('option', { value: u.username }, u.username)));
  const mentions = h('input', { id: 'audit-mentions', name: 'mentions', type: 'search', placeholder: 'a project, deployment, node, team…', autocomplete: 'off' });
  const type = h('select', { id: 'audit-type', name: 'eventType' }, h('option', { value: '' }, 'any'), auditEventTypes.map((t) => h('option', { value: t }, t)));
  const from = h('input', { id: 'audit-from', name: 'from', type: 'datetime-local' });
  const to = h('input', { id: 'audit-to', name: 'to', type: 'datetime-local' });
  const body = h('tbody');
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Load older entries');
  const liveNote = h('p', { class: 'muted', 'aria-live': 'polite' });
  let cursor = null;
  let stopLive = () => {};

  const filter = () => {
    const f = {};
    if (actor.value) f.actor = actor.value;
    if (mentions.value.trim()) f.mentions = mentions.value.trim();
    if (type.value) f.eventType = type.value;
    if (from.value) f.from = new Date(from.value).toISOString();
    if (to.value) f.to = new Date(to.value).toISOString();
    return f;
  };

  const page = async (after) => {
    const { auditLog } = await gql(`query($f: AuditFilterInput, $p: PageInput) { auditLog(filter: $f, page: $p) { entries { ${FIELDS} } nextCursor } }`,
      { f: filter(), p: { first: 100, after } });
    cursor = auditLog.nextCursor;
    more.hidden = !cursor;
    return auditLog.entries.map(entryRow);
  };

  const reload = async () => {
    stopLive();
    clear(status, 'Loading…');
    const rows = await page(null);
    clear(body, rows.length ? rows : h('tr', { class: 'empty' }, h('td', { colSpan: COLUMNS.length }, 'Nothing matches.')));
    clear(status);
    // New entries arrive live unless the range ends in the past.
    const f = filter();
    if (f.to) {
      clear(liveNote, 'Not live: the range has an end.');
      stopLive = () => {};
      return;
    }
    delete f.from;
    clear(liveNote, 'Live: new entries appear at the top.');
    stopLive = live(`subscription($f: AuditFilterInput) { auditEvents(filter: $f) { ${FIELDS} } }`, { f }, {
      next: (d) => {
        body.querySelector('tr.empty')?.remove();
        const tr = entryRow(d.auditEvents);
        tr.classList.add('flash');
        body.prepend(tr);
      },
      resync: () => reload().catch((e) => showError(status, e)),
      error: (e) => showError(status, e),
    });
  };
  stops.push(() => stopLive());

  let typing = null;
  const onChange = () => { clearTimeout(typing); typing = setTimeout(() => reload().catch((e) => showError(status, e)), 250); };
  for (const input of [actor, mentions, type, from, to]) input.addEventListener(input === mentions ? 'input' : 'change', onChange);
  more.addEventListener('click', async () => {
    try { body.append(...(await page(cursor))); } catch (e) { showError(status, e); }
  });

  clear(root, pageHead('Audit', { subtitle: 'Every change to NullOps, who made it and when. Secrets never appear here.' }),
    h('section', { class: 'panel', 'aria-label': 'Audit history' },
      h('form', { class: 'inline-form filters', role: 'search', onsubmit: (e) => e.preventDefault() },
        h('div', { class: 'field' }, h('label', { for: 'audit-actor' }, 'Who'), actor),
        h('div', { class: 'field' }, h('label', { for: 'audit-mentions' }, 'About'), mentions),
        h('div', { class: 'field' }, h('label', { for: 'audit-type' }, 'Type'), type),
        h('div', { class: 'field' }, h('label', { for: 'audit-from' }, 'From'), from),
        h('div', { class: 'field' }, h('label', { for: 'audit-to' }, 'Until'), to)),
      status, liveNote,
      h('div', { class: 'table-scroll' }, h('table', { class: 'list', id: 'audit-list' }, h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))), body)),
      more));
  ctx.title('Audit');
  await reload();
  ctx.ready();
  return stopAll(stops);
}
