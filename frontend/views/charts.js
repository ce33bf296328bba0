// The pictures of what is measured: a node's CPU and memory over the last hour (used and
// reserved, against what it has), a deployment's services' CPU and memory over its life, and its
// traffic. Each slot reloads its samples when its page hears of a change (at most every
// REFRESH_MS: samples come every 10 s).

import { gql } from '../lib/api.js';
import { h, clear, showError } from '../lib/dom.js';
import { bytes, cpu } from '../lib/format.js';
import { lineChart } from '../lib/chart.js';

const REFRESH_MS = 3000;

const points = (samples, key) => samples.filter((s) => s[key] !== null && s[key] !== undefined).map((s) => [Date.parse(s.at), s[key]]);

// Reloads `load` into `slot` when poked, at most every REFRESH_MS.
function throttled(slot, load) {
  let last = 0;
  let timer = null;
  let stopped = false;
  const run = async () => {
    timer = null;
    last = Date.now();
    try {
      const drawn = await load();
      if (!stopped) clear(slot, ...drawn);
    } catch (e) {
      if (!stopped) showError(slot, e);
    }
  };
  return {
    poke() {
      if (timer || stopped) return;
      timer = setTimeout(run, Math.max(0, last + REFRESH_MS - Date.now()));
    },
    now: run,
    stop() { stopped = true; clearTimeout(timer); },
  };
}

// Each node of `environment`: CPU and memory over the last hour.
export function nodeCharts(slot, environment) {
  return throttled(slot, async () => {
    const { nodes } = await gql(`query($e: String!) { nodes(environment: $e) { host port usage { cpuCores memoryTotalBytes }
      usageHistory(minutes: 60) { at cpuMillicores memoryBytes cpuReservedMillicores memoryReservedBytes } } }`, { e: environment });
    if (!nodes.length) return [h('p', { class: 'muted' }, 'No node yet.')];
    return nodes.map((n) => h('div', { class: 'charts', dataset: { node: `${n.host}:${n.port}` } },
      lineChart({ label: `CPU of ${n.host}:${n.port}, last hour`, format: cpu,
        ceiling: n.usage ? { value: n.usage.cpuCores * 1000, name: `${n.usage.cpuCores} cores` } : null,
        series: [{ name: 'used', tone: 'a', points: points(n.usageHistory, 'cpuMillicores') },
          { name: 'reserved', tone: 'b', points: points(n.usageHistory, 'cpuReservedMillicores') }] }),
      lineChart({ label: `Memory of ${n.host}:${n.port}, last hour`, format: bytes,
        ceiling: n.usage ? { value: n.usage.memoryTotalBytes, name: `${bytes(n.usage.memoryTotalBytes)} in all` } : null,
        series: [{ name: 'used', tone: 'a', points: points(n.usageHistory, 'memoryBytes') },
          { name: 'reserved', tone: 'b', points: points(n.usageHistory, 'memoryReservedBytes') }] })));
  });
}

// One deployment: its services' CPU and memory, and its requests through the ingress.
export function deploymentCharts(slot, id) {
  return throttled(slot, async () => {
    const { deployment: d } = await gql(`query($id: ID!) { deployment(id: $id) { usageHistory { service samples { at cpuMillicores memoryBytes } }
      traffic { at requestsPerSecond errorRate } } }`, { id });
    const tones = ['a', 'b', 'c'];
    const tone = (i) => tones[i % tones.length];
    return [h('div', { class: 'charts' },
      lineChart({ label: 'CPU by service', format: cpu, series: d.usageHistory.map((u, i) => ({ name: u.service, tone: tone(i), points: points(u.samples, 'cpuMillicores') })) }),
      lineChart({ label: 'Memory by service', format: bytes, series: d.usageHistory.map((u, i) => ({ name: u.service, tone: tone(i), points: points(u.samples, 'memoryBytes') })) }),
      lineChart({ label: 'Requests per second through the ingress', format: (v) => v.toFixed(v < 10 ? 1 : 0),
        series: [{ name: 'requests/s', tone: 'a', points: points(d.traffic, 'requestsPerSecond') }] }),
      lineChart({ label: 'Error rate (5xx)', format: (v) => `${(v * 100).toFixed(0)}%`,
        series: [{ name: '5xx share', tone: 'c', points: points(d.traffic, 'errorRate') }] }))];
  });
}
