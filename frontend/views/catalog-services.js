// Services: what deployments are made of. Image and port, how its health is checked, its
// environment (which may use project secrets), and its version rule: PINNED to a tag, or
// SELECTABLE among the registry's tags that match a pattern, previewed live as it is typed.

import { gql } from '../lib/api.js';
import { h, clear, table, notify, errorText, showError } from '../lib/dom.js';
import { formDialog } from '../lib/dialog.js';
import { deleteUnlessUsed } from './catalog-uses.js';
import { field, int, rules, text } from '../lib/forms.js';
import { checkWords } from './deployment.js';

export function servicesTab({ body, actions, data, ctx, reload, status }) {
  const admin = ctx.isAdmin;
  clear(actions, admin ? h('button', { type: 'button', class: 'btn btn-primary', onclick: () => edit(null) }, 'Add service') : null);
  clear(body, h('p', { class: 'intro' }, 'A service is a container image a pipeline starts. Pinned services always run one tag; for selectable ones, whoever deploys picks a tag among those matching the pattern.'),
    h('div', { class: 'table-scroll' }, table(['Service', 'Image', 'Version', 'Port', 'Health check', ''], data.services.map((s) => [
      h('strong', {}, s.name), h('code', {}, `${s.registry}: ${s.image}`),
      s.tagMode === 'PINNED' ? ['pinned ', h('code', {}, s.tag)] : ['selectable ', h('code', {}, s.tagPattern ?? '*')],
      String(s.port), h('small', {}, checkWords(s.healthCheck)),
      admin ? h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Edit service ${s.name}`, onclick: () => edit(s) }, 'Edit'),
        h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Delete service ${s.name}`, onclick: () => remove(s) }, 'Delete')) : '',
    ]), { caption: 'Services', empty: 'No service yet.' })));

  function edit(s) {
    const registries = data.registries.map((r) => r.name);
    const mode = s?.tagMode ?? 'SELECTABLE';
    const radio = (value, label) => h('label', {}, h('input', { type: 'radio', name: 'tagMode', value, checked: mode === value }), label);
    const tagField = field({ label: 'Tag', name: 'tag', value: s?.tag, check: rules.tag, placeholder: '14.5', hint: 'Every deployment runs exactly this tag.' });
    const patternField = field({ label: 'Tag pattern', name: 'tagPattern', value: s?.tagPattern, check: rules.tagPattern, placeholder: 'v*',
      hint: '* matches any run of characters, ? any one. Empty: any tag.' });
    const preview = h('div', { class: 'preview', 'aria-live': 'polite', id: 'tag-preview' }, 'Type an image to see its tags.');
    const modes = h('fieldset', { class: 'choices' }, h('legend', {}, 'Version'), radio('PINNED', 'Pinned to one tag'), radio('SELECTABLE', 'Selectable by whoever deploys'));
    const check = s?.healthCheck;
    const probe = check?.httpPath ? 'http' : check?.command ? 'command' : 'none';
    const probeField = field({ label: 'Health check', name: 'probe', value: probe, options: [['none', 'None: healthy once started'], ['http', 'HTTP GET on its port'], ['command', 'A command in the container']] });
    // No path is assumed: a path the image does not serve fails every deployment after a long wait.
    const httpField = field({ label: 'Path', name: 'httpPath', value: check?.httpPath ?? '', placeholder: '/health',
      hint: 'A path this image serves; healthy when it answers 2xx or 3xx.', 'data-field': 'healthCheck' });
    const commandField = field({ label: 'Command', name: 'command', value: (check?.command ?? []).join(' '), placeholder: 'pg_isready -U postgres', hint: 'Healthy when it exits 0. Words are split at spaces.' });
    const timing = h('div', { class: 'inline-form' },
      field({ label: 'Every (s)', name: 'intervalSeconds', type: 'number', min: 1, value: check?.intervalSeconds ?? 10 }),
      field({ label: 'Timeout (s)', name: 'timeoutSeconds', type: 'number', min: 1, value: check?.timeoutSeconds ?? 5 }),
      field({ label: 'Retries', name: 'retries', type: 'number', min: 1, value: check?.retries ?? 3 }));
    const envRows = h('div', { 'data-field': 'env' });
    const addEnv = (name = '', value = '') => {
      const rowEl = h('div', { class: 'env-row' },
        h('input', { name: 'envName', value: name, 'aria-label': 'Variable name', placeholder: 'DATABASE_URL' }),
        h('input', { name: 'envValue', value, 'aria-label': 'Value', placeholder: 'postgres://app:${{ secrets.DB_PASSWORD }}@db/app' }),
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Remove variable ${name || 'row'}`, onclick: () => rowEl.remove() }, 'Remove'));
      envRows.append(rowEl);
    };
    (s?.env ?? []).forEach((v) => addEnv(v.name, v.value));
    const envGroup = h('fieldset', { class: 'group' }, h('legend', {}, 'Environment variables'),
      h('p', { class: 'hint' }, 'Values may use project secrets (${{ secrets.NAME }}) and outputs of earlier pipeline nodes (${{ nodes.ID.outputs.KEY }}).'),
      envRows, h('button', { type: 'button', class: 'btn btn-small', onclick: () => addEnv() }, 'Add variable'), h('p', { class: 'field-error', id: 'env-error', hidden: true }));
    envRows.id = 'env';
    const registryField = field({ label: 'Registry', name: 'registry', options: registries, value: s?.registry ?? registries.find((r) => r !== 'docker-hub') ?? registries[0], required: true });
    const imageField = field({ label: 'Image', name: 'image', required: true, value: s?.image, placeholder: 'shop/api', hint: 'The repository in that registry.' });

    let timer = null;
    let asked = 0;
    const refreshPreview = () => {
      clearTimeout(timer);
      // An answer about what was typed before is not shown while the person types on.
      asked += 1;
      clear(preview, 'Waiting for you to finish typing…');
      timer = setTimeout(async () => {
        const registry = registryField.querySelector('select').value;
        const image = imageField.querySelector('input').value.trim();
        const pattern = patternField.querySelector('input').value.trim();
        if (!image) { clear(preview, 'Type an image to see its tags.'); return; }
        if (pattern && rules.tagPattern(pattern)) { clear(preview, 'Fix the pattern to see what it matches.'); return; }
        const n = ++asked;
        clear(preview, 'Asking the registry…');
        try {
          const { registryTags } = await gql('query($r: String!, $i: String!, $p: String) { registryTags(registry: $r, repository: $i, pattern: $p) }',
            { r: registry, i: image, p: pattern || null });
          if (n !== asked) return;
          clear(preview, registryTags.length ? [h('strong', {}, `${registryTags.length} tag(s) match: `), registryTags.slice(0, 50).join('  '), registryTags.length > 50 ? ' …' : '']
            : `No tag of ${image} matches${pattern ? ` ${pattern}` : ''}: nobody could deploy it yet.`);
        } catch (e) {
          if (n !== asked) return;
          clear(preview, h('span', { class: 'error' }, errorText(e)));
        }
      }, 250);
    };
    const showParts = () => {
      const pinned = modes.querySelector('input:checked')?.value === 'PINNED';
      tagField.hidden = !pinned;
      patternField.hidden = pinned;
      preview.hidden = !admin;
      const p = probeField.querySelector('select').value;
      httpField.hidden = p !== 'http';
      commandField.hidden = p !== 'command';
      timing.hidden = p === 'none';
      refreshPreview();
    };
    modes.addEventListener('change', showParts);
    probeField.addEventListener('change', showParts);
    for (const f of [registryField, imageField, patternField]) f.addEventListener('input', refreshPreview);
    showParts();

    formDialog({
      title: s ? `Edit service ${s.name}` : 'Add a service', submit: s ? 'Save' : 'Add service', wide: true,
      fields: [
        s ? null : field({ label: 'Name', name: 'name', required: true, check: rules.dnsLabel, hint: 'A DNS label: it becomes the first part of its URLs.' }),
        registryField, imageField,
        field({ label: 'Port', name: 'port', type: 'number', min: 1, max: 65535, required: true, value: s?.port ?? 8080, check: rules.port, hint: 'The container port the ingress reaches.' }),
        modes, tagField, patternField, h('p', { class: 'hint' }, 'Tags the pattern matches now:'), preview,
        probeField, httpField, commandField, timing, envGroup,
      ],
      run: async (d) => {
        const pinned = d.get('tagMode') === 'PINNED';
        const probeKind = d.get('probe');
        const env = d.getAll('envName').map((name, i) => ({ name: String(name).trim(), value: String(d.getAll('envValue')[i]) })).filter((v) => v.name);
        const input = {
          name: s?.name ?? text(d, 'name'), registry: d.get('registry'), image: text(d, 'image'),
          tagMode: pinned ? 'PINNED' : 'SELECTABLE', tag: pinned ? text(d, 'tag') : null, tagPattern: pinned ? null : text(d, 'tagPattern'),
          port: int(d, 'port'), env,
          healthCheck: probeKind === 'none' ? null : {
            httpPath: probeKind === 'http' ? text(d, 'httpPath') : null,
            command: probeKind === 'command' ? (text(d, 'command') ?? '').split(/\s+/).filter(Boolean) : null,
            intervalSeconds: int(d, 'intervalSeconds'), timeoutSeconds: int(d, 'timeoutSeconds'), retries: int(d, 'retries'),
          },
        };
        await gql(`mutation($i: ServiceInput!) { ${s ? 'updateService' : 'createService'}(input: $i) { name } }`, { i: input });
        notify(`Service ${input.name} ${s ? 'saved' : 'added'}.`);
        await reload();
      },
    });
  }

  async function remove(s) {
    try {
      await deleteUnlessUsed({ kind: 'service', name: s.name, message: 'It is forgotten; deployments that run it keep running.', status, reload });
    } catch (e) { showError(status, e); }
  }
}
