// A project's pipeline: the editor on its latest version (FULL access), any saved version
// opened read-only with what changed from the version before drawn on it, the list of versions
// (who saved each, when, why, and how many deployments alive now run it), a dry run against an
// environment, and saving a new version with a message.
//
// Addresses: `pipeline` edits the latest; `pipeline?version=N` shows N read-only, marked
// against N-1 (or `&against=M`); `pipeline?from=N` edits a new version started from N.

import { gql, live } from '../lib/api.js';
import { h, clear, pageHead, section, table, statusLine, showError, notify, errorText } from '../lib/dom.js';
import { shortTime, who, plural } from '../lib/format.js';
import { followCatalog, stopAll } from '../lib/follow.js';
import { diffMarks, tidy } from '../lib/graph.js';
import { pipelineEditor } from './pipeline-editor.js';
import { confirmAction } from '../lib/dialog.js';


const NODE = 'id kind service plugin parameters image { registry repository tag digest }';
const VERSION = `version savedAt savedBy message basedOn nodes { ${NODE} } edges { from to } layout { node x y }`;
const CATALOG = `services { name image tag tagMode tagPattern port }
  plugins { name description repository tag parametersSchema timeoutSeconds cpuMillis memoryMib }`;

const href = (name, query = '') => `#/projects/${encodeURIComponent(name)}/pipeline${query ? `?${query}` : ''}`;

