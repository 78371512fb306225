// Package ephemeral owns what reaches subscribers without going through the
// event log: signals (publishes that are never stored) and presence (who is
// subscribed to a channel, with join and leave notices). Two
// implementations: Postgres, for many instances on one database, and
// Memory, for the embedded single instance.
//
// # Postgres
//
// Signals, joins and leaves travel as NOTIFY payloads on their own channel
// (the event log's notify channel + "_sig"), listened to on a dedicated
// connection, so a flood of signals never delays the event log's wake-ups
// and a signal never touches the writer or its lock. A signal's NOTIFY is
// sent with synchronous_commit off: it writes nothing to wait for. Presence
// rows live in herald_presence; a join inserts the row and notifies in one
// statement, a leave deletes it and notifies only when it deleted it, so
// every join gets exactly one leave, whoever sends it. Reap removes the
// rows of instances whose heartbeat (herald_instances) is older than the
// given age, sending their leaves.
//
// # Concurrency
//
// Run is the only goroutine the package starts (Postgres: the listener and
// the signal sender, which batches concurrent Sends into one statement;
// Memory: none, Run waits for ctx). deliver is called from Run's goroutine
// (Postgres) or from the sender's (Memory) and must not block. Every method
// is safe for concurrent use.
package ephemeral
