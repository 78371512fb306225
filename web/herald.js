/**
 * herald.js: a small, dependency-free browser client for Herald (an ES module).
 *
 *   import { Herald, text } from '/herald.js';
 *   const herald = new Herald();   // same origin, transport 'auto'
 *   herald.subscribe(['chat:lobby'], { cursor: '0', onEvent: (ev) => console.log(ev.position, text(ev)) });
 *   const ev = await herald.publish('chat:lobby', 'hello');    // resolves when the server has stored it
 *   await herald.edit('chat:lobby', ev.position, 'hello!');    // every subscriber gets an UPDATED entry
 *
 * Authentication. Give `getToken` (or a fixed `token`) and every request carries it:
 *
 *   const herald = new Herald({
 *     getToken: () => fetch('/my-app/herald-token').then((r) => r.text()),   // a JWT
 *     onServerEvent: (ev) => console.log('for me:', text(ev)),   // the token's `channels` claim (WebSocket)
 *   });
 *
 * REST calls send `Authorization: Bearer`; EventSource and WebSocket URLs carry
 * `access_token` (they cannot set headers). getToken is called to connect, after
 * the server refused or ended a stream because the token expired, and, on a
 * WebSocket, before the token's `exp` to refresh it in place (no reconnect).
 * Without getToken, a refused or expired token fails the subscriptions with
 * HeraldError code 'unauthenticated' and the client stops retrying them.
 *
 * Transports. With `transport: 'auto'` (the default) the client receives over
 * Server-Sent Events while the page only listens, and moves to one WebSocket
 * as soon as the page publishes or edits, or when `twoWay: true` is given. When
 * a stream fails to open `maxOpenFailures` times in a row while the server
 * answers plain HTTP (a proxy or firewall in the way, not an outage), or the
 * browser lacks WebSocket or EventSource, it falls back for the rest of the
 * page's life: WebSocket, then SSE, then long-polling `GET /v1/events`. `transport: 'websocket' | 'sse' | 'longpoll'`
 * forces one transport. Publishing without a WebSocket goes over REST.
 *
 * Delivery. Every subscription remembers the position of the last event it
 * delivered. After a disconnect it reconnects with exponential backoff and
 * jitter and resumes from that position; events at or below it are dropped, so
 * each event reaches `onEvent` once and in order. When retention removed events
 * the subscription would have replayed, `onTruncated` is called.
 *
 * Positions are int64 values and travel as decimal strings, as in protojson.
 * Events are JSON objects: {position, channel, type, data, format, kind,
 * targetPosition, idempotencyKey, createTime, updateTime, deleted, author}.
 * `data` is the payload as the publisher gave it: a JSON value (JSON data;
 * `format` is DATA_FORMAT_JSON only when the value is a string), a string with
 * format DATA_FORMAT_TEXT (text), or base64 for bytes. text(), json() and
 * bytes() read any of them.
 *
 * @module herald
 */

/** Data formats as they appear in `event.format` (absent: bytes). */
export const Format = Object.freeze({
  BYTES: 'DATA_FORMAT_BYTES',
  JSON: 'DATA_FORMAT_JSON',
  TEXT: 'DATA_FORMAT_TEXT',
});

/** Event kinds as they appear in `event.kind`. */
export const Kind = Object.freeze({
  PUBLISHED: 'EVENT_KIND_PUBLISHED',
  UPDATED: 'EVENT_KIND_UPDATED',
  DELETED: 'EVENT_KIND_DELETED',
});

/**
 * HeraldError is how every failure is reported: a stable snake_case `code`
 * (the server's, e.g. "not_found", or "unavailable" for network errors), a
 * human `message`, and the HTTP `status` when one is known.
 */
export class HeraldError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} [status]
   */
  constructor(code, message, status = 0) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.status = status;
  }
}

/**
 * @typedef {object} HeraldEvent  A protojson Event.
 * @property {string} position
 * @property {string} channel
 * @property {string} [type]
 * @property {any} [data]               a JSON value, a string, or base64 (see format)
 * @property {string} [format]          one of Format; absent: bytes (base64)
 * @property {string} [kind]            one of Kind
 * @property {string} [targetPosition]  for UPDATED and DELETED entries
 * @property {string} [idempotencyKey]
 * @property {string} [createTime]
 * @property {string} [updateTime]
 * @property {boolean} [deleted]
 * @property {string} [seq]  the entry's number in its channel: 1, 2, 3, ... with no gap
 * @property {Object<string, string>} [tags]  the tags given at publish
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {string|number|bigint} [cursor]  deliver events after this position; omit for live only
 * @property {string[]} [types]  only events of these types: exact, or a prefix ending in '.*' ('chat.*')
 * @property {Object<string, string>} [tags]  only events carrying all these tags
 * @property {(ev: HeraldEvent, sub: Subscription) => void} [onEvent]
 * @property {(info: {channels: string[], cursor: string, truncatedThrough: string}) => void} [onTruncated]
 *   events up to truncatedThrough were removed by retention before they could be delivered
 * @property {(info: object) => void} [onSubscribed]  the server confirmed a (re)subscription
 * @property {(err: HeraldError) => void} [onError]  the subscription failed for good and was closed
 */

