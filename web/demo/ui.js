// ui.js: what the demo pages share: the connection pill, readable times,
// event payloads, shell commands for empty states. Dependency-free; it reads
// payloads only through herald.js's text() and json(), so a change of the
// wire encoding is handled there.
import { text, json } from '../herald.js';

const TRANSPORTS = { websocket: 'WebSocket', sse: 'Server-Sent Events', longpoll: 'long-polling' };
const STATES = { idle: 'Idle', connecting: 'Connecting', open: 'Live', reconnecting: 'Reconnecting', closed: 'Offline' };

/**
 * statusPill returns an onStatus handler for new Herald() that shows the
 * connection on el: its state (data-state: connecting, open, reconnecting,
 * closed) and transport (data-transport), in words.
 */
export function statusPill(el) {
  el.setAttribute('role', 'status');
  return ({ state, transport, delay, error }) => {
    el.dataset.state = state;
    el.dataset.transport = transport ?? '';
    let label = STATES[state] ?? state;
    if (state === 'reconnecting' && delay) label += ` in ${Math.max(1, Math.round(delay / 1000))} s`;
    el.replaceChildren(node('span', 'dot'), node('span', 'state', label),
      node('span', 'transport', TRANSPORTS[transport] ?? transport ?? ''));
    el.title = error ? `${error.code}: ${error.message}` : `${label} over ${TRANSPORTS[transport] ?? transport}`;
  };
}

/** node makes an element with a class and text. */
export function node(tag, cls, content) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (content !== undefined) e.textContent = content;
  return e;
}

// ---- times ----

const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const clock = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dayClock = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' });

/** relative says how long ago iso was: "now", "12 seconds ago", "yesterday". */
export function relative(iso, now = Date.now()) {
  const s = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(s);
  if (abs < 5) return rtf.format(0, 'second');
  if (abs < 60) return rtf.format(s, 'second');
  if (abs < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (abs < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  if (abs < 7 * 86400) return rtf.format(Math.round(s / 86400), 'day');
  return full.format(new Date(iso));
}

/**
 * timeEl is a <time> for iso: relative (refreshed while the page is open)
 * or, with style 'clock', the local time of day (with the date when it is
 * not today). The title has the full local date and time.
 */
export function timeEl(iso, style = 'relative') {
  const t = node('time');
  if (!iso) return t;
  t.dateTime = iso;
  t.title = full.format(new Date(iso));
  if (style === 'clock') {
    const d = new Date(iso);
    t.textContent = d.toDateString() === new Date().toDateString() ? clock.format(d) : dayClock.format(d);
  } else {
    t.dataset.relative = '';
    t.textContent = relative(iso);
  }
  return t;
}

setInterval(() => {
  const now = Date.now();
  for (const t of document.querySelectorAll('time[data-relative]')) t.textContent = relative(t.dateTime, now);
}, 10000);

// ---- payloads ----

/**
 * payload renders an event's data: JSON pretty-printed, text as it is,
 * nothing for an empty payload. Returns {el, kind: 'json'|'text'|'empty'}.
 */
export function payload(ev) {
  const t = text(ev);
  if (t === '') return { el: node('span', 'payload empty', 'no data'), kind: 'empty' };
  try {
    const v = json(ev);
    if (v !== null && typeof v === 'object') {
      // Short objects stay on one line; longer ones are indented.
      const line = JSON.stringify(v);
      return { el: node('pre', 'payload json', line.length <= 80 ? line : JSON.stringify(v, null, 2)), kind: 'json' };
    }
  } catch { /* not JSON: text */ }
  return { el: node('span', 'payload text', t), kind: 'text' };
}

/** kindLabel is "published", "updated #12", "deleted #12". */
export function kindLabel(ev) {
  const kind = (ev.kind ?? 'EVENT_KIND_PUBLISHED').replace('EVENT_KIND_', '').toLowerCase();
  return ev.targetPosition && ev.targetPosition !== '0' ? `${kind} #${ev.targetPosition}` : kind;
}

// ---- shell commands ----

/** shellQuote quotes s for a POSIX shell. */
export function shellQuote(s) {
  return /^[A-Za-z0-9_./:=@%-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * eventsURL is the REST URL of a channel's events on this server. The name
 * is one path segment: '/' must be escaped (%2F), while ':', '@' and '=',
 * legal in a segment, stay readable.
 */
export function eventsURL(channel) {
  const segment = encodeURIComponent(channel).replace(/%3A/gi, ':').replace(/%40/gi, '@').replace(/%3D/gi, '=');
  return `${location.origin}/v1/channels/${segment}/events`;
}

/**
 * curlPublish is a curl command that publishes data to channel: a JSON
 * object or array as JSON (it arrives as that value), anything else as text.
 */
export function curlPublish(channel, data, type) {
  const url = eventsURL(channel) + (type ? `?type=${encodeURIComponent(type)}` : '');
  let value;
  try { value = JSON.parse(data); } catch { /* text */ }
  if (value !== null && typeof value === 'object') {
    return `curl --json ${shellQuote(JSON.stringify({ data: value }))} ${shellQuote(url)}`;
  }
  // curl --data sends form-encoded text, which Herald stores as text.
  return `curl --data ${shellQuote(data)} ${shellQuote(url)}`;
}

/**
 * commandBlock shows a shell command with a copy button.
 */
export function commandBlock(command) {
  const box = node('div', 'command');
  const code = node('code', '', command);
  const copy = node('button', 'copy', 'Copy');
  copy.type = 'button';
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(command);
      copy.textContent = 'Copied';
    } catch {
      // No clipboard (insecure origin, denied): select the text instead.
      getSelection().selectAllChildren(code);
      copy.textContent = 'Selected: press Ctrl+C';
    }
    setTimeout(() => { copy.textContent = 'Copy'; }, 2000);
  });
  box.append(code, copy);
  return box;
}

/** errorText is a HeraldError in words. */
export function errorText(err) {
  return err ? `${err.code || 'error'}: ${err.message}` : '';
}

/** channelList fills el with links to the server's channels (first page), each made by href(name). */
export async function channelList(herald, el, href, current) {
  try {
    const page = await herald.channels({ pageSize: 50 });
    const items = (page.channels ?? []).map((c) => {
      const li = node('li');
      const a = node('a', '', c.name);
      a.href = href(c.name);
      if (c.name === current) a.setAttribute('aria-current', 'page');
      li.append(a);
      return li;
    });
    if (items.length === 0) items.push(node('li', 'muted', 'No channels yet.'));
    el.replaceChildren(...items);
  } catch (err) {
    el.replaceChildren(node('li', 'muted', `Cannot list channels (${err.code}).`));
  }
}

/**
 * historyPage reads one page of channel's history (herald.history), or
 * returns null when the channel does not exist. It asks the channel list
 * first, so that a channel nobody has published to yet is an ordinary
 * answer rather than a 404 in the browser's console; when the list is not
 * allowed, the history call answers (not_found is then null too).
 */
export async function historyPage(herald, channel, opts) {
  try {
    const page = await herald.channels({ prefix: channel, pageSize: 1 });
    if (page.channels?.[0]?.name !== channel) return null; // the name sorts first among its prefix's
  } catch { /* not allowed to list: ask the channel itself */ }
  try {
    return await herald.history(channel, opts);
  } catch (err) {
    if (err.code === 'not_found') return null;
    throw err;
  }
}
