// Projects: what can be deployed, where, with what limits; admins create them here.

import { gql } from '../lib/api.js';
import { h, clear, badge, pageHead, table, statusLine, showError } from '../lib/dom.js';
import { cpu, mib, lifetime } from '../lib/format.js';
import { formDialog } from '../lib/dialog.js';
import { followCatalog, stopAll } from '../lib/follow.js';
import { projectFields, projectInput } from './project.js';

export async function show(root, ctx) {
  const stops = [];
  const slot = h('div', { class: 'table-scroll' });
  const status = statusLine();
  const create = h('button', { type: 'button', class: 'btn btn-primary', hidden: !ctx.isAdmin }, 'New project');
  clear(root, pageHead('Projects', { subtitle: 'What a deployment is made of (its pipeline), where it may run, and its limits.', actions: [create] }),
    h('section', { class: 'panel', 'aria-label': 'Projects' }, status, slot));
  ctx.title('Projects');

  const load = async () => {
    const { projects } = await gql('{ projects { name environments cpuMillis memoryMib cleanupAfterSeconds myAccess deployableEnvironments pipeline { version } secrets { name } } }');
    clear(slot, table(['Project', 'Environments', 'Limits per deployment', 'Pipeline', 'Secrets', 'Your access', ''], projects.map((p) => [
      h('a', { href: `#/projects/${encodeURIComponent(p.name)}` }, p.name),
      p.environments.join(', ') || '—',
      `${cpu(p.cpuMillis)}, ${mib(p.memoryMib)}${p.cleanupAfterSeconds ? `, cleaned up after ${lifetime(p.cleanupAfterSeconds)}` : ''}`,
      p.pipeline ? h('a', { href: `#/projects/${encodeURIComponent(p.name)}/pipeline` }, `version ${p.pipeline.version}`) : h('span', { class: 'muted' }, 'none yet'),
      p.secrets.length ? String(p.secrets.length) : '—',
      p.myAccess ? badge(p.myAccess) : h('span', { class: 'muted', title: 'Through a grant on one of its environments' }, 'via environment'),
      p.pipeline && p.deployableEnvironments.length ? h('a', { class: 'btn btn-small', href: `#/deployments/new?project=${encodeURIComponent(p.name)}` }, `Deploy ${p.name}`) : '',
    ]), { caption: 'Projects', empty: ctx.isAdmin ? 'No project yet: create one.' : 'No project is shared with your teams yet.' }));
    clear(status);
  };

  create.addEventListener('click', async () => {
    const { environments } = await gql('{ environments { name } }');
    formDialog({
      title: 'New project', submit: 'Create project', wide: true,
      intro: 'A project deploys its pipeline to the environments chosen here, each deployment within these limits.',
      fields: projectFields(null, environments.map((e) => e.name)),
      run: async (data) => {
        const { createProject } = await gql('mutation($i: ProjectInput!) { createProject(input: $i) { name } }', { i: projectInput(data) });
        ctx.navigate(`projects/${encodeURIComponent(createProject.name)}`);
      },
    });
  });
  stops.push(followCatalog(['PROJECT', 'PIPELINE', 'SECRET'], () => load().catch((e) => showError(status, e))));
  await load();
  ctx.ready();
  return stopAll(stops);
}
