// Webhooks (admins): endpoints told of deployment, node and pipeline events, each delivery
// signed with the webhook's secret (shown once); add, rotate the secret, delete, and each
// delivery's attempts.

import { gql } from '../lib/api.js';
import { h, clear, table, notify, copyButton, words, badge } from '../lib/dom.js';
import { shortTime } from '../lib/format.js';
import { formDialog, infoDialog, confirmThen } from '../lib/dialog.js';
import { field, text } from '../lib/forms.js';
import { describe, values } from '../lib/schema.js';

export const WEBHOOKS_QUERY = `{ webhooks { id url events project environment
  deliveries(first: 50) { eventId event subject about state madeAt nextAttemptAt attempts { attempt at status error millis } } }
  projects { name } environments { name } }`;

function showSecret(title, secret) {
  infoDialog({ title, body: [
    h('p', {}, 'The signing secret, shown this once. Verify each delivery\'s webhook-signature header with it (any Standard Webhooks library does).'),
    h('div', { class: 'copyable' }, h('pre', { class: 'secret-once', id: 'webhook-secret' }, secret), copyButton(secret, 'Copy', 'the secret')),
  ] });
}

// One attempt in a line.
function attemptText(a) {
  return [`${shortTime(a.at)}: `, a.error ? h('span', { class: 'error' }, a.error) : `answered ${a.status}`, ` (${a.millis} ms)`];
}

// A delivery's attempts: the latest in a line, the earlier ones folded away behind their count.
function attemptsCell(d) {
  if (!d.attempts.length) return h('span', { class: 'muted' }, d.nextAttemptAt ? `first attempt ${shortTime(d.nextAttemptAt)}` : 'none');
  const [latest, ...earlier] = [...d.attempts].reverse();
  const next = d.nextAttemptAt ? h('small', { class: 'muted' }, ` — next ${shortTime(d.nextAttemptAt)}`) : null;
  return [h('div', {}, `#${latest.attempt} `, attemptText(latest), next),
    earlier.length ? h('details', { class: 'earlier-attempts' }, h('summary', {}, `${earlier.length} earlier attempt${earlier.length === 1 ? '' : 's'}`),
      h('ol', { class: 'attempts' }, earlier.reverse().map((a) => h('li', {}, attemptText(a))))) : null];
}

function deliveriesTable(w) {
  return table(['Made', 'Event', 'About', 'State', 'Latest attempt'], w.deliveries.map((d) => [
    shortTime(d.madeAt), h('code', {}, d.event.replace(/^io\.nullops\./, '')), h('span', { title: d.subject }, d.about), badge(d.state), attemptsCell(d),
  ]), { caption: `Deliveries to ${w.url}`, empty: 'Nothing delivered yet.' });
}

export function webhooksTab({ body, actions, data, reload, status }) {
  clear(actions, h('button', { type: 'button', class: 'btn btn-primary', onclick: () => add() }, 'Add webhook'));
  clear(body, h('p', { class: 'intro' }, 'A webhook is told of what happens as it happens: a CloudEvents 1.0 JSON document POSTed to its URL, signed as Standard Webhooks says, retried until it answers 2xx, each deployment\'s events in order. Redirects are not followed.'),
    h('div', { class: 'table-scroll' }, table(['URL', 'Told of', 'Of', 'Recent deliveries', ''], data.webhooks.map((w) => {
      const count = (state) => w.deliveries.filter((d) => d.state === state).length;
      return [
        h('code', {}, w.url),
        w.events.map((e) => words(e)).join(', '),
        [w.project ? `project ${w.project}` : null, w.environment ? `environment ${w.environment}` : null].filter(Boolean).join(', ') || 'everything',
        `${count('DELIVERED')} delivered, ${count('PENDING')} pending${count('ABANDONED') ? `, ${count('ABANDONED')} given up` : ''}`,
        h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Deliveries to ${w.url}`, onclick: () => deliveries(w) }, 'Deliveries'),
          h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Rotate the secret of ${w.url}`, onclick: () => rotate(w) }, 'Rotate secret'),
          h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Delete webhook ${w.url}`, onclick: () => remove(w) }, 'Delete')),
      ];
    }), { caption: 'Webhooks', empty: 'No webhook yet: add one to tell CI or chat what happens.' })));

  function add() {
    // The events the API knows, in its own words (its enum, read once).
    const events = h('fieldset', { class: 'checks' }, h('legend', {}, 'Told of'), values('WebhookEvent').map((e) => {
      const id = `webhook-event-${e.toLowerCase()}`;
      return h('div', { class: 'field field-check' }, h('input', { type: 'checkbox', id, name: 'events', value: e }),
        h('label', { for: id }, words(e)), h('p', { class: 'hint' }, describe('WebhookEvent', e)));
    }));
    formDialog({
      title: 'Add a webhook', submit: 'Add webhook', wide: true,
      fields: [
        field({ label: 'URL', name: 'url', type: 'url', required: true, placeholder: 'https://ci.example.com/hooks/nullops', hint: 'http:// or https://. Addresses inside private networks only where the server allows them (NULLOPS_ALLOWED_PRIVATE_TARGETS).' }),
        events,
        field({ label: 'Only project', name: 'project', options: [['', 'every project'], ...data.projects.map((p) => p.name)] }),
        field({ label: 'Only environment', name: 'environment', options: [['', 'every environment'], ...data.environments.map((e) => e.name)] }),
      ],
      run: async (d) => {
        const { createWebhook } = await gql('mutation($i: WebhookInput!) { createWebhook(input: $i) { secret webhook { url } } }',
          { i: { url: text(d, 'url'), events: d.getAll('events'), project: text(d, 'project'), environment: text(d, 'environment') } });
        notify(`Webhook to ${createWebhook.webhook.url} added.`);
        await reload();
        showSecret('Webhook added', createWebhook.secret);
      },
    });
  }

  async function deliveries(w) {
    // Deliveries are not catalog changes: read them now, and again on Refresh.
    const fresh = async () => (await gql(WEBHOOKS_QUERY)).webhooks.find((x) => x.id === w.id) ?? w;
    const slot = h('div', { class: 'table-scroll' }, deliveriesTable(await fresh()));
    const refresh = h('button', { type: 'button', class: 'btn btn-small', onclick: async () => clear(slot, deliveriesTable(await fresh())) }, 'Refresh');
    infoDialog({ title: `Deliveries to ${w.url}`, wide: true, body: [h('p', {}, 'The last deliveries, newest first, each with its latest attempt (earlier ones folded). ', refresh), slot] })
      .classList.add('dialog-wide');
  }

  async function rotate(w) {
    await confirmThen({ title: `Rotate the secret of ${w.url}?`, message: 'Deliveries from now on are signed with a new secret, and the old one is destroyed: the receiver must be given the new one.', action: 'Rotate secret' }, status, async () => {
      const { rotateWebhookSecret } = await gql('mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }', { id: w.id });
      showSecret('New signing secret', rotateWebhookSecret.secret);
    });
  }

  async function remove(w) {
    await confirmThen({ title: `Delete the webhook to ${w.url}?`, message: 'It is told of nothing more, and what it had not been sent yet is given up.', action: 'Delete webhook' }, status, async () => {
      await gql('mutation($id: ID!) { deleteWebhook(id: $id) }', { id: w.id });
      notify(`Webhook to ${w.url} deleted.`);
      await reload();
    });
  }
}
