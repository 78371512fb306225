// herald.js from Node through its declarations (web/herald.d.ts): the
// declared shapes are what the client really hands over. Run by
// web/ts_test.go against a running Herald (HERALD_URL).
import { Herald, HeraldError, Kind, bytes, json, text, type HeraldEvent, type Subscription } from '../../../web/herald.js';

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`check failed: ${what}`);
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))]);
}

const url = process.env.HERALD_URL;
if (!url) throw new Error('HERALD_URL is not set');
// Node 20 has no WebSocket or EventSource: long-poll, publish over REST.
const herald = new Herald({ url, transport: 'longpoll', pollWait: 1 });
const channel = `ts-node-${Date.now()}`;

const got: HeraldEvent[] = [];
let sub: Subscription | undefined;
const three = new Promise<void>((resolve, reject) => {
  sub = herald.subscribe([channel], {
    cursor: '0',
    onEvent: (ev, s) => {
      check(s === sub, 'onEvent gets its subscription');
      got.push(ev);
      if (got.length === 3) resolve();
    },
    onError: (err: HeraldError) => reject(err),
  });
});
const first: HeraldEvent = await herald.publish(channel, 'hello', { type: 'greeting' });
await herald.publish(channel, { n: 2 });
await herald.publish(channel, new Uint8Array([0xff, 0x00]), { idempotencyKey: `${channel}-3` });
await within(three, 10000, 'three events');

const [a, b, c] = got;
check(a !== undefined && b !== undefined && c !== undefined, 'three events');
check(typeof a!.position === 'string' && a!.position === first.position, 'positions are decimal strings');
check(a!.type === 'greeting' && a!.kind === Kind.PUBLISHED && text(a) === 'hello', 'text event');
check(json<{ n: number }>(b)?.n === 2, 'JSON event');
check(bytes(c).length === 2 && bytes(c)[0] === 0xff && c!.idempotencyKey === `${channel}-3`, 'bytes event');
check(sub?.lastPosition === c!.position, 'lastPosition follows delivery');

const page = await herald.history(channel, { direction: 'backward', limit: 2 });
check(page.events?.length === 2 && page.events[0]?.position === c!.position && page.hasMore === true, 'history page');

const edited = await herald.edit(channel, first.position, 'hello!');
check(edited.entry.kind === Kind.UPDATED && edited.entry.targetPosition === first.position, 'edit entry');

// A server-side filter (long-poll here): only chat.* events tagged room 1.
const fch = `${channel}-filtered`;
const matched: HeraldEvent[] = [];
const two = new Promise<void>((resolve, reject) => {
  herald.subscribe(fch, {
    cursor: '0',
    types: ['chat.*'],
    tags: { room: '1' },
    onEvent: (ev) => { matched.push(ev); if (matched.length === 2) resolve(); },
    onError: (err: HeraldError) => reject(err),
  });
});
await herald.publish(fch, 'no', { type: 'chat.msg', tags: { room: '2' } });
const m1 = await herald.publish(fch, 'yes 1', { type: 'chat.msg', tags: { room: '1' } });
await herald.publish(fch, 'no', { type: 'other', tags: { room: '1' } });
const m2 = await herald.publish(fch, 'yes 2', { type: 'chat.typing', tags: { room: '1', who: 'ann' } });
await within(two, 10000, 'two filtered events');
check(matched[0]?.position === m1.position && matched[1]?.position === m2.position, 'filtered events');
check(matched[1]?.seq === '4' && matched[1]?.tags?.who === 'ann', 'seq and tags');
const bySeq = await herald.history(fch, { fromSeq: 2, limit: 1 });
check(bySeq.events?.[0]?.position === m1.position && bySeq.events[0]?.seq === '2', 'history from a seq');

try {
  await herald.publish('bad channel', 'x');
  throw new Error('a bad channel was accepted');
} catch (err) {
  check(err instanceof HeraldError && err.code === 'invalid_argument' && err.status === 400, `HeraldError: ${err}`);
}
herald.close();
console.log(`herald.js ok: ${got.length} events, positions ${got.map((e) => e.position).join(',')}`);

// Compile-time checks only (never called): what the declarations refuse.
export function refused(h: Herald, ev: HeraldEvent): void {
  // @ts-expect-error: not a transport
  new Herald({ url: 'http://x', transport: 'carrier-pigeon' });
  // @ts-expect-error: positions are strings, not numbers
  const n: number = ev.position;
  // @ts-expect-error: subscribe takes channel names
  h.subscribe(42);
  // @ts-expect-error: an unknown option
  h.history('c', { reverse: true });
  // @ts-expect-error: lastPosition is read-only
  h.subscribe('c').lastPosition = '1';
  void n;
}