/**
 * @typedef {object} HeraldOptions
 * @property {string} [url]  server origin; default location.origin
 * @property {'auto'|'websocket'|'sse'|'longpoll'} [transport]  default 'auto'
 * @property {boolean} [twoWay]  with 'auto': use a WebSocket from the start
 * @property {number} [minDelay]  first reconnect delay in ms (default 500)
 * @property {number} [maxDelay]  largest reconnect delay in ms (default 15000)
 * @property {number} [maxOpenFailures]  failed opens in a row before falling back (default 3)
 * @property {number} [pollWait]  long-poll wait in seconds (default 25)
 * @property {number} [publishTimeout]  ms before publish() gives up (default 30000)
 * @property {(s: {state: string, transport: string}) => void} [onStatus]
 *   state is 'connecting', 'open', 'reconnecting' or 'closed' ('closed' with `error` when a
 *   WebSocket stopped because its token was refused or expired)
 * @property {string} [token]  a JWT or API key sent with every request
 * @property {() => string|Promise<string>} [getToken]  returns a fresh token: called to
 *   connect, when the token was refused or expired, and before a WebSocket's token expires
 * @property {(ev: HeraldEvent) => void} [onServerEvent]  events of the subscription the server
 *   opens from the token's `channels` claim (WebSocket only: 'auto' then starts on one at once)
 */

const ORDER = ['websocket', 'sse', 'longpoll'];

/** Herald is one connection to a server. Create it once per page. */
export class Herald {
  /** @param {HeraldOptions} [options] */
  constructor(options = {}) {
    this.url = (options.url ?? globalThis.location?.origin ?? '').replace(/\/+$/, '');
    this.mode = options.transport ?? 'auto';
    this.twoWay = Boolean(options.twoWay) || this.mode === 'websocket';
    this.minDelay = options.minDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 15000;
    this.maxOpenFailures = options.maxOpenFailures ?? 3;
    this.pollWait = options.pollWait ?? 25;
    this.publishTimeout = options.publishTimeout ?? 30000;
    this.onStatus = options.onStatus ?? (() => {});
    this.onServerEvent = options.onServerEvent;
    /** The transport in use: 'websocket', 'sse', 'longpoll' or null before the first use. */
    this.transport = null;
    this.state = 'idle';
    this._subs = new Map(); // id -> Subscription
    this._pending = new Map(); // publish id -> {id, req, resolve, reject, timer, rest}
    this._failed = new Set(); // transports given up on ('auto' only)
    this._session = null;
    this._seq = 0;
    this._closed = false;
    this._token = options.token || null; // never logged
    this._getToken = options.getToken;
    this._tokenP = null; // getToken() under way, shared by every caller
    this._serverPosition = undefined; // last position of the "@server" subscription
    if (this.onServerEvent) {
      if (this.mode === 'auto') this.twoWay = true;
      this._ensure();
    }
  }

  /**
   * subscribe starts delivering the events of channels (one or more) to
   * opts.onEvent, in position order, each once.
   * @param {string|string[]} channels
   * @param {SubscribeOptions} [opts]
   * @returns {Subscription}
   */
  subscribe(channels, opts = {}) {
    if (this._closed) throw new HeraldError('canceled', 'client is closed');
    const sub = new Subscription(this, `s${++this._seq}`, [].concat(channels), opts);
    this._subs.set(sub.id, sub);
    if (this._session) this._session.add(sub);
    else this._ensure(); // a new session adds every subscription
    return sub;
  }

  /**
   * publish appends an event to channel and resolves with the stored event
   * once the server acknowledged it. It is retried across reconnects with
   * the same idempotency key, so it is stored once. Rejects with a
   * HeraldError.
   * @param {string} channel
   * @param {string|Uint8Array|ArrayBuffer|object|number|boolean} data  strings are
   *   sent as text, bytes as bytes, anything else as a JSON value
   * @param {{type?: string, idempotencyKey?: string, tags?: Object<string, string>}} [opts]
   * @returns {Promise<HeraldEvent>}
   */
  publish(channel, data, opts = {}) {
    if (this._closed) return Promise.reject(new HeraldError('canceled', 'client is closed'));
    this._wantTwoWay();
    const req = { channel, ...payloadOf(data), idempotencyKey: opts.idempotencyKey ?? newKey() };
    if (opts.type) req.type = opts.type;
    if (opts.tags && Object.keys(opts.tags).length > 0) req.tags = opts.tags;
    return new Promise((resolve, reject) => {
      const p = { id: `p${++this._seq}`, req, resolve, reject, rest: false };
      p.timer = setTimeout(() => this._settle(p.id, null,
        new HeraldError('deadline_exceeded', `publish to ${channel} not acknowledged within ${this.publishTimeout} ms`)),
      this.publishTimeout);
      this._pending.set(p.id, p);
      const session = this._ensure();
      if (session instanceof WSSession) session.publish(p);
      else this._restPublish(p);
    });
  }

