// Package limits owns the server's admission decisions for resources a
// client can consume: how many connections an instance and a user may hold,
// how fast a connection and a user may publish, how many subscriptions a
// connection may have and how many channels one request may name.
//
// It is a library of counters and token buckets with no I/O: it does not
// know about transports, identities or codes. Transports call it at the
// entry points and turn its refusals (*Error, which matches the sentinels
// ErrTooManyConnections, ErrRateLimited, ErrTooManySubscriptions and
// ErrTooManyChannels with errors.Is) into ResourceExhausted, HTTP 429 with
// Retry-After, or a WebSocket close code, through the services' code table.
//
// # Concurrency
//
// Everything here is safe for concurrent use and starts no goroutines and no
// timers: buckets refill lazily from the time the caller passes in, so an
// idle bucket costs only its memory. Callers pass time.Now(), whose
// monotonic reading makes the buckets immune to wall-clock jumps; tests pass
// a fake time instead. Each type holds at most one mutex at a time (Keyed
// releases its shard lock before touching its overflow bucket), so there is
// no lock order to keep.
//
// # Memory
//
// A Bucket is a few words. Conns keeps one map entry per user with at least
// one open connection and deletes it when the count returns to zero. Keyed
// keeps at most its configured number of keys; see Keyed for what happens at
// the cap.
package limits
