// A project's pull-request previews: the repository it is linked to (admins link, change and
// unlink it; the secret and token are never shown again), the hook URL to give the forge, and
// each pull request's preview with where it is and its URL. Looked at again every two seconds
// while a preview is on its way somewhere.

import { gql } from '../lib/api.js';
import { h, clear, badge, facts, notify, table, copyButton, words, statusLine } from '../lib/dom.js';
import { shortTime } from '../lib/format.js';
import { formDialog, confirmThen } from '../lib/dialog.js';
import { field, text } from '../lib/forms.js';
import { describe, values } from '../lib/schema.js';

const QUERY = `query($p: String!) { repositoryLink(project: $p) { provider repository apiUrl environment service tagRule hookPath }
  previews(project: $p) { number name title url sender action headSha tag state message deploymentId requestedAt } }`;

// States a preview leaves by itself: while one is in them, the list is looked at again.
const MOVING = new Set(['REQUESTED', 'WAITING_FOR_TAG', 'REPLACING', 'DEPLOYING', 'REMOVING']);
const POLL_MS = 2000;

const PUBLIC_API = { GITHUB: 'https://api.github.com', GITLAB: 'https://gitlab.com/api/v4' };

function hookUrl(link) {
  return `${window.location.origin}${link.hookPath}`;
}

function setupSteps(link) {
  const github = link.provider === 'GITHUB';
  return h('ol', { class: 'steps' },
    h('li', {}, github
      ? ['In the repository on GitHub, open Settings → Webhooks → Add webhook. Payload URL: ', h('code', {}, hookUrl(link)),
        ', content type application/json, the secret you gave here, and "Let me select individual events": Pull requests.']
      : ['In the project on GitLab, open Settings → Webhooks → Add new webhook. URL: ', h('code', {}, hookUrl(link)),
        ', the secret token you gave here, trigger: Merge request events.']),
    h('li', {}, `Have CI push ${link.service}'s image tagged ${link.tagRule === 'PR_NUMBER' ? 'pr-<number>' : 'with the commit\'s first seven hex digits'} for every commit of a ${github ? 'pull' : 'merge'} request.`),
    h('li', {}, `Each open request is then deployed as pr-<number> in ${link.environment}; its commit status and one comment say where it runs.`));
}

