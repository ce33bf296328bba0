// A line chart in SVG: time along the bottom, one or more series (each a named colour from the
// stylesheet), an optional ceiling drawn as a dashed line (what a node has, say). The figure
// says in words what it shows (its label and the latest values), so a screen reader gets the
// same as the eye; hovering shows the value under the pointer.

import { h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 640;
const HEIGHT = 160;
const PAD = { left: 56, right: 12, top: 12, bottom: 24 };

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// `series`: [{ name, tone ('a' | 'b' | 'c'), points: [[timeMs, value]] }]; `format`: value →
// text; `ceiling`: { value, name } or null; `label`: what it is, for the figure's caption.
export function lineChart({ label, series, format, ceiling = null, unit = '' }) {
  const all = series.flatMap((x) => x.points);
  const latest = series.map((x) => `${x.name} ${x.points.length ? format(x.points[x.points.length - 1][1]) : 'no data'}`).join(', ');
  const figure = h('figure', { class: 'chart', dataset: { points: String(all.length) } },
    h('figcaption', {}, h('span', { class: 'chart-title' }, label), h('span', { class: 'chart-latest' }, latest)));
  if (!all.length) {
    figure.append(h('p', { class: 'muted chart-empty' }, 'No samples yet: they come every 10 seconds.'));
    return figure;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const top = Math.max(...all.map((p) => p[1]), ceiling?.value ?? 0, 1) * 1.1;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / top) * (HEIGHT - PAD.top - PAD.bottom);
  const svg = s('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': `${label}: ${latest}`, preserveAspectRatio: 'none' });
  for (const f of [0, 0.5, 1]) {
    const v = top * f / 1.1;
    svg.append(s('line', { class: 'chart-grid', x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v) }));
    svg.append(s('text', { class: 'chart-axis', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, `${format(v)}${unit}`));
  }
  svg.append(s('text', { class: 'chart-axis', x: PAD.left, y: HEIGHT - 6 }, clock(t0)));
  svg.append(s('text', { class: 'chart-axis', x: WIDTH - PAD.right, y: HEIGHT - 6, 'text-anchor': 'end' }, clock(t1)));
  if (ceiling) {
    svg.append(s('line', { class: 'chart-ceiling', x1: PAD.left, x2: WIDTH - PAD.right, y1: y(ceiling.value), y2: y(ceiling.value) }));
    svg.append(s('text', { class: 'chart-axis', x: WIDTH - PAD.right, y: y(ceiling.value) - 4, 'text-anchor': 'end' }, ceiling.name));
  }
  for (const line of series) {
    if (!line.points.length) continue;
    const d = line.points.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('path', { class: `chart-line chart-tone-${line.tone}`, d, 'data-series': line.name }));
    // The latest sample, marked (alone, it is the whole line).
    const [tl, vl] = line.points[line.points.length - 1];
    svg.append(s('circle', { class: `chart-dot chart-tone-${line.tone}`, cx: x(tl).toFixed(1), cy: y(vl).toFixed(1), r: 3 }));
  }
  // The value under the pointer.
  const tip = h('p', { class: 'chart-tip', hidden: true });
  svg.addEventListener('pointermove', (e) => {
    const box = svg.getBoundingClientRect();
    const t = t0 + ((e.clientX - box.left) / box.width * WIDTH - PAD.left) / (WIDTH - PAD.left - PAD.right) * (t1 - t0);
    const near = series.map((line) => {
      const p = line.points.reduce((best, q) => (Math.abs(q[0] - t) < Math.abs(best[0] - t) ? q : best), line.points[0] ?? [t, 0]);
      return `${line.name} ${format(p[1])}${unit}`;
    });
    tip.textContent = `${clock(t)}: ${near.join(', ')}`;
    tip.hidden = false;
  });
  svg.addEventListener('pointerleave', () => { tip.hidden = true; });
  const legend = h('ul', { class: 'chart-legend' }, series.map((line) => h('li', {}, h('span', { class: `chart-key chart-tone-${line.tone}`, 'aria-hidden': 'true' }), line.name)));
  figure.append(svg, legend, tip);
  return figure;
}