  /**
   * edit replaces the data of the event at position (REST PATCH). Every
   * subscriber receives an UPDATED entry with targetPosition = position.
   * @returns {Promise<{event: HeraldEvent, entry: HeraldEvent}>}
   */
  edit(channel, position, data) {
    this._wantTwoWay();
    return this._request('PATCH', `${eventsPath(channel)}/${position}`, payloadOf(data));
  }

  /**
   * delete deletes the event at position (REST DELETE). Every subscriber
   * receives a DELETED entry with targetPosition = position.
   * @returns {Promise<{entry: HeraldEvent}>}
   */
  delete(channel, position) {
    this._wantTwoWay();
    return this._request('DELETE', `${eventsPath(channel)}/${position}`);
  }

  /**
   * history reads one page of a channel (REST GET). cursor is exclusive; 0
   * or absent starts at the oldest (forward) or newest (backward) event.
   * fromSeq starts at the entry with that seq instead (forward, no cursor).
   * @param {string} channel
   * @param {{cursor?: string|number, direction?: 'forward'|'backward', limit?: number, view?: 'log'|'current', fromSeq?: string|number}} [opts]
   * @returns {Promise<{events?: HeraldEvent[], nextCursor?: string, hasMore?: boolean, truncatedThrough?: string}>}
   */
  history(channel, opts = {}) {
    const q = new URLSearchParams();
    for (const k of ['cursor', 'direction', 'limit', 'view']) {
      if (opts[k] !== undefined && opts[k] !== '') q.set(k, String(opts[k]));
    }
    if (opts.fromSeq !== undefined && opts.fromSeq !== '') q.set('from_seq', String(opts.fromSeq));
    return this._request('GET', `${eventsPath(channel)}?${q}`);
  }

  /**
   * channels lists channels by name, a page at a time (REST GET). Pass the
   * returned nextPageToken as pageToken for the next page; it is empty on
   * the last one.
   * @param {{prefix?: string, pageSize?: number, pageToken?: string}} [opts]
   * @returns {Promise<{channels?: {name: string, createTime?: string}[], nextPageToken?: string}>}
   */
  channels(opts = {}) {
    const q = new URLSearchParams();
    for (const k of ['prefix', 'pageSize', 'pageToken']) {
      if (opts[k] !== undefined && opts[k] !== '') q.set(k, String(opts[k]));
    }
    return this._request('GET', `/v1/channels?${q}`);
  }

