// The console's shell: who is signed in, the navigation, the address of every view (a hash
// route, so the back button works and any view can be shared), the live connection's status,
// and the time each view takes to show its data (Performance API: `view:ROUTE` measures).

import { gql, onSignedOut, onLiveStatus, closeLive } from './lib/api.js';
import { h, clear, errorText } from './lib/dom.js';
import { loadEnums } from './lib/schema.js';

// Set while the page reloads because a view's module could not be fetched: once per view.
const MODULE_RELOAD = 'nullops:module-reload';

// Route patterns and the modules that show them; `:name` parts become parameters.
const ROUTES = [
  ['', 'home'],
  ['deployments', 'deployments'],
  ['deployments/new', 'deploy'],
  ['deployments/:id', 'deployment'],
  ['projects', 'projects'],
  ['projects/:name', 'project'],
  ['projects/:name/pipeline', 'pipeline'],
  ['catalog', 'catalog'],
  ['catalog/:tab', 'catalog'],
  ['environments', 'environments'],
  ['environments/:name', 'environment'],
  ['teams', 'teams'],
  ['teams/:name', 'team'],
  ['audit', 'audit'],
  ['health', 'health'],
  ['account', 'account'],
];

// The navigation: [route, label, who sees it].
const NAV = [
  ['deployments', 'Deployments', 'all'],
  ['projects', 'Projects', 'all'],
  ['catalog', 'Catalog', 'all'],
  ['environments', 'Environments', 'all'],
  ['teams', 'Teams & users', 'all'],
  ['audit', 'Audit', 'admin'],
  ['health', 'Health', 'admin'],
];

const $ = (id) => document.getElementById(id);
const session = { me: null };
let disposeView = () => {};
let navigation = 0;
// The address of the view on screen, and what that view asks before it is left (its unsaved
// work): every way out inside the app (the navigation bar, a link, back and forward) changes
// the address, so every one is asked.
let shownHash = null;
let leaveGuard = null;

function parse(hash) {
  const raw = hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  for (const [pattern, view] of ROUTES) {
    const want = pattern.split('/').filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(':') ? ((params[w.slice(1)] = parts[i]), true) : w === parts[i]))) {
      return { view, pattern, params, query: new URLSearchParams(query), section: parts[0] ?? '' };
    }
  }
  return null;
}

export function navigate(path) {
  location.hash = `#/${path}`;
}

// A change of address not made by a link (back, forward, a typed address): asks the view on
// screen first when it guards its leaving. While it asks, the address is put back (without an
// event) so that it names what is shown; once the person chooses to leave, the address they
// asked for is followed.
async function addressChanged() {
  const target = location.hash;
  if (leaveGuard && target !== shownHash) {
    history.replaceState(null, '', shownHash || '#/');
    const guard = leaveGuard;
    if (!(await guard())) return;
    if (guard !== leaveGuard) return;
    leaveGuard = null;
    location.hash = target;
    return;
  }
  await route();
}