export async function show(root, ctx) {
  const name = ctx.params.name;
  const viewing = Number(ctx.query.get('version')) || null;
  const from = Number(ctx.query.get('from')) || null;
  const against = Number(ctx.query.get('against')) || null;
  const stops = [];
  const status = statusLine();
  const say = (message, bad = false) => {
    clear(status, message);
    status.classList.toggle('error', bad);
  };

  const data = await gql(`query($n: String!) { project(name: $n) { name myAccess environments cpuMillis memoryMib
      secrets { name } pipelineVersions { ${VERSION} } } ${CATALOG} }`, { n: name });
  let project = data.project;
  const canEdit = project.myAccess === 'FULL';
  const versions = () => project.pipelineVersions;
  const latest = () => versions()[0] ?? null;
  const shown = viewing ? versions().find((v) => v.version === viewing) : null;
  if (viewing && !shown) throw Object.assign(new Error(`Project ${name} has no pipeline version ${viewing}.`), { code: 'NOT_FOUND' });
  const readOnly = Boolean(shown) || !canEdit;
  const base = from ? versions().find((v) => v.version === from) : null;
  let dirty = false;
  let dryRun = null;

  let secrets = project.secrets.map((s) => s.name);
  const editor = pipelineEditor({
    catalog: data,
    secrets,
    readOnly,
    onChange: () => {
      dirty = true;
      saveState();
      dryRun?.refresh();
      // A refusal was about the drawing as it was.
      if (status.classList.contains('error')) say('');
    },
  });

  // ------------------------------------------------------------------ heading and version line
  const versionLine = h('p', { class: 'version-line' });
  const saveSlot = h('div');
  const dryRunSlot = h('div');
  const versionsSlot = h('div', { class: 'table-scroll' });
  const diffSlot = h('div');

  const describeVersion = (v) => [`Version ${v.version}, saved by ${who(v.savedBy)} ${shortTime(v.savedAt)}`,
    v.basedOn ? ` (started from version ${v.basedOn})` : '', v.message ? [': ', h('q', {}, v.message)] : '.'];

  function drawVersionLine() {
    if (shown) {
      clear(versionLine, h('span', { class: 'badge badge-ended' }, 'read-only'), ' ', describeVersion(shown), ' ',
        canEdit ? h('a', { class: 'btn btn-small', href: href(name, `from=${shown.version}`) }, 'Start a new version from this one') : null, ' ',
        h('a', { class: 'btn btn-small', href: href(name) }, canEdit ? 'Back to the editor' : 'Latest version'));
    } else if (!canEdit) {
      clear(versionLine, latest() ? describeVersion(latest()) : 'No version saved yet.', ' You can look; saving needs FULL access to the project.');
    } else if (base) {
      clear(versionLine, `Editing a new version started from version ${base.version}`, latest() && latest().version !== base.version ? ` (the latest is version ${latest().version})` : '', '.');
    } else {
      clear(versionLine, latest() ? ['Editing a new version after ', describeVersion(latest())] : 'No version saved yet: draw the first one.');
    }
  }

  // ------------------------------------------------------------------ saving
  const message = h('input', { type: 'text', id: 'pipeline-message', name: 'message', maxLength: 500, placeholder: 'What changed, for those who come after (optional)' });
  const saveButton = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save');
  const dirtyNote = h('span', { class: 'muted', role: 'status' });
  function saveState() {
    const next = (latest()?.version ?? 0) + 1;
    saveButton.textContent = `Save as version ${next}`;
    dirtyNote.textContent = dirty ? 'Unsaved changes.' : '';
  }
  const saveForm = h('form', { class: 'save-bar', id: 'pipeline-save' },
    h('label', { for: 'pipeline-message' }, 'Message'), message, saveButton, dirtyNote);
  saveForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const local = editor.localProblems();
    if (editor.isEmpty()) { say('Add at least one node first: drag a service or plugin from the palette.', true); return; }
    if (local.length) {
      editor.setProblems(local);
      say(`Not saved: fix the ${plural(local.length, 'problem')} marked on the nodes first.`, true);
      return;
    }
    saveButton.disabled = true;
    try {
      const { savePipeline } = await gql(`mutation($p: String!, $i: PipelineInput!, $m: String, $b: Int) {
          savePipeline(project: $p, pipeline: $i, message: $m, basedOn: $b) { version } }`,
      { p: name, i: editor.draft(), m: message.value.trim() || null, b: base?.version ?? null });
      dirty = false;
      message.value = '';
      notify(`Pipeline version ${savePipeline.version} saved.`);
      say(`Saved as version ${savePipeline.version}.`);
      await reloadVersions();
      if (base) location.hash = href(name);
    } catch (e) {
      if (e.problems?.length) {
        editor.setProblems(e.problems);
        say(`Not saved: ${plural(e.problems.length, 'problem')}, marked on the nodes.`, true);
      } else {
        clear(status, errorText(e));
        status.classList.add('error');
      }
    } finally {
      saveButton.disabled = false;
    }
  });

  // ------------------------------------------------------------------ dry run
  function dryRunForm() {
    const env = h('select', { id: 'dry-run-env', name: 'environment' }, project.environments.map((e) => h('option', { value: e }, e)));
    const tagsBox = h('div', { class: 'dry-run-tags' });
    const drawTags = () => {
      const draft = shown ? null : editor.draft();
      const ids = new Set((draft?.nodes ?? shown?.nodes ?? []).filter((n) => n.service).map((n) => n.service));
      const selectable = data.services.filter((s) => ids.has(s.name) && s.tagMode === 'SELECTABLE');
      const kept = new Map([...tagsBox.querySelectorAll('input')].map((i) => [i.dataset.service, i.value]));
      clear(tagsBox, selectable.map((s) => h('div', { class: 'field' },
        h('label', { for: `dry-tag-${s.name}` }, `Tag of ${s.name}`),
        h('input', { id: `dry-tag-${s.name}`, type: 'text', dataset: { service: s.name, field: `tags.${s.name}` }, value: kept.get(s.name) ?? '',
          placeholder: s.tagPattern ? `matching ${s.tagPattern}` : 'a tag in its registry', spellcheck: false }),
        h('p', { class: 'field-error', hidden: true }))));
    };
    drawTags();
    const result = h('div', { class: 'dry-run-result', 'aria-live': 'polite' });
    const run = h('button', { type: 'submit', class: 'btn' }, 'Dry run');
    const form = h('form', { id: 'dry-run' },
      h('p', { class: 'intro' }, 'Checks the pipeline as drawn against an environment without deploying or saving: every parameter and secret, every image in its registry, the order the steps start in, and whether a node has room now.'),
      h('div', { class: 'inline-form' }, h('div', { class: 'field' }, h('label', { for: 'dry-run-env' }, 'Environment'), env), tagsBox, run), result);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      drawTags();
      const tags = [...tagsBox.querySelectorAll('input')].filter((i) => i.value.trim()).map((i) => ({ service: i.dataset.service, tag: i.value.trim() }));
      run.disabled = true;
      clear(result, h('p', { class: 'muted' }, 'Checking…'));
      try {
        const vars = { p: name, e: env.value, t: tags, d: shown ? null : editor.draft(), v: shown?.version ?? null };
        const { dryRunPipeline: r } = await gql(`mutation($p: String!, $e: String!, $t: [TagChoice!], $d: PipelineInput, $v: Int) {
            dryRunPipeline(project: $p, environment: $e, tags: $t, draft: $d, version: $v) {
              ok problems { node field code message } order images { node image digest found } admission { fits node message } } }`, vars);
        editor.setProblems(r.problems);
        for (const i of tagsBox.querySelectorAll('input')) {
          const p = r.problems.find((x) => x.field === i.dataset.field);
          const err = i.parentElement.querySelector('.field-error');
          err.hidden = !p;
          err.textContent = p ? p.message : '';
          if (p) i.setAttribute('aria-invalid', 'true'); else i.removeAttribute('aria-invalid');
        }
        clear(result,
          h('p', { class: r.ok ? 'ok-line' : 'error', id: 'dry-run-verdict' }, r.ok ? 'Ready: it would deploy now.' : `Not ready: ${plural(r.problems.length, 'problem')}${r.admission.fits ? '' : ', and no node has room'}.`),
          r.problems.length ? h('ul', { class: 'problems', 'aria-label': 'Problems found' }, r.problems.map((p) => h('li', { class: 'error', dataset: { code: p.code } },
            h('code', { class: 'error-code' }, p.code), ' ', p.node ? h('strong', {}, p.node) : null, p.field ? ` (${p.field})` : '', p.node || p.field ? ': ' : '', p.message))) : null,
          h('h3', {}, 'Order'),
          r.order.length ? h('ol', { class: 'order' }, r.order.map((stage) => h('li', {}, stage.length > 1 ? `together: ${stage.join(', ')}` : stage[0])))
            : h('p', { class: 'muted' }, 'No order: the edges do not make one.'),
          h('h3', {}, 'Images'),
          table(['Node', 'Image', 'Digest', 'In its registry'], r.images.map((i) => [i.node, h('code', {}, i.image), i.digest ? h('code', {}, i.digest.slice(0, 19)) : '—', i.found ? 'yes' : h('span', { class: 'error' }, 'missing')]), { caption: 'Images', empty: 'No image could be looked up.' }),
          h('h3', {}, 'Room'),
          h('p', { id: 'dry-run-admission', class: r.admission.fits ? 'ok-line' : 'error' }, r.admission.message));
      } catch (e) {
        if (e.problems?.length) editor.setProblems(e.problems);
        clear(result, h('p', { class: 'error' }, errorText(e)));
      } finally {
        run.disabled = false;
      }
    });
    // The tags asked for follow the services the drawing starts.
    return { form, refresh: drawTags };
  }

  // ------------------------------------------------------------------ versions and diff
  let counts = new Map();
  async function countDeployments() {
    const { deployments } = await gql('query($n: String!) { deployments(project: $n) { pipelineVersion } }', { n: name });
    const next = new Map();
    for (const d of deployments) next.set(d.pipelineVersion, (next.get(d.pipelineVersion) ?? 0) + 1);
    const changed = [...new Set([...next.keys(), ...counts.keys()])].some((k) => next.get(k) !== counts.get(k));
    counts = next;
    return changed;
  }

  function drawVersions() {
    const current = shown?.version ?? (readOnly ? latest()?.version : null);
    clear(versionsSlot, table(['Version', 'Saved', 'By', 'Message', 'Deployments now', ''], versions().map((v) => [
      `version ${v.version}`, shortTime(v.savedAt), who(v.savedBy), v.message || h('span', { class: 'muted' }, '—'), String(counts.get(v.version) ?? 0),
      h('span', { class: 'actions' },
        h('a', { href: href(name, `version=${v.version}`), 'aria-label': `Open version ${v.version} read-only`, 'aria-current': current === v.version ? 'true' : null }, 'Open'),
        canEdit ? [' ', h('a', { href: href(name, `from=${v.version}`), 'aria-label': `Start a new version from version ${v.version}` }, 'Start from')] : null),
    ]), { caption: 'Versions', empty: 'No version yet.' }));
  }

  async function drawDiff() {
    if (!shown) { clear(diffSlot); return; }
    const other = against ?? (shown.version > 1 ? shown.version - 1 : null);
    if (!other) {
      clear(diffSlot, h('p', { class: 'muted' }, 'The first version: nothing to compare with.'));
      editor.setDiff(null);
      return;
    }
    const { project: p } = await gql(`query($n: String!, $f: Int!, $t: Int!) { project(name: $n) { pipelineDiff(from: $f, to: $t) { kind subject detail }
        pipelineVersion(version: $f) { ${VERSION} } } }`, { n: name, f: other, t: shown.version });
    const marks = diffMarks(p.pipelineDiff);
    const old = p.pipelineVersion;
    const oldPlaced = new Map(old.layout.map((l) => [l.node, l]));
    const oldAuto = tidy(old.nodes, old.edges);
    marks.removed = {
      nodes: old.nodes.filter((n) => marks.nodes.get(n.id)?.kind === 'removed').map((n) => ({ id: n.id, what: n.kind === 'SERVICE' ? `service ${n.service}` : `plugin ${n.plugin}`, ...(oldPlaced.get(n.id) ?? oldAuto.get(n.id)) })),
      edges: old.edges.filter((e) => marks.edges.get(`${e.from}>${e.to}`)?.kind === 'removed'),
    };
    editor.setDiff(marks);
    const pick = h('select', { id: 'diff-against', 'aria-label': 'Compare with version' },
      versions().filter((v) => v.version !== shown.version).map((v) => h('option', { value: v.version, selected: v.version === other }, `version ${v.version}`)));
    pick.addEventListener('change', () => { location.hash = href(name, `version=${shown.version}&against=${pick.value}`); });
    clear(diffSlot, h('div', { class: 'inline-form' }, h('label', { for: 'diff-against' }, 'Compared with'), pick,
      h('span', { class: 'legend' }, h('span', { class: 'swatch diff-added' }, 'added'), h('span', { class: 'swatch diff-changed' }, 'changed'), h('span', { class: 'swatch diff-removed' }, 'removed'))),
    table(['Change', 'What', 'Detail'], p.pipelineDiff.map((c) => [c.kind.toLowerCase(), c.subject, c.detail]), { caption: `Changes from version ${other}`, empty: 'Nothing changed.' }));
  }

  async function reloadVersions() {
    ({ project } = await gql(`query($n: String!) { project(name: $n) { name myAccess environments cpuMillis memoryMib secrets { name } pipelineVersions { ${VERSION} } } }`, { n: name }));
    const secretNames = project.secrets.map((s) => s.name);
    if (secretNames.join() !== secrets.join()) {
      secrets = secretNames;
      if (!readOnly) editor.setSecrets(secretNames);
    }
    await countDeployments();
    drawVersions();
    drawVersionLine();
    saveState();
  }

  // ------------------------------------------------------------------ the page
  ctx.title(shown ? `Pipeline of ${name}, version ${shown.version}` : `Pipeline of ${name}`);
  const subtitle = readOnly ? 'The graph a deployment runs: services and plugin steps, each after those it follows.'
    : 'Drag services and plugins onto the canvas, join them (a node runs after those joined into its left side), set each plugin’s parameters, then save a new version. Deployments keep the version they were made from.';
  clear(root, pageHead(shown ? `Pipeline of ${name}, version ${shown.version}` : `Pipeline of ${name}`, {
    crumbs: [['#/projects', 'Projects'], [`#/projects/${encodeURIComponent(name)}`, name], ...(shown ? [[href(name), 'Pipeline']] : [])], subtitle }),
  versionLine, editor.el,
  readOnly ? null : saveSlot, status,
  shown ? section('What changed', [], diffSlot) : null,
  canEdit ? section('Dry run', [], dryRunSlot) : null,
  section('Versions', [], versionsSlot));
  if (!readOnly) clear(saveSlot, saveForm);
  editor.load(shown ?? base ?? latest());
  if (canEdit) {
    dryRun = dryRunForm();
    clear(dryRunSlot, dryRun.form);
  }
  dirty = false;
  await countDeployments();
  drawVersions();
  drawVersionLine();
  saveState();
  await drawDiff();
  ctx.ready();

  // Closing or reloading the tab with a drawing not saved asks first.
  const unsaved = (ev) => {
    if (!dirty) return;
    ev.preventDefault();
    ev.returnValue = '';
  };
  window.addEventListener('beforeunload', unsaved);
  stops.push(() => window.removeEventListener('beforeunload', unsaved));
  // Leaving inside the app (the navigation bar, a link, back) asks too.
  ctx.guardLeave(async () => !dirty || confirmAction({
    title: 'Leave without saving?',
    message: 'Your changes to this pipeline are not saved as a version. If you leave, they are lost.',
    action: 'Leave without saving',
    keep: 'Keep editing',
  }));
  stops.push(followCatalog(['PIPELINE', 'PROJECT', 'SECRET'], () => reloadVersions().catch((e) => showError(status, e))));
  stops.push(live('subscription($p: String) { deploymentsUpdated(project: $p) { id } }', { p: name }, {
    next: () => countDeployments().then((changed) => changed && drawVersions()).catch((e) => showError(status, e)),
    resync: () => countDeployments().then(() => drawVersions()).catch((e) => showError(status, e)),
    error: (e) => showError(status, e),
  }));
  return stopAll(stops);
}
