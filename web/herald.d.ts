/**
 * Type declarations for herald.js, the dependency-free client served by
 * every Herald server at /herald.js (these at /herald.d.ts) and packaged
 * for npm from web/ (web/package.json).
 *
 *   import { Herald, text } from '/herald.js';
 *   const herald = new Herald();
 *   herald.subscribe(['chat:lobby'], { cursor: '0', onEvent: (ev) => console.log(ev.position, text(ev)) });
 *   const ev = await herald.publish('chat:lobby', 'hello');
 *
 * In Node (20 or newer: fetch is built in) give `url`; without WebSocket and
 * EventSource globals the client long-polls (`transport: 'longpoll'`).
 *
 * `data` travels as what it is: a JSON value (JSON data; `format` says
 * DATA_FORMAT_JSON only when the value is a string), a string with format
 * DATA_FORMAT_TEXT, or base64 for bytes; text(), json() and bytes()
 * read any of them. publish and edit send a string as text, bytes as bytes,
 * anything else as a JSON value.
 */

/** Data formats as they appear in `event.format` (absent: bytes). */
export declare const Format: Readonly<{
  BYTES: 'DATA_FORMAT_BYTES';
  JSON: 'DATA_FORMAT_JSON';
  TEXT: 'DATA_FORMAT_TEXT';
}>;

/** Event kinds as they appear in `event.kind`. */
export declare const Kind: Readonly<{
  PUBLISHED: 'EVENT_KIND_PUBLISHED';
  UPDATED: 'EVENT_KIND_UPDATED';
  DELETED: 'EVENT_KIND_DELETED';
}>;

/** One of Kind's values. */
export type EventKind = (typeof Kind)[keyof typeof Kind];

/**
 * A position in the log: an int64 as a decimal string (as in protojson).
 * Where the client accepts a position, a number or bigint is also taken.
 */
export type Position = string;

/**
 * The stable error codes: the server's (Connect/gRPC codes in snake case),
 * and the client's own ('unavailable' for network errors, 'canceled',
 * 'deadline_exceeded').
 */
export type ErrorCode =
  | 'canceled'
  | 'unknown'
  | 'invalid_argument'
  | 'deadline_exceeded'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'resource_exhausted'
  | 'failed_precondition'
  | 'aborted'
  | 'out_of_range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data_loss'
  | 'unauthenticated';

/**
 * HeraldError is how every failure is reported: a stable snake_case `code`,
 * a human `message`, and the HTTP `status` when one is known (else 0).
 */
export declare class HeraldError extends Error {
  constructor(code: ErrorCode | string, message: string, status?: number);
  readonly name: 'HeraldError';
  /** One of ErrorCode; a string for codes this version does not know. */
  code: ErrorCode | (string & {});
  status: number;
}

/** An Event in its protojson form. Absent fields have their zero value. */
export interface HeraldEvent {
  position: Position;
  channel: string;
  /** Empty or absent means "message". */
  type?: string;
  /** The payload by format: a JSON value, a string (text), or base64 (bytes); read it with text(), json() or bytes(). */
  data?: unknown;
  kind?: EventKind;
  /** For UPDATED and DELETED entries: the event they change. */
  targetPosition?: Position;
  idempotencyKey?: string;
  /** RFC 3339. */
  createTime?: string;
  /** RFC 3339; set once a published event was updated. */
  updateTime?: string;
  /** The event was deleted (its data is erased). */
  deleted?: boolean;
  /** Who wrote it ('user:<sub>', 'key:<name>', 'db:<role>'), when known. */
  author?: string;
  /** How to read data: 'DATA_FORMAT_JSON', 'DATA_FORMAT_TEXT', or bytes. */
  format?: 'DATA_FORMAT_UNSPECIFIED' | 'DATA_FORMAT_BYTES' | 'DATA_FORMAT_JSON' | 'DATA_FORMAT_TEXT';
  /** The entry's number in its channel: 1, 2, 3, ... with no gap (UPDATED and DELETED entries count too). */
  seq?: Position;
  /** The tags given at publish (edits carry their event's). */
  tags?: Record<string, string>;
}

/** The server's confirmation of a (re)subscription (protojson Subscribed). */
export interface SubscribedInfo {
  channels?: string[];
  /** The cursor replay starts after. */
  cursor?: Position;
  historyTruncated?: boolean;
  truncatedThrough?: Position;
}

/** What onTruncated receives: events up to truncatedThrough were removed. */
export interface TruncatedInfo {
  channels: string[];
  cursor: Position;
  truncatedThrough: Position;
}

export interface SubscribeOptions {
  /** Deliver events after this position; omit for live events only ('0': all retained). */
  cursor?: string | number | bigint;
  /** Only events of these types (the server filters): exact, or a prefix ending in '.*' ('chat.*'). */
  types?: string[];
  /** Only events carrying all these tags (the server filters). */
  tags?: Record<string, string>;
  onEvent?: (ev: HeraldEvent, sub: Subscription) => void;
  /** Retention removed events before they could be delivered: reload your state. */
  onTruncated?: (info: TruncatedInfo) => void;
  /** The server confirmed a (re)subscription. */
  onSubscribed?: (info: SubscribedInfo) => void;
  /** The subscription failed for good and was closed. */
  onError?: (err: HeraldError) => void;
}

