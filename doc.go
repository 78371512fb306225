// Package herald is the Go client library for Herald, for services that
// publish events and subscribe to channels. It wraps the generated
// connect-go clients (gen/herald/v1/heraldv1connect) with what every
// service otherwise writes again:
//
//   - [Client.Publish] gives each message an idempotency key (unless it has
//     one) and retries it while the server is unavailable, so a message is
//     stored once even when an acknowledgement is lost;
//   - [Client.Subscribe] returns a [Subscription] that resumes after every
//     disconnect, on the same or another instance ([WithServers]), from the
//     position of the last event it received: each event arrives once and in
//     order. When retention removed events it would have replayed,
//     [Subscription.Next] says so with a [*TruncatedError];
//   - [Client.Connect] opens a [Session]: one bidirectional stream carrying
//     any number of subscriptions and pipelined publishes, which reconnects,
//     resubscribes and resends unacknowledged publishes by itself;
//   - [PublishTx] and [PublishSQLTx] publish from the application's own
//     database transaction (herald_publish_tx): the event is delivered if and
//     only if the transaction commits.
//
// Positions are the log's global positions (int64). A cursor is the
// position of the last event seen; persist [Subscription.Cursor] to resume
// after a restart of your service.
//
// # Concurrency
//
// A Client is safe for concurrent use and holds no goroutines of its own.
// A Subscription runs one goroutine (its stream and reconnects) until
// Close or the end of the context given to Subscribe; Next is for one
// goroutine. A Session runs one goroutine (the stream and reconnects) until
// Close or the end of its context; its methods are safe for concurrent use.
// Subscriptions buffer a bounded number of events: one that is not read
// holds back its stream (and, on a Session, the whole session), and the
// server then ends it as a slow consumer, after which it resumes from its
// position.
package herald
