// The start: for admins, what to set up and in which order (each step says whether it is done
// and links to where it is done), then a summary; for users, what they may deploy and their
// deployments.

import { gql } from '../lib/api.js';
import { h, clear, pageHead, section, table, statusLine, showError } from '../lib/dom.js';
import { shortTime, who } from '../lib/format.js';
import { followCatalog, stopAll } from '../lib/follow.js';
import { ended, stateBadge, serviceLinks } from './deployments.js';

const QUERY = `{ registries { name } services { name } plugins { name } environments { name } nodes { environment status }
  projects { name environments deployableEnvironments pipeline { version } }
  teams { name members grants { target } } deployments(includeEnded: true) { id name project environment state stage createdBy createdAt failure { reason } services { name url healthy } } }`;

// The set-up steps, in order: [done, title, what it is, link, link text].
function steps(d) {
  const online = d.nodes.filter((n) => n.status === 'ONLINE');
  const withPipeline = d.projects.filter((p) => p.pipeline);
  const firstEnv = d.environments[0]?.name;
  const firstProject = d.projects[0]?.name;
  return [
    [d.registries.some((r) => r.name !== 'docker-hub') || d.services.length > 0, 'Add a container registry',
      'Where your images are. Docker Hub is there already; add your private registry with its credentials.', '#/catalog/registries', 'Registries'],
    [d.services.length > 0, 'Define services', 'The images a deployment runs: each pinned to a tag, or selectable by a pattern.', '#/catalog/services', 'Services'],
    [d.plugins.length > 0, 'Add plugins (optional)', 'Containers a pipeline runs with JSON in and out: create a database, load test data.', '#/catalog/plugins', 'Plugins'],
    [d.environments.length > 0, 'Create an environment', 'A base domain for the URLs, and how long deployments live.', '#/environments', 'Environments'],
    [online.length > 0, 'Add a node and start its agent', 'A Docker host that runs the deployments; its agent is one docker run away.',
      firstEnv ? `#/environments/${encodeURIComponent(firstEnv)}` : '#/environments', 'Nodes'],
    [d.projects.some((p) => p.environments.length), 'Create a project', 'Where it deploys, its CPU and memory limits, its secrets.', '#/projects', 'Projects'],
    [withPipeline.length > 0, 'Save its pipeline', 'Which services and plugin steps run, in what order.',
      firstProject ? `#/projects/${encodeURIComponent(firstProject)}/pipeline` : '#/projects', 'Pipeline'],
    [d.teams.some((t) => t.members.length && t.grants.length), 'Give a team access', 'Teams get FULL (deploy) or READ_ONLY (look) access to projects or environments.', '#/teams', 'Teams'],
    [d.deployments.length > 0, 'Deploy', 'Pick versions and get a working environment with its own URLs.', '#/deployments/new', 'New deployment'],
  ];
}

export async function show(root, ctx) {
  const stops = [];
  const status = statusLine();
  const body = h('div', { class: 'stack' });
  clear(root, pageHead(`Welcome, ${ctx.me.username}`, { subtitle: 'NullOps gives every engineer an isolated QA environment of the versions they pick.' }), status, body);
  ctx.title('Start');

  const load = async () => {
    const d = await gql(QUERY);
    const parts = [];
    const demo = d.projects.find((p) => p.name === 'demo' && p.pipeline && p.deployableEnvironments.length);
    if (demo) {
      parts.push(h('section', { class: 'panel callout', 'aria-label': 'Demo' },
        h('h2', {}, 'Try the demo'),
        h('p', {}, 'Project demo is ready to deploy: two services (one pinned, one whose version you pick) and a plugin step, built from NullOps\'s own example images. No registry to set up.'),
        h('a', { class: 'btn btn-primary', href: `#/deployments/new?project=demo&environment=${encodeURIComponent(demo.deployableEnvironments[0])}` }, 'Deploy the demo')));
    }
    if (ctx.isAdmin) {
      const list = steps(d);
      const next = list.findIndex(([done]) => !done);
      if (next >= 0) {
        parts.push(section('Set up NullOps', [], h('p', { class: 'intro' }, next === 0 ? 'An empty install: these steps, in this order, make it deploy.' : `Step ${next + 1} is next.`),
          h('ol', { class: 'checklist', id: 'setup-steps' }, list.map(([done, title, what, href, text], i) => h('li', { class: done ? 'done' : i === next ? 'next' : '' },
            h('span', { class: 'mark', 'aria-hidden': 'true' }, done ? '✓' : String(i + 1)),
            h('div', {}, h('strong', {}, title, done ? h('span', { class: 'offscreen' }, ' (done)') : ''), h('p', {}, what)),
            h('a', { class: `btn btn-small ${i === next ? 'btn-primary' : ''}`, href }, text))))));
      }
      parts.push(h('div', { class: 'tiles' },
        [['#/deployments', d.deployments.filter((x) => !ended(x)).length, 'deployments now'],
          ['#/projects', d.projects.length, 'projects'], ['#/catalog/services', d.services.length, 'services'],
          ['#/environments', `${d.nodes.filter((n) => n.status === 'ONLINE').length}/${d.nodes.length}`, 'nodes online'],
          ['#/teams', d.teams.length, 'teams']].map(([href, n, label]) => h('a', { class: 'tile', href }, h('strong', {}, String(n)), label))));
    } else {
      const mine = d.projects.filter((p) => p.pipeline && p.deployableEnvironments.length);
      parts.push(section('Deploy', [], mine.length
        ? h('div', { class: 'row-actions' }, mine.map((p) => h('a', { class: 'btn', href: `#/deployments/new?project=${encodeURIComponent(p.name)}` }, `Deploy ${p.name}`)))
        : h('p', { class: 'muted' }, d.projects.length ? 'You may look at the projects shared with you, but not deploy them.' : 'Nothing is shared with your teams yet: ask an admin.')));
    }
    const recent = d.deployments.filter((x) => who(x.createdBy) === ctx.me.username && !ended(x)).slice(0, 10);
    parts.push(section('Your deployments', [h('a', { href: '#/deployments' }, 'All deployments')], h('div', { class: 'table-scroll' },
      table(['Name', 'Project', 'State', 'Services', 'Created'], recent.map((x) => [h('a', { href: `#/deployments/${x.id}` }, x.name), `${x.project} → ${x.environment}`, stateBadge(x), serviceLinks(x), shortTime(x.createdAt)]),
        { caption: 'Your deployments', empty: 'None yet.' }))));
    clear(body, parts);
  };
  stops.push(followCatalog(['REGISTRY', 'SERVICE', 'PLUGIN', 'ENVIRONMENT', 'PROJECT', 'PIPELINE', 'TEAM'], () => load().catch((e) => showError(status, e))));
  await load();
  ctx.ready();
  return stopAll(stops);
}
