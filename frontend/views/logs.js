// A deployment's log viewer: everything, the pipeline (steps and plugins) or one service; lines
// arrive live (deploymentLogs) and the view follows them unless the reader scrolls up or turns
// following off; a search shows only matching lines, marked; timestamps on or off; download.

import { gql, live } from '../lib/api.js';
import { h, clear, errorText } from '../lib/dom.js';

/// Lines kept on the page; older ones are dropped (the download has up to 5000).
const KEEP = 5000;

export function logView(deploymentId, services) {
  const source = h('select', { id: 'log-source' }, h('option', { value: '' }, 'everything'), h('option', { value: 'pipeline' }, 'pipeline'),
    services.map((s) => h('option', { value: s }, s)));
  const follow = h('input', { id: 'log-follow', type: 'checkbox', checked: true });
  const times = h('input', { id: 'log-times', type: 'checkbox', checked: true });
  const search = h('input', { id: 'log-search', type: 'search', placeholder: 'text in a line', autocomplete: 'off' });
  const download = h('button', { type: 'button', class: 'btn btn-small' }, 'Download');
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const pre = h('pre', { class: 'log', id: 'log', tabindex: 0, 'aria-label': 'Log lines' });
  const lines = []; // { at, source, text, el }
  let stop = () => {};

  const matches = (l) => !search.value || l.text.toLowerCase().includes(search.value.toLowerCase());
  const paint = (l) => {
    const q = search.value;
    const textNode = [];
    if (q) {
      const lower = l.text.toLowerCase();
      let at = 0;
      for (let i = lower.indexOf(q.toLowerCase()); i >= 0; i = lower.indexOf(q.toLowerCase(), at)) {
        textNode.push(l.text.slice(at, i), h('mark', {}, l.text.slice(i, i + q.length)));
        at = i + q.length;
      }
      textNode.push(l.text.slice(at));
    } else {
      textNode.push(l.text);
    }
    return h('span', { class: 'line' }, h('span', { class: 'at' }, new Date(l.at).toLocaleTimeString(undefined, { hour12: false })),
      source.value === '' ? h('span', { class: 'src' }, l.source) : null, textNode);
  };
  const refreshStatus = () => {
    const shown = lines.filter(matches).length;
    status.textContent = search.value ? `${shown} of ${lines.length} lines match` : `${lines.length} lines`;
  };
  const add = (l) => {
    lines.push(l);
    if (lines.length > KEEP) lines.shift().el?.remove();
    if (matches(l)) {
      l.el = paint(l);
      pre.append(l.el);
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    }
    refreshStatus();
  };
  const repaint = () => {
    clear(pre, lines.filter(matches).map((l) => (l.el = paint(l))));
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
    refreshStatus();
  };
  const open = () => {
    stop();
    lines.length = 0;
    clear(pre);
    refreshStatus();
    const service = source.value || null;
    stop = live('subscription($id: ID!, $s: String) { deploymentLogs(id: $id, service: $s) { seq source at text } }', { id: deploymentId, s: service }, {
      next: (data) => add(data.deploymentLogs),
      // After a break the feed starts again with the last lines: start the view afresh too.
      resync: () => { lines.length = 0; clear(pre); },
      error: (e) => { clear(status, 'The log stopped: ', errorText(e)); },
    });
  };
  source.addEventListener('change', open);
  search.addEventListener('input', repaint);
  times.addEventListener('change', () => pre.classList.toggle('hide-times', !times.checked));
  follow.addEventListener('change', () => { if (follow.checked) pre.scrollTop = pre.scrollHeight; });
  // Scrolling up to read stops following; scrolling back to the end follows again.
  pre.addEventListener('scroll', () => {
    const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    if (follow.checked !== atEnd) follow.checked = atEnd;
  });
  download.addEventListener('click', async () => {
    const service = source.value || null;
    try {
      const { deployment } = await gql('query($id: ID!, $s: String) { deployment(id: $id) { name logs(service: $s, tail: 5000) { at source text } } }', { id: deploymentId, s: service });
      const body = deployment.logs.map((l) => `${l.at} [${l.source}] ${l.text}`).join('\n');
      const a = h('a', { href: URL.createObjectURL(new Blob([`${body}\n`], { type: 'text/plain' })), download: `${deployment.name}-${service ?? 'all'}.log` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      clear(status, 'Download failed: ', errorText(e));
    }
  });
  open();
  const element = h('div', {},
    h('div', { class: 'log-tools' },
      h('div', { class: 'field' }, h('label', { for: 'log-source' }, 'Source'), source),
      h('div', { class: 'field' }, h('label', { for: 'log-search' }, 'Search'), search),
      h('div', { class: 'field field-check' }, follow, h('label', { for: 'log-follow' }, 'Follow')),
      h('div', { class: 'field field-check' }, times, h('label', { for: 'log-times' }, 'Timestamps')),
      download),
    pre, status);
  // Shows `service`'s lines (or the pipeline's, null), searched for `text` (empty: all).
  const show = (service, text = '') => {
    const wanted = service ?? 'pipeline';
    if (source.value !== wanted) {
      source.value = wanted;
      open();
    }
    search.value = text;
    repaint();
    pre.scrollIntoView({ block: 'nearest' });
  };
  return { element, stop: () => stop(), show };
}
