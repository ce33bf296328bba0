// The API client: queries and mutations over POST, and one WebSocket (graphql-transport-ws)
// carrying every live feed of the page. The session cookie authenticates both.
//
// The socket reconnects by itself after the server restarts or the network drops, with growing
// pauses (bounded), and subscribes again to every feed still wanted. A feed that missed
// something (reconnected, or told it fell behind) calls its `resync`, so its view asks again for
// what it shows: pages catch up without a reload.

export class ApiError extends Error {
  // `code`: the API's stable code (extensions.code), or NETWORK when the server was not reached.
  // `field`: the input it is about, when the server says (extensions.field).
  // `problems`: a refused pipeline's problems, each `{ node, field, code, message }`.
  constructor(message, code, field = null, problems = []) {
    super(message);
    this.code = code;
    this.field = field;
    this.problems = problems;
  }
}

function fromErrors(errors) {
  const first = errors[0] ?? {};
  const ext = first.extensions ?? {};
  return new ApiError(first.message ?? 'the server refused this', ext.code ?? 'INTERNAL', ext.field ?? null, ext.problems ?? []);
}

const listeners = new Set();

// Called with UNAUTHENTICATED errors, so the app can ask to sign in again.
export function onSignedOut(fn) {
  listeners.add(fn);
}

// A request the network dropped before any answer is sent once more after this pause, when it
// changes nothing (a query) or changing it twice is harmless (signing in).
const RESEND_AFTER_MS = 300;
const resendable = (query) => !/^\s*mutation\b/.test(query) || /^\s*mutation[^{]*\{\s*login\(/.test(query);

// A request with no answer by then is given up (as the CLI does), so a page never waits forever.
const REQUEST_TIMEOUT_MS = 60_000;

export async function gql(query, variables = {}) {
  const send = () => fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  let res;
  try {
    try {
      res = await send();
    } catch (dropped) {
      if (dropped.name === 'TimeoutError' || !resendable(query)) throw dropped;
      await new Promise((resolve) => { setTimeout(resolve, RESEND_AFTER_MS); });
      res = await send();
    }
  } catch (e) {
    if (e.name === 'TimeoutError') {
      throw new ApiError(`The server did not answer within ${REQUEST_TIMEOUT_MS / 1000} s. It may be overloaded; try again in a moment.`, 'NETWORK');
    }
    throw new ApiError('The server cannot be reached. It may be restarting; try again in a moment.', 'NETWORK');
  }
  let body;
  try {
    body = await res.json();
  } catch {
    throw new ApiError(`The server answered ${res.status} ${res.statusText}, not GraphQL.`, 'NETWORK');
  }
  if (body.errors?.length) {
    const error = fromErrors(body.errors);
    if (error.code === 'UNAUTHENTICATED') listeners.forEach((fn) => fn(error));
    throw error;
  }
  return body.data;
}

// ---------------------------------------------------------------------------------------------
// Live feeds

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;

const feeds = new Map(); // id -> { query, variables, next, error, resync, started }
const statusListeners = new Set();
let socket = null;
let status = 'idle'; // idle | connecting | open | reconnecting
let nextId = 1;
let retryMs = RETRY_FIRST_MS;
let retryTimer = null;
let everOpened = false;

function setStatus(s) {
  status = s;
  statusListeners.forEach((fn) => fn(s));
}

// `fn(status)` on every change of the live connection: connecting, open, reconnecting.
export function onLiveStatus(fn) {
  statusListeners.add(fn);
  fn(status);
  return () => statusListeners.delete(fn);
}

function send(message) {
  if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function start(id) {
  const f = feeds.get(id);
  send({ id, type: 'subscribe', payload: { query: f.query, variables: f.variables } });
}

function connect() {
  if (socket) return;
  clearTimeout(retryTimer);
  setStatus(everOpened ? 'reconnecting' : 'connecting');
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
  const ws = new WebSocket(url, 'graphql-transport-ws');
  socket = ws;
  let acked = false;
  ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
  ws.onmessage = (msg) => {
    let m;
    try { m = JSON.parse(msg.data); } catch { return; }
    if (m.type === 'connection_ack') {
      acked = true;
      const again = everOpened;
      everOpened = true;
      retryMs = RETRY_FIRST_MS;
      setStatus('open');
      for (const [id, f] of feeds) {
        start(id);
        // After a break, what the page shows may be stale: it asks again.
        if (again || f.missed) f.resync?.();
        f.missed = false;
      }
    } else if (m.type === 'next') {
      const f = feeds.get(m.id);
      if (!f) return;
      if (m.payload.errors?.length) fail(m.id, fromErrors(m.payload.errors));
      else f.next(m.payload.data);
    } else if (m.type === 'error') {
      fail(m.id, fromErrors(m.payload));
    } else if (m.type === 'complete') {
      // The server ended it (it does so after an error); a feed still wanted starts again.
      if (feeds.has(m.id)) restart(m.id);
    } else if (m.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong' }));
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    if (!feeds.size) { setStatus('idle'); return; }
    for (const f of feeds.values()) f.missed = true;
    setStatus('reconnecting');
    retryTimer = setTimeout(connect, acked ? RETRY_FIRST_MS : retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  };
}

function fail(id, error) {
  const f = feeds.get(id);
  if (!f) return;
  if (error.code === 'UNAUTHENTICATED') {
    listeners.forEach((fn) => fn(error));
    feeds.delete(id);
    f.error?.(error);
  } else if (error.code === 'CONFLICT') {
    // Fell behind: subscribe again and catch up.
    restart(id);
  } else {
    feeds.delete(id);
    f.error?.(error);
  }
}

function restart(id) {
  const f = feeds.get(id);
  if (!f) return;
  setTimeout(() => {
    if (!feeds.has(id)) return;
    start(id);
    f.resync?.();
  }, RETRY_FIRST_MS);
}

// Follows `query`: `next(data)` for each item, `error(ApiError)` when the feed ends for good,
// `resync()` after anything may have been missed. Returns the function that stops it.
export function live(query, variables, { next, error, resync }) {
  const id = String(nextId++);
  feeds.set(id, { query, variables, next, error, resync, missed: false });
  if (socket?.readyState === WebSocket.OPEN) start(id);
  else connect();
  return () => {
    if (!feeds.delete(id)) return;
    send({ id, type: 'complete' });
  };
}

// Stops every feed and closes the socket (signing out).
export function closeLive() {
  for (const id of feeds.keys()) send({ id, type: 'complete' });
  feeds.clear();
  clearTimeout(retryTimer);
  const ws = socket;
  socket = null;
  ws?.close();
  setStatus('idle');
}
