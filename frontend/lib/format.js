// How figures and times read: sizes, CPU, durations, countdowns, dates.

const two = (n) => String(n).padStart(2, '0');

export function dateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { weekday: 'short', year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function shortTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// 2 d 03 h, 3 h 04 min, 4 min 05 s: the two largest units.
export function duration(seconds, { precise = false } = {}) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (precise) {
    const parts = [];
    if (d) parts.push(`${d} d`);
    if (d || hh) parts.push(`${d ? two(hh) : hh} h`);
    if (d || hh || mm) parts.push(`${d || hh ? two(mm) : mm} min`);
    parts.push(`${d || hh || mm ? two(ss) : ss} s`);
    return parts.join(' ');
  }
  if (d) return `${d} d ${two(hh)} h`;
  if (hh) return `${hh} h ${two(mm)} min`;
  if (mm) return `${mm} min ${two(ss)} s`;
  return `${ss} s`;
}

export function secondsUntil(iso) {
  return Math.max(0, Math.round((new Date(iso).getTime() - Date.now()) / 1000));
}

export function ago(iso) {
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 5) return 'just now';
  return `${duration(s)} ago`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function mib(n) {
  return bytes(n * 1024 * 1024);
}

export function cpu(millicores) {
  if (millicores === null || millicores === undefined) return '—';
  const m = Math.round(millicores);
  return m >= 1000 ? `${(m / 1000).toFixed(2)} CPU` : `${m} m`;
}

export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

// Cleanup timers are entered in hours and days: 86400 -> "1 d".
export function lifetime(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds % 86400 === 0) return plural(seconds / 86400, 'day');
  if (seconds % 3600 === 0) return plural(seconds / 3600, 'hour');
  return duration(seconds);
}

// Who did something, from an event's actor (`user:NAME` or `system`): the person, or NullOps
// itself (the reaper, the demo's set-up).
export function who(actor) {
  if (actor === 'system') return 'NullOps';
  return String(actor ?? '').replace(/^user:/, '');
}
