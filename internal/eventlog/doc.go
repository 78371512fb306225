package eventlog

// # Postgres: concurrency model
//
// (This comment documents Postgres; the package documentation is in log.go.)
//
// What a Postgres owns: a bounded queue of Append calls, one writer goroutine
// (Run) and, while Watch runs, one listener connection. The pool is the
// caller's: Postgres never closes it.
//
// Writer. Run is the only goroutine that writes events. It takes queued
// Append calls, whole, until MaxBatch events or MaxBatchBytes bytes (a single
// larger Append goes alone), and writes them with one statement,
// herald_publish (Append has hashed the data of keyed inputs, for the
// idempotency check, in the caller's goroutine), which takes the write lock
// (a transaction-level advisory lock), assigns positions in input order and
// commits. The statement is preceded, in the same implicit transaction and
// round trip, by herald_outbox_drain, which appends the events applications
// published from their own transactions (postgres_outbox.go); when no
// Append is queued the writer runs the drain alone on a timer. Only after
// the commit does it answer each caller, and after that it sends
// pg_notify(NotifyChannel, max position) as a hint, outside the insert
// transaction. While a batch is in
// the database new Appends queue up: batching comes from that wait, there is
// no timer. Append blocks while the queue is full.
//
// An Append whose ctx ends before the writer takes it is not written and
// returns ctx.Err(). One that was taken is written to the end (the batch does
// not use the caller's ctx; it has its own 30 s timeout) and its answer is
// dropped if the caller has left. A request is taken or abandoned by one
// compare-and-swap on its state, so exactly one of the two happens.
//
// Stopping: when Run's ctx ends, the writer finishes the batch in flight and
// answers it, marks the log closed and fails every queued Append with
// ErrClosed; later Appends fail with ErrClosed at once. Run returns nil after
// that. Run may be called once per Postgres. Stop Run before closing the pool.
//
// Listener. Watch runs in its caller's goroutine (the hub starts it and waits
// for it) on its own connection, opened with pgx.ConnectConfig from the
// pool's config and application_name ListenerApplicationName, never a pool
// connection. It calls wake once after every successful LISTEN and once per
// notification, and nothing else: the reader catches up from its cursor. On
// any error it closes the connection and reconnects with capped exponential
// backoff and jitter (50 ms to 2 s). It returns when its ctx ends.
//
// Everything else (Read, Head, History, Get, the channel methods, Update,
// Delete, Trim) runs in the caller's goroutine on pool connections. Update,
// Delete and DeleteChannel take the same write lock as the writer, so every
// position becomes visible in position order (DeleteChannel holds it while
// it deletes the channel's entries, ~1-2 µs each: publishing waits that
// long). Update and Delete, like a batch, run to the end once sent even if
// the caller's ctx ends. A Delete erases, in its transaction, the data of
// the event's Updated entries too (the trigger herald_erase_deleted, see
// migrations/0003_erase_and_conflicts.sql). Trim takes a separate
// try-lock, so that one session in the cluster trims at a time; it deletes in
// transactions of at most 10,000 entries, each raising the channels'
// truncated_through over what it deleted.
//
// No Go mutexes are involved; the advisory locks live in PostgreSQL and are
// keyed by the schema (current_schema()), so separate schemas never contend.
