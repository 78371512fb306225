package eventlog

import (
	"time"

	"github.com/jackc/pgx/v5"
)

// # The outbox: events published from the application's transaction
//
// Applications that share Herald's database publish inside their own
// transactions with the SQL function herald_publish_tx, which writes a row
// to herald_outbox and takes no Herald lock (migrations/0006_outbox.sql).
// The writer drains committed rows into the log with herald_outbox_drain:
//
//   - before every batch of Append calls, in the same implicit transaction
//     (so a transaction that committed before an Append was sent gets the
//     lower positions, and a drain is never half done);
//   - when idle, on a timer: every outboxPollMin while rows keep coming,
//     backing off to PostgresOptions.OutboxPoll while the outbox stays
//     empty (an empty outbox costs one index probe, no lock);
//   - when idle and a notification arrives on the notify channel (Watch),
//     which is how an application that wants the lowest latency wakes the
//     drain at once: NOTIFY in its transaction, at the price measured in
//     docs/benchmarks.md (notifying transactions commit one at a time).
//
// A drain that claims a full batch (MaxBatch rows) is followed at once by
// another.

// DefaultOutboxPoll is PostgresOptions.OutboxPoll's default: the longest an
// idle writer waits before it looks at the outbox again.
const DefaultOutboxPoll = 50 * time.Millisecond

// outboxPollMin is how soon an idle writer looks again after a drain that
// found rows: commits keep coming, and each look is cheap.
const outboxPollMin = 5 * time.Millisecond

// drainSQL claims and appends up to $1 outbox rows; see
// herald_outbox_drain in migrations/0006_outbox.sql.
const drainSQL = `SELECT drained, published, max_id, failures FROM herald_outbox_drain($1, $2)`

// drainResult is what one herald_outbox_drain call did.
type drainResult struct {
	rows      int   // outbox rows claimed (and deleted)
	published int   // of which appended as events; the others were duplicates or failed
	maxID     int64 // highest position appended, 0 if none
	failures  []string
}

func queueDrain(b *pgx.Batch, limit int, autoCreate bool) {
	b.Queue(drainSQL, limit, autoCreate)
}

func readDrain(br pgx.BatchResults) (drainResult, error) {
	var d drainResult
	err := br.QueryRow().Scan(&d.rows, &d.published, &d.maxID, &d.failures)
	return d, err
}

// outboxStatus logs what a drain refused (kept in herald_outbox_failed),
// and when draining starts and stops failing (once each, not on every
// poll while the database is away). Called by the writer only.
func (p *Postgres) outboxStatus(d drainResult, err error) {
	if err != nil {
		if !p.drainFailing {
			p.drainFailing = true
			p.opts.Logger.Warn("eventlog: cannot drain the outbox; retrying", "err", err)
		}
		return
	}
	if p.drainFailing {
		p.drainFailing = false
		p.opts.Logger.Info("eventlog: draining the outbox again")
	}
	for _, f := range d.failures {
		p.opts.Logger.Warn("eventlog: an event published with herald_publish_tx was refused; it is kept in herald_outbox_failed",
			"reason", f)
	}
}

// pokeOutbox asks an idle writer to drain now. Never blocks.
func (p *Postgres) pokeOutbox() {
	select {
	case p.outboxWake <- struct{}{}:
	default:
	}
}

// outboxPoll times the idle writer's looks at the outbox.
type outboxPoll struct {
	t        *time.Timer
	max, cur time.Duration
}

func newOutboxPoll(longest time.Duration) *outboxPoll {
	return &outboxPoll{t: time.NewTimer(outboxPollMin), max: longest, cur: outboxPollMin}
}

func (o *outboxPoll) c() <-chan time.Time { return o.t.C }

func (o *outboxPoll) stop() { o.t.Stop() }

// after plans the next look from what the last write drained: at once
// after a full batch, soon after some rows, later and later while there
// are none.
func (o *outboxPoll) after(drained, limit int) {
	switch {
	case drained >= limit:
		o.cur = 0
	case drained > 0:
		o.cur = outboxPollMin
	default:
		o.cur = min(max(2*o.cur, outboxPollMin), o.max)
	}
	o.t.Reset(o.cur)
}