// A click on a link inside the app while the view guards its leaving: asked before the address
// changes, so that staying leaves the history as it was.
async function linkClicked(ev) {
  if (!leaveGuard || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const link = ev.target.closest?.('a[href^="#/"]');
  if (!link || link.target === '_blank') return;
  const target = link.getAttribute('href');
  if (target === shownHash) return;
  ev.preventDefault();
  const guard = leaveGuard;
  if (!(await guard()) || guard !== leaveGuard) return;
  leaveGuard = null;
  location.hash = target;
}

async function route() {
  if (!session.me) return;
  disposeView();
  disposeView = () => {};
  leaveGuard = null;
  shownHash = location.hash;
  const at = parse(location.hash);
  const main = $('view');
  markNav(at?.section ?? '');
  $('nav').classList.remove('open');
  $('menu-button').setAttribute('aria-expanded', 'false');
  if (!at) {
    clear(main, h('section', { class: 'panel' }, h('h1', {}, 'No such page'), h('p', {}, 'This address does not lead anywhere. '), h('a', { href: '#/' }, 'Go to the start')));
    document.title = 'Not found · NullOps';
    return;
  }
  const n = ++navigation;
  performance.mark(`nav-${n}`);
  const ctx = {
    me: session.me,
    isAdmin: session.me.role === 'ADMIN',
    params: at.params,
    query: at.query,
    navigate,
    current: () => n === navigation,
    // `ask` answers whether the view may be left (a promise of a boolean); it is asked for every
    // navigation inside the app while this view is shown.
    guardLeave(ask) { if (n === navigation) leaveGuard = ask; },
    title(text) { if (n === navigation) document.title = `${text} · NullOps`; },
    // The view shows its data: the time since navigation is measured once.
    ready() {
      if (n !== navigation || ctx.measured) return;
      ctx.measured = true;
      performance.measure(`view:${at.pattern || 'home'}`, `nav-${n}`);
    },
  };
  clear(main, h('p', { class: 'loading' }, 'Loading…'));
  try {
    let module;
    try {
      module = await import(`./views/${at.view}.js`);
    } catch (e) {
      // A module that could not be fetched (the server restarting, a dropped connection) stays
      // failed for this page's life, whatever is tried again: load the page once more.
      if (sessionStorage.getItem(MODULE_RELOAD) !== location.hash) {
        console.warn('reloading: a view could not be fetched', e);
        sessionStorage.setItem(MODULE_RELOAD, location.hash);
        location.reload();
        return;
      }
      throw e;
    }
    if (n !== navigation) return;
    // "Loading…" stays until the view draws its first data (it replaces root's content then).
    const root = h('div', { class: 'view' }, h('p', { class: 'loading' }, 'Loading…'));
    clear(main, root);
    const dispose = await module.show(root, ctx);
    if (n !== navigation) { dispose?.(); return; }
    sessionStorage.removeItem(MODULE_RELOAD);
    disposeView = dispose ?? (() => {});
    const heading = main.querySelector('h1');
    if (heading && document.activeElement === document.body) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  } catch (e) {
    console.error(e);
    if (n !== navigation) return;
    if (e.code === 'UNAUTHENTICATED') return;

    clear(main, e.code === 'FORBIDDEN' ? refusal(e.message) : h('section', { class: 'panel' }, h('h1', {}, ERROR_HEADINGS[e.code] ?? 'This page could not be shown'),
      h('p', { class: 'error' }, errorText(e)), h('p', {}, h('a', { href: '#/' }, 'Go to the start'))));
  }
}

// The heading of a page that could not be shown, by the API's code.
const ERROR_HEADINGS = { NOT_FOUND: 'Not found', UNAVAILABLE: 'Not available just now' };

// What every page a user may not use shows, the same way: what it is for, and what to do.
// A view throws an error with code FORBIDDEN and a sentence saying why; the router shows this.
function refusal(why) {
  document.title = 'Not for you · NullOps';
  return h('section', { class: 'panel refusal', role: 'alert', dataset: { code: 'FORBIDDEN' } },
    h('h1', {}, 'You may not use this page'), h('p', {}, why),
    h('p', {}, 'An admin can grant your team access, or make you an admin. ', h('a', { href: '#/' }, 'Go to the start')));
}

function markNav(section) {
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.dataset.route === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function showNav() {
  const admin = session.me.role === 'ADMIN';
  clear($('nav-list'), NAV.filter(([, , who]) => who === 'all' || admin).map(([r, label]) =>
    h('li', {}, h('a', { href: `#/${r}`, dataset: { route: r } }, label))));
  clear($('whoami'), h('a', { href: '#/account', title: 'Your account and API tokens' }, session.me.username), ' ',
    h('span', { class: 'role' }, session.me.role === 'ADMIN' ? 'admin' : 'user'));
}

function showSignIn(reason) {
  session.me = null;
  disposeView();
  disposeView = () => {};
  closeLive();
  document.body.classList.add('signed-out');
  $('shell').hidden = true;
  $('login').hidden = false;
  const error = $('login-error');
  if (reason) { clear(error, reason); error.hidden = false; } else error.hidden = true;
  document.title = 'Sign in · NullOps';
  // Someone may have started typing while the page asked who is signed in: keep their place.
  if (!$('login').contains(document.activeElement)) $('login-username').focus();
}

async function signedIn(me) {
  session.me = me;
  document.body.classList.remove('signed-out');
  $('login').hidden = true;
  $('shell').hidden = false;
  showNav();
  await loadEnums().catch((e) => console.warn('enum descriptions', e));
  route();
}

async function start() {
  onSignedOut(() => {
    if (session.me) showSignIn('Your session ended. Sign in again to carry on.');
  });
  onLiveStatus((status) => {
    const banner = $('live-status');
    banner.hidden = status !== 'reconnecting';
    document.body.dataset.live = status;
  });
  $('menu-button').addEventListener('click', () => {
    const open = $('nav').classList.toggle('open');
    $('menu-button').setAttribute('aria-expanded', String(open));
  });
  $('sign-out').addEventListener('click', async () => {
    await gql('mutation { logout }').catch(() => {});
    showSignIn();
  });
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const button = ev.target.querySelector('button');
    button.disabled = true;
    try {
      const { login } = await gql('mutation($u: String!, $p: String!) { login(username: $u, password: $p) { user { username role } } }',
        { u: form.get('username'), p: form.get('password') });
      ev.target.reset();
      await signedIn(login.user);
    } catch (e) {
      const error = $('login-error');
      clear(error, e.code === 'UNAUTHENTICATED' ? 'Wrong username or password.' : errorText(e));
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  window.addEventListener('hashchange', addressChanged);
  document.addEventListener('click', linkClicked, true);
  try {
    const { me } = await gql('{ me { username role } }');
    await signedIn(me);
  } catch (e) {
    showSignIn(e.code === 'UNAUTHENTICATED' ? null : e.message);
  }
}

start();
