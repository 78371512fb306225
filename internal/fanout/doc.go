// Package fanout owns live delivery inside one instance: the hub that reads
// each new log entry once and hands it to every matching subscription, and
// the subscription core that every transport (gRPC/Connect streams,
// WebSocket, SSE, long-poll) adapts, through package services: register,
// replay (cursor, H] from the log, then live, each entry exactly once and in
// position order.
//
// The hub reads the log through Source (Head, Read, Watch,
// TruncatedThrough). It wraps each entry once in a *wire.Entry, whose API
// form and encodings are made lazily and shared by every subscription and
// transport, and keeps the most recent entries in a window bounded in
// entries and bytes: a replay of recent positions interns the entries it
// reads, so a reconnect storm shares the encodings of live delivery, and a
// replay the window holds exactly is served from it without reading the
// log (Hub.replayFromWindow says when).
// Subscription queues are bounded in entries and in bytes (Options).
//
// # Concurrency
//
// Hub.Run is the only goroutine the package starts itself (plus the log's
// Watch, which Run starts and waits for). It loops: on a wake-up from the
// log or on the safety poll, it reads entries after its head position from
// the log and dispatches them. Dispatch never blocks: a subscription's queue
// is bounded, and a live subscription whose queue is full is ended with
// EndError{Reason: SlowConsumer} carrying its last delivered position.
//
// A Subscription is consumed by one goroutine calling Next; Close may be
// called from any goroutine. Locks: Hub.mu (subscription sets and head),
// then Subscription.mu (queue). Never the other way round.
//
// When Run's context ends, every subscription ends with Reason Shutdown and
// Subscribe fails with ErrStopped.
//
// # Why replay cannot lose or repeat
//
// Subscribe registers under Hub.mu and notes the hub head H: every entry
// dispatched afterwards has a position > H and reaches the queue. Next first
// pages through the log for (cursor, H], then drains the queue, dropping any
// position <= the last one delivered. If the queue overflows during replay,
// nothing is lost: the entries are in the log, so the subscription
// re-registers at the new head and keeps paging before going live.
package fanout