export type Transport = 'websocket' | 'sse' | 'longpoll';

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** What onStatus receives. */
export interface StatusInfo {
  state: Exclude<ConnectionState, 'idle'>;
  transport: Transport | null;
  /** 'reconnecting': the delay in ms before the next attempt. */
  delay?: number;
  /** 'reconnecting' (WebSocket): the close code. */
  code?: number;
  /** Why: with 'closed' after a refused or expired token, or a failed getToken. */
  error?: HeraldError;
}

export interface HeraldOptions {
  /** Server origin; default location.origin. Required outside a browser. */
  url?: string;
  /** Default 'auto'. */
  transport?: 'auto' | Transport;
  /** With 'auto': use a WebSocket from the start. */
  twoWay?: boolean;
  /** First reconnect delay in ms (default 500). */
  minDelay?: number;
  /** Largest reconnect delay in ms (default 15000). */
  maxDelay?: number;
  /** Failed opens in a row before falling back (default 3). */
  maxOpenFailures?: number;
  /** Long-poll wait in seconds (default 25). */
  pollWait?: number;
  /** Ms before publish() gives up (default 30000). */
  publishTimeout?: number;
  onStatus?: (s: StatusInfo) => void;
  /** A JWT or API key sent with every request. */
  token?: string;
  /**
   * Returns a fresh token: called to connect, when the token was refused or
   * expired, and before a WebSocket's token expires.
   */
  getToken?: () => string | Promise<string>;
  /** Events of the subscription the server opens from the token's `channels` claim (WebSocket). */
  onServerEvent?: (ev: HeraldEvent) => void;
}

/** What publish and edit accept: strings are sent as UTF-8, bytes as they are, anything else as JSON. */
/** A string is sent as text, bytes as bytes, anything else as a JSON value. */
export type PublishData = string | Uint8Array | ArrayBuffer | ArrayBufferView | object | number | boolean | null | undefined;

export interface PublishOptions {
  type?: string;
  /** Default: a random key, reused by every retry of this publish. */
  idempotencyKey?: string;
  /** Up to 8 tags subscribers can filter on: keys of [A-Za-z0-9_.-] (1 to 32), values up to 64 characters. */
  tags?: Record<string, string>;
}

export interface HistoryOptions {
  /** Exclusive; 0 or absent starts at the oldest (forward) or newest (backward) event. */
  cursor?: string | number;
  direction?: 'forward' | 'backward';
  limit?: number;
  view?: 'log' | 'current';
  /** Start at the entry with this seq (forward, without cursor). */
  fromSeq?: string | number;
}

/** A page of history (protojson ListEventsResponse). */
export interface HistoryPage {
  events?: HeraldEvent[];
  nextCursor?: Position;
  hasMore?: boolean;
  truncatedThrough?: Position;
}

/** Herald is one connection to a server. Create it once per page. */
export declare class Herald {
  constructor(options?: HeraldOptions);
  /** The server origin, without a trailing slash. */
  readonly url: string;
  /** The transport in use; null before the first use. */
  readonly transport: Transport | null;
  readonly state: ConnectionState;
  /** Delivers the events of channels, in position order, each once. */
  subscribe(channels: string | string[], opts?: SubscribeOptions): Subscription;
  /**
   * Appends an event; resolves with the stored event once the server
   * acknowledged it. Retried across reconnects with one idempotency key.
   */
  publish(channel: string, data?: PublishData, opts?: PublishOptions): Promise<HeraldEvent>;
  /** Replaces the data of the event at position; subscribers get an UPDATED entry. */
  edit(channel: string, position: string | number | bigint, data?: PublishData): Promise<{ event: HeraldEvent; entry: HeraldEvent }>;
  /** Deletes the event at position; subscribers get a DELETED entry. */
  delete(channel: string, position: string | number | bigint): Promise<{ entry: HeraldEvent }>;
  /** Reads one page of a channel. */
  history(channel: string, opts?: HistoryOptions): Promise<HistoryPage>;
  /** Ends every subscription and connection; pending publishes reject with 'canceled'. */
  close(): void;
}

/** Subscription is one subscribe() call. Close it to stop receiving. */
export declare class Subscription {
  /** Not constructed directly: use Herald.subscribe. */
  private constructor();
  readonly id: string;
  readonly channels: string[];
  /** Position of the last event delivered (or the start cursor); undefined until known. */
  readonly lastPosition: Position | undefined;
  /** Stops the subscription; no event is delivered after it returns. */
  close(): void;
}

/** An event's data as bytes. */
export declare function bytes(ev: Pick<HeraldEvent, 'data' | 'format'> | null | undefined): Uint8Array;
/** An event's data as text (JSON data as its JSON text). */
export declare function text(ev: Pick<HeraldEvent, 'data' | 'format'> | null | undefined): string;
/** An event's data as a JSON value (parsed from text or bytes); undefined when it is empty. */
export declare function json<T = unknown>(ev: Pick<HeraldEvent, 'data' | 'format'> | null | undefined): T | undefined;
/** The `data` (and `format`) of a publish or edit for data. */
export declare function payloadOf(data: PublishData): { data?: unknown; format?: string };
/** Encodes data for the wire (base64): strings as UTF-8, bytes as they are, anything else as JSON. */
export declare function toBase64(data: PublishData): string;