export function previewsSection(slot, ctx, project) {
  let timer = null;
  let stopped = false;
  let link = null;
  const status = statusLine();

  const stateCell = (pr) => {
    const b = badge(pr.state, describe('PreviewState', pr.state));
    const message = /^https?:\/\//.test(pr.message) ? h('a', { href: pr.message, target: '_blank', rel: 'noopener' }, pr.message) : pr.message;
    return h('div', {}, b, pr.message ? h('p', { class: pr.state === 'FAILED' ? 'error' : 'muted' }, message) : null);
  };

  const render = (data) => {
    link = data.repositoryLink;
    const admin = ctx.isAdmin;
    const parts = [];
    if (link) {
      parts.push(h('p', { class: 'intro' }, `Pull requests of ${link.repository} deploy previews of this project.`));
      parts.push(facts([
        ['Repository', `${link.repository} on ${link.provider === 'GITHUB' ? 'GitHub' : 'GitLab'} (${link.apiUrl})`],
        ['Hook URL', h('span', { class: 'copyable' }, h('code', { id: 'hook-url' }, hookUrl(link)), copyButton(hookUrl(link), 'Copy', 'the hook URL'))],
        ['Deploys', `service ${link.service}, tagged ${link.tagRule === 'PR_NUMBER' ? 'pr-<number>' : '<short commit>'}, to environment ${link.environment}`],
      ]));
      if (admin) {
        parts.push(h('details', { class: 'setup' }, h('summary', {}, 'How to set up the forge'), setupSteps(link)));
        parts.push(h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn', onclick: () => linkDialog(link) }, 'Change link'),
          h('button', { type: 'button', class: 'btn btn-danger', onclick: unlink }, 'Unlink')));
      }
    } else {
      parts.push(h('p', { class: 'muted' }, admin
        ? 'Not linked to a repository. Link one and every open pull request gets its own deployment, pr-<number>, with its URL posted back to the pull request.'
        : 'Not linked to a repository: an admin can link one so that pull requests deploy previews.'));
      if (admin) parts.push(h('button', { type: 'button', class: 'btn btn-primary', onclick: () => linkDialog(null) }, 'Link a repository'));
    }
    if (link || data.previews.length) {
      parts.push(h('div', { class: 'table-scroll' }, table(['Request', 'Commit', 'Tag', 'State', 'Deployment', 'Last change'], data.previews.map((pr) => [
        h('div', {}, pr.url ? h('a', { href: pr.url, target: '_blank', rel: 'noopener' }, `#${pr.number}`) : `#${pr.number}`, ' ', pr.title),
        h('code', {}, pr.headSha.slice(0, 7)),
        h('code', {}, pr.tag),
        stateCell(pr),
        pr.deploymentId && !['REMOVED', 'GONE'].includes(pr.state) ? h('a', { href: `#/deployments/${pr.deploymentId}` }, pr.name) : pr.name,
        `${words(pr.action)} by ${pr.sender} ${shortTime(pr.requestedAt)}`,
      ]), { caption: 'Previews', empty: 'No pull request yet.' })));
    }
    clear(slot, ...parts, status);
    clearTimeout(timer);
    if (!stopped && data.previews.some((pr) => MOVING.has(pr.state))) timer = setTimeout(() => load().catch(() => {}), POLL_MS);
  };

  const load = async () => {
    const data = await gql(QUERY, { p: project.name });
    if (!stopped) render(data);
  };

  async function linkDialog(current) {
    const { services } = await gql('{ services { name tagMode } }');
    const selectable = services.filter((s) => s.tagMode === 'SELECTABLE').map((s) => s.name);
    const secretHint = current ? 'Give the secret again (it is never shown): the same as in the forge\'s hook settings.' : 'Any string of 8 or more characters; give the same to the forge\'s hook.';
    formDialog({
      title: current ? `Change the repository of ${project.name}` : `Link ${project.name} to a repository`, submit: current ? 'Save link' : 'Link repository', wide: true,
      intro: 'Open pull requests deploy as pr-<number>, with the service below tagged by the rule; closing one deletes its preview.',
      fields: [
        field({ label: 'Forge', name: 'provider', value: current?.provider ?? 'GITHUB', options: values('Forge').map((f) => [f, f === 'GITHUB' ? 'GitHub' : 'GitLab']) }),
        field({ label: 'Repository', name: 'repository', required: true, value: current?.repository ?? '', placeholder: 'acme/shop',
          hint: 'owner/name on GitHub; the full path with its groups on GitLab.' }),
        field({ label: 'API URL', name: 'apiUrl', type: 'url', value: current && !Object.values(PUBLIC_API).includes(current.apiUrl) ? current.apiUrl : '',
          placeholder: 'https://api.github.com', hint: 'Leave empty for github.com or gitlab.com; give your GitHub Enterprise or GitLab server\'s API otherwise.' }),
        field({ label: 'Environment', name: 'environment', value: current?.environment ?? project.environments[0], options: project.environments }),
        field({ label: 'Service', name: 'service', required: true, value: current?.service ?? selectable[0] ?? '',
          options: selectable.length ? selectable : [['', 'no selectable service: make one under Catalog → Services']],
          hint: 'The service whose tag follows the pull request (its tag must be selectable).' }),
        field({ label: 'Tag rule', name: 'tagRule', value: current?.tagRule ?? 'PR_NUMBER',
          options: values('PreviewTagRule').map((r) => [r, r === 'PR_NUMBER' ? 'pr-<number>' : 'short commit (7 hex digits)']),
          hint: 'Which tag CI pushes for a pull request. A tag not yet in the registry is waited for, up to 15 minutes.' }),
        field({ label: 'Hook secret', name: 'webhookSecret', type: 'password', required: true, minlength: 8, autocomplete: 'new-password', hint: secretHint }),
        field({ label: 'API token', name: 'token', type: 'password', required: true, autocomplete: 'off',
          hint: 'A token that may post commit statuses and comments (GitHub: statuses and pull requests write; GitLab: api scope).' }),
      ],
      run: async (d) => {
        await gql(`mutation($p: String!, $f: Forge!, $r: String!, $a: String, $s: String!, $t: String!, $svc: String!, $rule: PreviewTagRule!, $e: String) {
          linkRepository(project: $p, provider: $f, repository: $r, apiUrl: $a, webhookSecret: $s, token: $t, service: $svc, tagRule: $rule, environment: $e) { hookPath } }`,
        { p: project.name, f: text(d, 'provider'), r: text(d, 'repository'), a: text(d, 'apiUrl'), s: d.get('webhookSecret'), t: d.get('token'),
          svc: text(d, 'service'), rule: text(d, 'tagRule'), e: text(d, 'environment') });
        notify(`${project.name} is linked to ${text(d, 'repository')}.`);
        await load();
      },
    });
  }

  async function unlink() {
    await confirmThen({ title: `Unlink ${link.repository}?`,
      message: `Its hooks are refused from now on and its secret and token are destroyed. Previews already running stay until they are deleted or expire.`,
      action: 'Unlink' }, status, async () => {
      await gql('mutation($p: String!) { unlinkRepository(project: $p) }', { p: project.name });
      notify(`${project.name} is no longer linked to ${link.repository}.`);
      await load();
    });
  }

  return {
    load,
    stop: () => { stopped = true; clearTimeout(timer); },
  };
}
