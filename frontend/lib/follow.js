// Keeping a view current: `followCatalog` asks a view to load again when the part of the catalog
// it shows changes (or what the caller may see changes, or the connection was broken);
// `ticker` re-renders countdowns.

import { live } from './api.js';

// Calls `reload()` (at most once per animation frame burst) when a catalog change of one of
// `kinds` arrives, when access changes, and after a reconnection. Returns the stop function.
export function followCatalog(kinds, reload, { listening = false } = {}) {
  let queued = false;
  const again = () => {
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; reload(); }, 50);
  };
  return live('subscription { catalogUpdated { kind name removed } }', {}, {
    next: (d) => {
      const c = d.catalogUpdated;
      // LISTENING: the feed starts; what the page loaded meanwhile may be out of date. Only a
      // page that draws nothing when its data is unchanged asks to load again then (a redraw
      // would replace a form being filled in).
      if (c.kind === 'LISTENING') { if (listening) again(); return; }
      if (c.kind === 'ACCESS' || kinds.includes(c.kind)) again();
    },
    resync: again,
    error: (e) => console.warn('catalog feed ended', e),
  });
}

// Calls `fn()` every `ms` until stopped.
export function ticker(fn, ms = 1000) {
  const timer = setInterval(fn, ms);
  return () => clearInterval(timer);
}

// Runs every function in `stops` (for a view's dispose).
export function stopAll(stops) {
  return () => stops.splice(0).forEach((stop) => stop?.());
}