  /** close ends every subscription and connection; pending publishes reject with "canceled". */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._session?.close();
    this._session = null;
    for (const sub of this._subs.values()) sub._active = false;
    this._subs.clear();
    for (const id of [...this._pending.keys()]) this._settle(id, null, new HeraldError('canceled', 'client closed'));
    this._setStatus('closed', this.transport);
  }

  // ---- internals ----

  _pick() {
    const ok = {
      websocket: typeof WebSocket === 'function',
      sse: typeof EventSource === 'function',
      longpoll: true,
    };
    if (this.mode !== 'auto') return ok[this.mode] ? this.mode : 'longpoll';
    return ORDER.slice(this.twoWay ? 0 : 1).find((t) => ok[t] && !this._failed.has(t)) ?? 'longpoll';
  }

  _ensure() {
    if (!this._session) {
      this.transport = this._pick();
      const Session = { websocket: WSSession, sse: SSESession, longpoll: PollSession }[this.transport];
      this._session = new Session(this);
      for (const sub of this._subs.values()) this._session.add(sub);
    }
    return this._session;
  }

  _restart() {
    this._session?.close();
    this._session = null;
    this._ensure();
    if (this.transport !== 'websocket') {
      for (const p of this._pending.values()) if (!p.rest) this._restPublish(p);
    }
  }

  // _wantTwoWay moves an 'auto' client that only listened over SSE or
  // long-poll to a WebSocket; subscriptions resume from their positions.
  _wantTwoWay() {
    if (this.mode !== 'auto' || this.twoWay) return;
    this.twoWay = true;
    if (this._session && this._pick() !== this.transport) this._restart();
  }

  // _probe asks the server over plain HTTP, with the token a stream used,
  // why that stream failed to open (browsers hide the status of a refused
  // EventSource or WebSocket). `blocked`: the server itself answers, so in
  // 'auto' the failure counts towards falling back; during an outage or a
  // restart nothing answers (or a proxy says 502-504) and the client keeps
  // its transport. `err`: the server's refusal when retrying will not help
  // (unauthenticated, permission_denied, ...).
  async _probe(path, token) {
    try {
      await this._fetch('GET', path, undefined, AbortSignal.timeout?.(5000), token);
      return { blocked: this.mode === 'auto' };
    } catch (err) {
      if (!err.status) return { blocked: false };
      return { blocked: this.mode === 'auto' && (err.status < 502 || err.status > 504), err: retryable(err) ? undefined : err };
    }
  }

  // _auth returns the token to use, or null. It calls getToken when there
  // is none yet, when the one it has expires within a second, or when it is
  // `refused` (the server refused it, or a stream it opened expired); a
  // token another caller already replaced is not fetched again. Throws an
  // 'unavailable' HeraldError (retried with backoff) when getToken fails.
  _auth(refused) {
    const t = this._token;
    if (!this._getToken || (t && t !== refused && !expiresWithin(t, 1000))) return Promise.resolve(t);
    if (!this._tokenP) {
      const p = this._tokenP = Promise.resolve()
        .then(() => this._getToken())
        .then((fresh) => (this._token = fresh ? String(fresh) : null), (err) => {
          throw new HeraldError('unavailable', `getToken failed: ${err?.message ?? err}`);
        })
        .finally(() => { if (this._tokenP === p) this._tokenP = null; });
    }
    return this._tokenP;
  }

  _serverEvent(ev) {
    const pos = BigInt(ev.position ?? 0);
    if (this._serverPosition !== undefined && pos <= BigInt(this._serverPosition)) return; // already delivered
    this._serverPosition = pos.toString();
    safely(this.onServerEvent, ev);
  }

  // _fallback gives up on a transport that keeps failing to open.
  _fallback(transport) {
    if (this.mode !== 'auto' || this.transport !== transport || this._closed) return false;
    this._failed.add(transport);
    this._restart();
    return true;
  }

  _setStatus(state, transport, extra = {}) {
    this.state = state;
    safely(this.onStatus, { state, transport, ...extra });
  }

  _deliver(sub, ev) {
    if (!sub._active) return;
    const pos = BigInt(ev.position ?? 0);
    if (sub.lastPosition !== undefined && pos <= BigInt(sub.lastPosition)) return; // already delivered
    sub.lastPosition = pos.toString();
    safely(sub._opts.onEvent, ev, sub);
  }

  _subscribed(sub, info) {
    if (!sub._active) return;
    const cursor = info.cursor ?? '0';
    if (sub.lastPosition === undefined) sub.lastPosition = cursor;
    if (info.historyTruncated) {
      safely(sub._opts.onTruncated, {
        channels: info.channels ?? sub.channels,
        cursor,
        truncatedThrough: info.truncatedThrough ?? '0',
      });
    }
    safely(sub._opts.onSubscribed, info);
  }

  // _advance moves a subscription's position to a cursor the server says
  // covers everything before it (long-poll responses).
  _advance(sub, cursor) {
    if (cursor === undefined || !sub._active) return;
    if (sub.lastPosition === undefined || BigInt(cursor) > BigInt(sub.lastPosition)) sub.lastPosition = String(cursor);
  }

  _failSub(sub, err) {
    if (!sub._active) return;
    sub.close();
    safely(sub._opts.onError, err);
  }

  _unsubscribe(sub) {
    if (!sub._active) return;
    sub._active = false;
    this._subs.delete(sub.id);
    this._session?.remove(sub);
  }

  _settle(id, published, err) {
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(published.event);
  }

  async _restPublish(p) {
    p.rest = true;
    const backoff = new Backoff(this.minDelay, this.maxDelay);
    const { channel, ...body } = p.req;
    while (this._pending.get(p.id) === p) {
      try {
        this._settle(p.id, await this._request('POST', eventsPath(channel), body));
        return;
      } catch (err) {
        if (!retryable(err)) return this._settle(p.id, null, err);
        await sleep(backoff.next());
      }
    }
  }

  /**
   * _request does one REST call and returns its JSON or throws a HeraldError.
   * When the token is refused and getToken can give a fresh one, it tries
   * once more with that.
   */
  async _request(method, path, body, signal) {
    const token = await this._auth();
    try {
      return await this._fetch(method, path, body, signal, token);
    } catch (err) {
      if (err.code !== 'unauthenticated' || !this._getToken || signal?.aborted) throw err;
      return this._fetch(method, path, body, signal, await this._auth(token));
    }
  }

  async _fetch(method, path, body, signal, token) {
    let resp, raw;
    const headers = {};
    if (body) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      resp = await fetch(this.url + path, {
        method,
        headers,
        body: body ? JSON.stringify(body) : undefined,
        cache: 'no-store',
        signal,
      });
      raw = await resp.text();
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new HeraldError('unavailable', `cannot reach ${this.url || 'the server'}: ${err.message}`);
    }
    let json = {};
    try { json = raw ? JSON.parse(raw) : {}; } catch { /* not JSON: keep {} */ }
    if (!resp.ok) {
      throw new HeraldError(json.code || (resp.status >= 500 ? 'unavailable' : 'unknown'),
        json.message || `HTTP ${resp.status}`, resp.status);
    }
    return json;
  }
}

/** Subscription is one subscribe() call. Close it to stop receiving. */
export class Subscription {
  constructor(client, id, channels, opts) {
    this._client = client;
    this._opts = opts;
    this._active = true;
    /** @type {string} */
    this.id = id;
    /** @type {string[]} */
    this.channels = channels;
    /** Position of the last event delivered (or the start cursor); undefined until known. @type {string|undefined} */
    this.lastPosition = opts.cursor === undefined || opts.cursor === null ? undefined : String(opts.cursor);
    /** The server-side filter (types, tags), or undefined for every event. */
    this.filter = filterOf(opts);
  }

