// The generated TypeScript client (gen/es, protoc-gen-es) with
// @connectrpc/connect-node against a running Herald (HERALD_URL): publish,
// a server-streaming Subscribe that resumes from its cursor, history.
// Binary protobuf: the JSON codec writes `data` by its DataFormat, which a
// generic protojson decoder does not know. Run by web/ts_test.go.
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient, type Transport } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import { DataFormat, EventKind, type Event } from '../../../gen/es/herald/v1/event_pb.js';
import { EventService, PublishRequestSchema } from '../../../gen/es/herald/v1/event_service_pb.js';
import { Direction, HistoryService } from '../../../gen/es/herald/v1/history_service_pb.js';

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`check failed: ${what}`);
}

const baseUrl = process.env.HERALD_URL;
if (!baseUrl) throw new Error('HERALD_URL is not set');

const transports: Record<string, Transport> = {
  connect: createConnectTransport({ baseUrl, httpVersion: '2', useBinaryFormat: true }),
  grpc: createGrpcTransport({ baseUrl }),
};

for (const [name, transport] of Object.entries(transports)) {
  const events = createClient(EventService, transport);
  const history = createClient(HistoryService, transport);
  const channel = `ts-connect-${name}-${Date.now()}`;
  const enc = new TextEncoder();

  const positions: bigint[] = [];
  for (const [i, data] of ['{"n":1}', '{"n":2}', '{"n":3}'].entries()) {
    const res = await events.publish(create(PublishRequestSchema, {
      channel, type: 'count', data: enc.encode(data), format: DataFormat.JSON, idempotencyKey: `${channel}-${i}`,
    }));
    check(res.event !== undefined && !res.duplicate, 'published');
    positions.push(res.event!.position);
  }
  const again = await events.publish({ channel, type: 'count', data: enc.encode('{"n":1}'), format: DataFormat.JSON, idempotencyKey: `${channel}-0` });
  check(again.duplicate && again.event?.position === positions[0], 'a retry with the key is a duplicate');

  // Replay from the start, then stop.
  const received = async (cursor: bigint, n: number, live?: () => Promise<void>): Promise<{ cursor: bigint; evs: Event[] }> => {
    const abort = new AbortController();
    const evs: Event[] = [];
    let subscribedAt = -1n;
    for await (const msg of events.subscribe({ channels: [channel], cursor }, { signal: abort.signal, timeoutMs: 10000 })) {
      if (msg.message.case === 'subscribed') {
        subscribedAt = msg.message.value.cursor;
        if (live) await live();
      } else if (msg.message.case === 'event') {
        evs.push(msg.message.value);
        if (evs.length === n) break;
      }
    }
    abort.abort();
    return { cursor: subscribedAt, evs };
  };
  const all = await received(0n, 3);
  check(all.cursor === 0n && all.evs.map((e) => e.position).join() === positions.join(), `replay: ${all.evs.map((e) => e.position)}`);
  const first = all.evs[0]!;
  check(first.kind === EventKind.PUBLISHED && first.format === DataFormat.JSON &&
    new TextDecoder().decode(first.data) === '{"n":1}' && first.createTime !== undefined, 'event fields');

  // Resume after the second event: the third, then a live one.
  let live: bigint | undefined;
  const resumed = await received(positions[1]!, 2, async () => {
    live = (await events.publish({ channel, data: enc.encode('live'), format: DataFormat.TEXT })).event?.position;
  });
  check(resumed.cursor === positions[1] && resumed.evs[0]?.position === positions[2] && resumed.evs[1]?.position === live,
    `resume: ${resumed.evs.map((e) => e.position)}`);

  const page = await history.listEvents({ channel, direction: Direction.BACKWARD, limit: 2 });
  check(page.events.length === 2 && page.events[0]?.position === live && page.hasMore, 'history');

  try {
    await events.publish({ channel: 'bad channel' });
    throw new Error('a bad channel was accepted');
  } catch (err) {
    check(err instanceof ConnectError && err.code === Code.InvalidArgument, `ConnectError: ${err}`);
  }
  console.log(`connect-node ${name} ok: positions ${positions.join(',')},${live}`);
}
