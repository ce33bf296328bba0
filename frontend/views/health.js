// The platform's own health (admins): how far behind the log each read model is, which agents
// are connected, and how many commands it decides, over the last hour; looked at again every
// REFRESH_MS while the page is open.

import { gql } from '../lib/api.js';
import { h, clear, pageHead, section, table, statusLine, showError, badge } from '../lib/dom.js';
import { lineChart } from '../lib/chart.js';

const REFRESH_MS = 2000;
const QUERY = `{ platformHealth(minutes: 60) { projections { name lagEvents lagSeconds rebuilding { since eventsApplied } history { at events seconds } }
  agents { state count } commands { at donePerMinute refusedPerMinute } } }`;

const points = (samples, key) => samples.map((s) => [Date.parse(s.at), s[key]]);

export async function show(root, ctx) {
  if (!ctx.isAdmin) throw Object.assign(new Error('The platform\'s health (read models, agents, commands) is for admins.'), { code: 'FORBIDDEN' });
  ctx.title('Platform health');
  const status = statusLine();
  const lagSlot = h('div', { class: 'table-scroll' });
  const lagCharts = h('div', { class: 'charts' });
  const agentsSlot = h('div');
  const commandsSlot = h('div');
  let timer = null;
  let stopped = false;

  const draw = (health) => {
    clear(lagSlot, table(['Read model', 'Events behind', 'Oldest not applied'], health.projections.map((p) => [
      h('code', {}, p.name),
      h('span', { class: p.lagEvents ? 'lagging' : '', dataset: { lag: p.name } }, String(p.lagEvents)),
      p.rebuilding
        ? h('span', { class: 'lagging', dataset: { rebuilding: p.name } },
          `being rebuilt from the log: ${p.rebuilding.eventsApplied} events applied so far; what it shows is partial until then`)
        : (p.lagEvents ? `${p.lagSeconds.toFixed(1)} s ago` : 'caught up'),
    ]), { caption: 'Read models' }));
    clear(lagCharts, ...health.projections.map((p) => lineChart({ label: `Events behind: ${p.name}`, format: (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)),
      series: [{ name: 'events', tone: p.lagEvents ? 'c' : 'a', points: points(p.history, 'events') }] })));
    clear(agentsSlot, health.agents.length
      ? h('ul', { class: 'inline-list' }, health.agents.map((a) => h('li', {}, badge(a.state.toUpperCase()), ` ${a.count}`)))
      : h('p', { class: 'muted' }, 'No node yet.'));
    clear(commandsSlot, lineChart({ label: 'Commands per minute', format: (v) => v.toFixed(0),
      series: [{ name: 'done', tone: 'b', points: points(health.commands, 'donePerMinute') },
        { name: 'refused or failed', tone: 'c', points: points(health.commands, 'refusedPerMinute') }] }));
  };

  const load = async () => {
    timer = null;
    try {
      const { platformHealth } = await gql(QUERY);
      if (!stopped) draw(platformHealth);
    } catch (e) {
      showError(status, e);
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };

  await load();
  clear(root, pageHead('Platform health', { subtitle: 'How far behind the event log the read models are, the agents, and the commands decided.' }), status,
    section('Read models', [], lagSlot, lagCharts),
    h('div', { class: 'grid-2' }, section('Agents', [], agentsSlot), section('Commands', [], commandsSlot)));
  ctx.ready();
  return () => { stopped = true; clearTimeout(timer); };
}