  /** close stops the subscription; no event is delivered after it returns. */
  close() { this._client._unsubscribe(this); }
}

// ---- transports ----
// A session carries the client's subscriptions over one transport: add(sub),
// remove(sub), close(). It reconnects by itself and calls client._fallback
// when it cannot open.

/** WSSession multiplexes every subscription and publish over one WebSocket. */
class WSSession {
  constructor(client) {
    this.c = client;
    this.ws = null;
    this.open = false;
    this.closed = false;
    this.idle = false; // stopped after an authentication failure until the next add or publish
    this.failures = 0;
    this.backoff = new Backoff(client.minDelay, client.maxDelay);
    this.wire = new Map(); // frame id of a live subscribe -> Subscription
    this.ids = new Map(); // Subscription -> its current frame id
    this.n = 0;
    this.timer = null;
    this.pinger = null;
    this.token = null; // the token the connection runs on
    this.refused = undefined; // a token the server refused or that expired
    this.authFailures = 0; // refusals in a row when opening
    this.refreshTimer = null;
    this.refreshing = null; // {id, token} of a refresh command awaiting its answer
    this._connect();
  }

  add(sub) {
    if (this.open) this._subscribe(sub);
    else if (this.idle) this._connect();
  }

  remove(sub) {
    const id = this.ids.get(sub);
    this.ids.delete(sub);
    if (id === undefined) return;
    this.wire.delete(id);
    this._send({ id: `u${++this.n}`, unsubscribe: { subscriptionId: id } });
  }

  publish(p) {
    if (this.open) this._send({ id: p.id, publish: p.req });
    else if (this.idle) this._connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this._drop(1000);
  }

  async _connect() {
    const c = this.c;
    this.idle = false;
    c._setStatus('connecting', 'websocket');
    let token;
    try {
      token = await c._auth(this.refused);
    } catch (err) {
      if (!this.closed) this._later(undefined, err); // getToken failed
      return;
    }
    if (this.closed) return;
    this.token = token;
    const q = new URLSearchParams();
    if (token) q.set('access_token', token);
    // The server's own subscription (token channels) resumes where it was.
    if (c._serverPosition !== undefined) q.set('cursor', c._serverPosition);
    const qs = q.toString();
    let ws;
    try {
      ws = new WebSocket(`${c.url.replace(/^http/, 'ws')}/v1/ws${qs ? `?${qs}` : ''}`, 'herald.v1.json');
    } catch {
      this._lost(false);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.open = true;
      this.lastSeen = Date.now();
      this.authFailures = 0;
      this.refused = undefined;
      c._setStatus('open', 'websocket');
      this._scheduleRefresh(tokenExpiry(token));
      for (const sub of c._subs.values()) this._subscribe(sub);
      for (const p of c._pending.values()) if (!p.rest) this.publish(p);
      // Application pings: the browser hides protocol pings, and a dead
      // network only shows as silence.
      this.pinger = setInterval(() => {
        if (Date.now() - this.lastSeen > 45000) this._lost(true, 0);
        else this._send({ id: 'ping', ping: {} });
      }, 20000);
    };
    ws.onmessage = (m) => {
      this.lastSeen = Date.now();
      let f;
      try { f = JSON.parse(m.data); } catch { return; }
      this._frame(f);
    };
    ws.onclose = (e) => { if (this.ws === ws) this._lost(this.open, e.code); };
  }

  // _drop forgets the socket without waiting for its close handshake.
  _drop(code) {
    clearInterval(this.pinger);
    clearTimeout(this.refreshTimer);
    this.refreshing = null;
    const ws = this.ws;
    this.ws = null;
    this.open = false;
    this.wire.clear();
    this.ids.clear();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try { ws.close(code === 1000 ? 1000 : undefined); } catch { /* already closed */ }
    }
  }

  async _lost(wasOpen, code) {
    this._drop(code);
    if (this.closed) return;
    const c = this.c;
    let authErr;
    if (code === 1008) {
      // The token the connection was opened with expired (and was not
      // refreshed): reconnect with a fresh one and resume.
      authErr = new HeraldError('unauthenticated', 'the token expired and there is no getToken to get a fresh one', 401);
    } else if (!wasOpen) {
      const probe = await c._probe('/v1/ws', this.token);
      if (this.closed) return;
      if (probe.err?.code === 'unauthenticated') {
        authErr = probe.err;
        this.authFailures++;
      } else if (probe.blocked && ++this.failures >= c.maxOpenFailures && c._fallback('websocket')) {
        return;
      }
    }
    if (wasOpen) this.failures = 0;
    if (authErr) {
      this.refused = this.token;
      // A fresh token refused again: getToken cannot help; stop.
      if (!c._getToken || this.authFailures >= 2) return this._authFailed(authErr);
    }
    this._later(code);
  }

  _later(code, error) {
    const delay = this.backoff.next();
    this.c._setStatus('reconnecting', 'websocket', { code, delay, error });
    this.timer = setTimeout(() => this._connect(), delay);
  }

  // _authFailed fails every subscription and WebSocket publish with err and
  // stops reconnecting until the page subscribes or publishes again.
  _authFailed(err) {
    const c = this.c;
    this.idle = true;
    this.authFailures = 0;
    c._setStatus('closed', 'websocket', { error: err });
    for (const sub of [...c._subs.values()]) c._failSub(sub, err);
    for (const p of [...c._pending.values()]) if (!p.rest) c._settle(p.id, null, err);
  }

  // _scheduleRefresh plans replacing the connection's token before exp
  // (ms): at 80% of the time left, at least 5 s before exp when there is
  // room, and never sooner than in 1 s.
  _scheduleRefresh(exp) {
    clearTimeout(this.refreshTimer);
    if (!this.c._getToken || !exp) return;
    const left = exp - Date.now();
    const ws = this.ws;
    // (setTimeout fires at once for delays over 2^31-1 ms: about 24 days.)
    const delay = Math.min(2 ** 31 - 1, Math.max(1000, Math.min(left * 0.8, left - 5000)));
    this.refreshTimer = setTimeout(() => this._refresh(ws), delay);
  }

  async _refresh(ws) {
    let token;
    try {
      token = await this.c._auth(this.token);
    } catch {
      return; // getToken failed: the expiry close reconnects with a fresh token
    }
    if (this.ws !== ws || !this.open) return;
    if (!token || token === this.token) {
      this._scheduleRefresh(tokenExpiry(this.token)); // not renewed yet: ask again later
      return;
    }
    this.refreshing = { id: `r${++this.n}`, token };
    this._send({ id: this.refreshing.id, refresh: { token } });
  }

  _send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  _subscribe(sub) {
    if (!sub._active) return;
    const id = `${sub.id}.${++this.n}`; // fresh per attempt: late frames of an old one are ignored
    const old = this.ids.get(sub);
    if (old !== undefined) this.wire.delete(old);
    this.wire.set(id, sub);
    this.ids.set(sub, id);
    const subscribe = { channels: sub.channels };
    if (sub.lastPosition !== undefined) subscribe.cursor = sub.lastPosition;
    if (sub.filter) subscribe.filter = sub.filter;
    this._send({ id, subscribe });
  }

  _frame(f) {
    if (f.id === '@server') { // the subscription to the token's channels
      if (f.event) this.c._serverEvent(f.event);
      else if (f.subscribed && this.c._serverPosition === undefined) this.c._serverPosition = f.subscribed.cursor ?? '0';
      return;
    }
    if (this.refreshing && f.id === this.refreshing.id) {
      // Refused: the old token stays in force until it expires, then the
      // expiry close reconnects with a fresh one.
      if (f.refreshed) {
        this.token = this.refreshing.token;
        this._scheduleRefresh(Date.parse(f.refreshed.expireTime) || tokenExpiry(this.token));
      }
      this.refreshing = null;
      return;
    }
    const sub = this.wire.get(f.id);
    if (f.event) {
      if (sub) this.c._deliver(sub, f.event);
    } else if (f.checkpoint) {
      // The filter dropped events up to there: resume after them.
      if (sub) this.c._advance(sub, f.checkpoint.position);
    } else if (f.subscribed) {
      this.backoff.reset();
      if (sub) this.c._subscribed(sub, f.subscribed);
    } else if (f.published) {
      this.backoff.reset();
      this.c._settle(f.id, f.published);
    } else if (f.error) {
      const err = new HeraldError(f.error.code || 'unknown', f.error.message || '');
      if (sub) {
        this.wire.delete(f.id);
        this.ids.delete(sub);
        const end = f.error.end;
        if (end) {
          // The server ended the subscription (slow consumer, shutdown):
          // resuming from our position loses nothing. On shutdown the
          // socket closes first and the reconnect resubscribes instead.
          if (sub.lastPosition === undefined) sub.lastPosition = end.lastPosition ?? '0';
          this._retry(sub);
        } else if (err.code === 'unavailable') {
          this._retry(sub);
        } else {
          this.c._failSub(sub, err);
        }
      } else if (this.c._pending.has(f.id)) {
        // unavailable: keep it pending; it is sent again after the reconnect.
        if (err.code !== 'unavailable') this.c._settle(f.id, null, err);
      }
    }
  }

  _retry(sub) {
    const ws = this.ws;
    setTimeout(() => { if (this.ws === ws && sub._active && !this.ids.has(sub)) this._subscribe(sub); },
      this.backoff.next());
  }
}

/** SSESession gives each subscription its own EventSource. */
class SSESession {
  constructor(client) {
    this.c = client;
    this.streams = new Map(); // Subscription -> {es, timer, failures, backoff}
  }

  add(sub) {
    const st = { es: null, timer: null, failures: 0, backoff: new Backoff(this.c.minDelay, this.c.maxDelay),
      token: null, refused: undefined, authFailures: 0 };
    this.streams.set(sub, st);
    this._open(sub, st);
  }

  remove(sub) {
    const st = this.streams.get(sub);
    if (!st) return;
    this.streams.delete(sub);
    clearTimeout(st.timer);
    st.es?.close();
    st.es = null;
  }

  close() { for (const sub of [...this.streams.keys()]) this.remove(sub); }

  async _open(sub, st) {
    const c = this.c;
    c._setStatus('connecting', 'sse');
    try {
      st.token = await c._auth(st.refused);
    } catch (err) {
      if (this.streams.get(sub) === st) this._later(sub, st, err); // getToken failed
      return;
    }
    if (this.streams.get(sub) !== st) return;
    const q = new URLSearchParams();
    for (const ch of sub.channels) q.append('channel', ch);
    q.set('event', 'message');
    if (sub.lastPosition !== undefined) q.set('last_event_id', sub.lastPosition);
    filterQuery(q, sub.filter);
    if (st.token) q.set('access_token', st.token);
    const es = new EventSource(`${c.url}/v1/sse?${q}`);
    st.es = es;
    let opened = false;
    let ended; // the server's reason, from @end
    es.onopen = () => { opened = true; };
    es.addEventListener('@subscribed', (m) => {
      st.failures = 0;
      st.authFailures = 0;
      st.refused = undefined;
      st.backoff.reset();
      c._setStatus('open', 'sse');
      c._subscribed(sub, JSON.parse(m.data));
    });
    es.onmessage = (m) => c._deliver(sub, JSON.parse(m.data));
    es.addEventListener('@checkpoint', (m) => c._advance(sub, JSON.parse(m.data).position));
    // The server closes next; onerror reconnects.
    es.addEventListener('@end', (m) => { try { ended = JSON.parse(m.data); } catch { /* keep undefined */ } });
    // We reconnect ourselves rather than let EventSource retry at a fixed
    // interval: backoff with jitter, and the resume point is our own.
    es.onerror = async () => {
      if (st.es !== es) return;
      es.close();
      st.es = null;
      let authErr;
      if (ended?.code === 'unauthenticated') {
        authErr = new HeraldError('unauthenticated', ended.message || 'token expired', 401);
      } else if (opened) {
        st.failures = 0;
      } else {
        // EventSource hides the status of a refusal: ask over plain HTTP.
        const probe = await c._probe(`/v1/events?${pollQuery(sub, 0)}`, st.token);
        if (this.streams.get(sub) !== st) return;
        if (probe.err?.code === 'unauthenticated') {
          authErr = probe.err;
          st.authFailures++;
        } else if (probe.err) {
          return c._failSub(sub, probe.err); // e.g. permission_denied: retrying will not help
        } else if (probe.blocked && ++st.failures >= c.maxOpenFailures && c._fallback('sse')) {
          return;
        }
      }
      if (authErr) {
        st.refused = st.token;
        // A fresh token refused again: getToken cannot help; stop.
        if (!c._getToken || st.authFailures >= 2) return c._failSub(sub, authErr);
      }
      this._later(sub, st);
    };
  }

  _later(sub, st, error) {
    const delay = st.backoff.next();
    this.c._setStatus('reconnecting', 'sse', { delay, error });
    st.timer = setTimeout(() => { if (this.streams.get(sub) === st) this._open(sub, st); }, delay);
  }
}

/** PollSession long-polls GET /v1/events once per subscription. */
class PollSession {
  constructor(client) {
    this.c = client;
    this.loops = new Map(); // Subscription -> AbortController
  }

  add(sub) {
    const ctrl = new AbortController();
    this.loops.set(sub, ctrl);
    this._loop(sub, ctrl.signal);
  }

  remove(sub) {
    this.loops.get(sub)?.abort();
    this.loops.delete(sub);
  }

  close() { for (const sub of [...this.loops.keys()]) this.remove(sub); }

  async _loop(sub, signal) {
    const c = this.c;
    const backoff = new Backoff(c.minDelay, c.maxDelay);
    let confirmed = false;
    c._setStatus('connecting', 'longpoll');
    while (!signal.aborted) {
      // The first poll returns at once, to confirm the subscription.
      const q = pollQuery(sub, confirmed ? c.pollWait : 0);
      const timeout = AbortSignal.any ? AbortSignal.any([signal, AbortSignal.timeout((c.pollWait + 15) * 1000)]) : signal;
      let page;
      try {
        page = await c._request('GET', `/v1/events?${q}`, undefined, timeout);
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof HeraldError && !retryable(err)) return c._failSub(sub, err);
        confirmed = false;
        const delay = backoff.next();
        c._setStatus('reconnecting', 'longpoll', { delay, error: err });
        await sleep(delay);
        continue;
      }
      if (signal.aborted) return;
      backoff.reset();
      if (!confirmed || page.subscribed?.historyTruncated) {
        if (!confirmed) c._setStatus('open', 'longpoll');
        confirmed = true;
        c._subscribed(sub, page.subscribed ?? {});
      }
      for (const ev of page.events ?? []) c._deliver(sub, ev);
      c._advance(sub, page.cursor ?? '0');
    }
  }
}

// ---- helpers ----

/** bytes returns an event's data as bytes. @param {HeraldEvent} ev @returns {Uint8Array} */
export function bytes(ev) {
  if (!isBase64(ev)) return new TextEncoder().encode(text(ev));
  const s = atob(ev?.data ?? '');
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** text returns an event's data as text (JSON data as its JSON text). @param {HeraldEvent} ev @returns {string} */
export function text(ev) {
  if (ev?.data === undefined) return '';
  if (ev.format === Format.TEXT) return ev.data;
  if (isJSON(ev)) return JSON.stringify(ev.data);
  return new TextDecoder().decode(bytes(ev));
}

// isJSON: JSON data is any JSON value other than a string, or a string
// with format JSON; a string is otherwise text (format TEXT) or base64.
function isJSON(ev) {
  return ev?.format === Format.JSON || (ev?.data !== undefined && typeof ev.data !== 'string');
}

function isBase64(ev) {
  return typeof ev?.data === 'string' && ev.format !== Format.TEXT && ev.format !== Format.JSON;
}

/** json returns an event's data as a JSON value (parsed from text or bytes); undefined when it is empty. @param {HeraldEvent} ev */
export function json(ev) {
  if (isJSON(ev)) return ev.data;
  const t = text(ev);
  return t === '' ? undefined : JSON.parse(t);
}

/**
 * payloadOf is the `data` (and `format`) of a publish or edit: a string is
 * text, bytes are base64 with format BYTES, anything else a JSON value; no
 * data for undefined and null.
 * @param {any} data
 * @returns {{data?: any, format?: string}}
 */
export function payloadOf(data) {
  if (data === undefined || data === null) return {};
  if (typeof data === 'string') return { data };
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return { data: toBase64(data), format: Format.BYTES };
  return { data };
}

/**
 * toBase64 encodes data for the wire: strings as UTF-8, bytes as they are,
 * anything else as JSON.
 * @param {string|Uint8Array|ArrayBuffer|ArrayBufferView|object|null|undefined} data
 * @returns {string}
 */
export function toBase64(data) {
  let b;
  if (data === undefined || data === null) return '';
  if (typeof data === 'string') b = new TextEncoder().encode(data);
  else if (data instanceof ArrayBuffer) b = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) b = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else b = new TextEncoder().encode(JSON.stringify(data));
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

// pollQuery is the query of a long-poll of sub: from its position, waiting
// up to wait seconds.
function pollQuery(sub, wait) {
  const q = new URLSearchParams();
  for (const ch of sub.channels) q.append('channel', ch);
  if (sub.lastPosition !== undefined) q.set('cursor', sub.lastPosition);
  filterQuery(q, sub.filter);
  q.set('wait', `${wait}s`);
  q.set('limit', '100');
  return q;
}

// filterOf is the EventFilter of subscribe options, or undefined.
function filterOf(opts) {
  const f = {};
  if (opts.types?.length) f.types = [...opts.types];
  if (opts.tags && Object.keys(opts.tags).length > 0) f.tags = { ...opts.tags };
  return f.types || f.tags ? f : undefined;
}

// filterQuery adds a filter to an SSE or long-poll query.
function filterQuery(q, filter) {
  for (const t of filter?.types ?? []) q.append('type', t);
  for (const [k, v] of Object.entries(filter?.tags ?? {})) q.append('tag', `${k}:${v}`);
}

// tokenExpiry reads the `exp` of a JWT (without verifying it) in ms since
// the epoch; undefined for anything else (an API key).
function tokenExpiry(token) {
  try {
    const b = atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'));
    const exp = JSON.parse(new TextDecoder().decode(Uint8Array.from(b, (ch) => ch.charCodeAt(0)))).exp;
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

function expiresWithin(token, ms) {
  const exp = tokenExpiry(token);
  return exp !== undefined && exp - Date.now() < ms;
}

function eventsPath(channel) {
  return `/v1/channels/${encodeURIComponent(channel)}/events`;
}

function retryable(err) {
  return err.code === 'unavailable' || err.code === 'deadline_exceeded' ||
    err.code === 'resource_exhausted' || err.status >= 502;
}

function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// safely calls a user callback; its exceptions are reported, not thrown
// into the transport.
function safely(fn, ...args) {
  if (!fn) return;
  try { fn(...args); } catch (err) {
    if (typeof reportError === 'function') reportError(err);
    else console.error(err);
  }
}

/** Backoff yields exponentially growing delays with jitter (between half and all of the step). */
class Backoff {
  constructor(min, max) { this.min = min; this.max = max; this.n = 0; }
  next() {
    const step = Math.min(this.max, this.min * 2 ** this.n);
    if (step < this.max) this.n++;
    return step / 2 + Math.random() * (step / 2);
  }
  reset() { this.n = 0; }
}
