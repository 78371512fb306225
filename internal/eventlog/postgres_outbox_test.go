package eventlog_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
)

// inTx runs fn in a transaction of pool and commits it.
func inTx(t testing.TB, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), pool, fn); err != nil {
		t.Fatalf("application transaction: %v", err)
	}
}

// publishTx calls herald_publish_tx on tx with a text payload.
func publishTx(tx pgx.Tx, channel, typ, data, key string) error {
	_, err := tx.Exec(context.Background(), "SELECT herald_publish_tx($1, $2, $3::text, $4)", channel, typ, data, key)
	return err
}

// events reads the whole log.
func events(t testing.TB, lg eventlog.Log) []eventlog.Event {
	t.Helper()
	evs, err := lg.Read(context.Background(), eventlog.Query{})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// waitEvents waits until the log holds n entries and returns them.
func waitEvents(t testing.TB, lg eventlog.Log, n int) []eventlog.Event {
	t.Helper()
	var evs []eventlog.Event
	waitFor(t, fmt.Sprintf("%d events in the log", n), func() bool {
		evs = events(t, lg)
		return len(evs) >= n
	})
	if len(evs) != n {
		t.Fatalf("the log holds %d events, want %d: %+v", len(evs), n, evs)
	}
	return evs
}

func outboxRows(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM herald_outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOutboxCommitRollbackSavepoint: what a committed transaction
// published appears in the log, in call order, with its formats, key and
// author; a rolled-back transaction and a rolled-back savepoint leave no
// trace.
func TestOutboxCommitRollbackSavepoint(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())

	// Rolled back: nothing.
	tx, err := lg.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := publishTx(tx, "orders:1", "order.paid", "rolled back", ""); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	inTx(t, lg.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT herald_publish_tx('orders:42', 'order.paid', '{"total":12}'::jsonb, 'pay-42')`); err != nil {
			return err
		}
		// A savepoint rolled back takes its event with it.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if err := publishTx(sp, "orders:42", "order.note", "undone", ""); err != nil {
			return err
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT herald_publish_tx('orders:42', 'order.raw', '\x00ff'::bytea)`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT herald_publish_tx('orders:42', '', 'plain text')`); err != nil { // untyped: text
			return err
		}
		_, err = tx.Exec(ctx, `SELECT herald_publish_tx('orders:42', 'order.json', '{"a" : 1}'::json)`)
		return err
	})

	evs := waitEvents(t, lg, 4)
	want := []struct {
		typ, data, key string
		format         eventlog.Format
	}{
		{"order.paid", `{"total": 12}`, "pay-42", eventlog.FormatJSON}, // jsonb as PostgreSQL prints it
		{"order.raw", "\x00\xff", "", eventlog.FormatUnspecified},
		{"", "plain text", "", eventlog.FormatText},
		{"order.json", `{"a" : 1}`, "", eventlog.FormatJSON}, // json as written
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Channel != "orders:42" || ev.Type != w.typ || string(ev.Data) != w.data || ev.IdempotencyKey != w.key ||
			ev.Format != w.format || ev.Kind != eventlog.KindPublished || ev.Author != "db:postgres" {
			t.Errorf("event %d = %+v, want %+v (author db:postgres)", i, ev, w)
		}
		if i > 0 && ev.Position != evs[i-1].Position+1 {
			t.Errorf("the transaction's events are not adjacent: positions %d then %d", evs[i-1].Position, ev.Position)
		}
	}
	if n := outboxRows(t, lg.pool); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
}

// TestOutboxRefusesBadInput: the call checks its arguments in the
// application's transaction, with a stable SQLSTATE and a message that
// says what is wrong.
func TestOutboxRefusesBadInput(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := pgtest.Pool(t)
	for _, tc := range []struct {
		name, sql string
		code, msg string
	}{
		{"channel", `SELECT herald_publish_tx('bad channel', 't', 'x')`, "22023", `channel 'bad channel' is not a valid channel name`},
		{"null channel", `SELECT herald_publish_tx(NULL, 't', 'x')`, "22023", `channel NULL is not a valid channel name`},
		{"long channel", `SELECT herald_publish_tx(repeat('c', 129), 't', 'x')`, "22023", `is not a valid channel name`},
		{"type", `SELECT herald_publish_tx('c', 'a b', 'x')`, "22023", `type 'a b' is not a valid event type`},
		{"key", `SELECT herald_publish_tx('c', 't', 'x', 'has space')`, "22023", `idempotency key 'has space' is not valid`},
		{"long key", `SELECT herald_publish_tx('c', 't', 'x', repeat('k', 129))`, "22023", `is not valid`},
		{"null data", `SELECT herald_publish_tx('c', 't', NULL::jsonb)`, "22004", `data is NULL`},
		{"too large", `SELECT herald_publish_tx('c', 't', repeat('x', 1048577))`, "54000", `event data is 1048577 bytes, more than 1 MiB`},
	} {
		_, err := pool.Exec(ctx, tc.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.msg) ||
			!strings.HasPrefix(pgErr.Message, "herald_publish_tx: ") || pgErr.Hint == "" {
			t.Errorf("%s: %v (hint %q), want SQLSTATE %s saying %q", tc.name, err, hintOf(err), tc.code, tc.msg)
		}
	}
	if n := outboxRows(t, pool); n != 0 {
		t.Fatalf("%d rows written by refused calls", n)
	}
}

func hintOf(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Hint
	}
	return ""
}

// TestOutboxTransactionsAdjacent: transactions whose calls interleave are
// appended one after the other, each one's events adjacent and in call
// order, the transactions in the order of their first call.
func TestOutboxTransactionsAdjacent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, schema := pgtest.Schema(t)
	a, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Rollback(ctx)
	b, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback(ctx)
	for i := range 3 {
		for _, tx := range []struct {
			tx   pgx.Tx
			name string
		}{{a, "a"}, {b, "b"}} {
			if err := publishTx(tx.tx, "ch", "", fmt.Sprintf("%s%d", tx.name, i), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	// b commits first, a second: both are pending when the writer starts.
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lg := runPostgres(t, pool, schema, autoCreate())
	var got []string
	for _, ev := range waitEvents(t, lg, 6) {
		got = append(got, string(ev.Data))
	}
	if want := []string{"a0", "a1", "a2", "b0", "b1", "b2"}; !slices.Equal(got, want) {
		t.Fatalf("log order %v, want %v", got, want)
	}
}

// op is one step of a worker in TestOutboxMixedWithAppends: an application
// transaction of n events, or an Append.
type op struct {
	worker, seq int
	viaTx       bool
}

// TestOutboxMixedWithAppends: concurrent application transactions (some
// rolled back) and Appends, on two instances draining at once. Every
// committed event and every Append appears exactly once, nothing rolled
// back appears, and each worker's events are in the order it made them:
// a transaction that committed before the worker's next Append (or next
// transaction) gets the lower positions.
// Each channel's seq is gap-free across drained and appended events.
func TestOutboxMixedWithAppends(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	first := startPostgres(t, autoCreate())
	second := secondInstance(t, first, autoCreate())

	const (
		workers = 8
		steps   = 60
	)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		lg := first
		if w%2 == 1 {
			lg = second
		}
		wg.Go(func() {
			for s := range steps {
				data := fmt.Sprintf("w%d-s%d", w, s)
				var err error
				switch s % 4 {
				case 0, 1: // a transaction of 1-3 events
					err = pgx.BeginFunc(ctx, lg.pool, func(tx pgx.Tx) error {
						for k := range 1 + s%3 {
							if err := publishTx(tx, fmt.Sprintf("ch%d", w%3), "", fmt.Sprintf("%s-%d", data, k), ""); err != nil {
								return err
							}
						}
						return nil
					})
				case 2: // rolled back
					err = pgx.BeginFunc(ctx, lg.pool, func(tx pgx.Tx) error {
						if err := publishTx(tx, "ch0", "", "rolled-back", ""); err != nil {
							return err
						}
						return errRollback
					})
					if errors.Is(err, errRollback) {
						err = nil
					}
				case 3:
					_, perr, aerr := lg.Append(ctx, []eventlog.Publish{{Channel: fmt.Sprintf("ch%d", w%3), Data: []byte(data + "-0")}})
					err = errors.Join(aerr, firstErr(perr))
				}
				if err != nil {
					errc <- fmt.Errorf("worker %d step %d: %w", w, s, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	// Per worker: (s%4==0,1) 1+s%3 events, (s%4==3) one.
	want := 0
	for s := range steps {
		switch s % 4 {
		case 0, 1:
			want += 1 + s%3
		case 3:
			want++
		}
	}
	evs := waitEvents(t, first, workers*want)
	seen := make(map[string]int64)
	last := make(map[int]string) // worker -> data of its last event seen, in log order
	seqs := make(map[string]int64)
	for _, ev := range evs {
		// Drained and appended events share one gap-free seq per channel
		// (0007_seq_tags.sql: the drain's rows are numbered by the trigger).
		if seqs[ev.Channel]++; ev.Seq != seqs[ev.Channel] {
			t.Fatalf("%s at %d: seq %d, want %d", ev.Channel, ev.Position, ev.Seq, seqs[ev.Channel])
		}
		d := string(ev.Data)
		if d == "rolled-back" {
			t.Fatalf("a rolled-back event is in the log at %d", ev.Position)
		}
		if p, dup := seen[d]; dup {
			t.Fatalf("event %q at positions %d and %d", d, p, ev.Position)
		}
		seen[d] = ev.Position
		var w, s, k int
		if _, err := fmt.Sscanf(d, "w%d-s%d-%d", &w, &s, &k); err != nil {
			t.Fatalf("unexpected event %q", d)
		}
		if prev, ok := last[w]; ok {
			var pw, ps, pk int
			fmt.Sscanf(prev, "w%d-s%d-%d", &pw, &ps, &pk)
			if ps > s || ps == s && pk >= k {
				t.Fatalf("worker %d: %q (position %d) after %q: not in the order made", w, d, ev.Position, prev)
			}
		}
		last[w] = d
	}
	if n := outboxRows(t, first.pool); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
}

var errRollback = errors.New("roll back")

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestOutboxDrainKilled: the backend of a drain that has claimed (deleted)
// rows and not committed is terminated. Nothing is lost or doubled: the
// rows come back and a later drain appends each once.
func TestOutboxDrainKilled(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, schema := pgtest.Schema(t)
	const n = 20
	inTx(t, pool, func(tx pgx.Tx) error {
		for i := range n {
			if err := publishTx(tx, "ch", "", fmt.Sprint(i), ""); err != nil {
				return err
			}
		}
		return nil
	})

	// Hold the drain after its DELETE: inserts into herald_events wait for
	// this lock.
	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx)
	if _, err := blocker.Exec(ctx, "LOCK TABLE herald_events IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	lg := runPostgres(t, pool, schema, autoCreate())

	var pid int
	waitFor(t, "a drain waiting on the lock", func() bool {
		err := pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
			WHERE query LIKE '%herald_outbox_drain%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
			  AND datname = current_database()
			  AND backend_xid IS NOT NULL`).Scan(&pid)
		return err == nil
	})
	// The drain has deleted the rows in its transaction: they are locked.
	var locked int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM herald_outbox WHERE id NOT IN (SELECT id FROM herald_outbox FOR UPDATE SKIP LOCKED)").Scan(&locked); err != nil {
		t.Fatal(err)
	}
	if locked != n {
		t.Fatalf("%d outbox rows claimed by the waiting drain, want %d", locked, n)
	}
	var ok bool
	if err := pool.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	evs := waitEvents(t, lg, n)
	for i, ev := range evs {
		if string(ev.Data) != fmt.Sprint(i) {
			t.Fatalf("event %d = %q, want %q", i, ev.Data, fmt.Sprint(i))
		}
	}
	// And nothing more comes.
	time.Sleep(200 * time.Millisecond)
	waitEvents(t, lg, n)
	if rows := outboxRows(t, pool); rows != 0 {
		t.Fatalf("%d rows left in the outbox", rows)
	}
}

// TestOutboxIdempotencyAcrossAPIs: one idempotency key space for the SQL
// API and Append. A row whose key matches the same event is dropped; one
// whose key was used for another event is refused into
// herald_outbox_failed, with the event's position; an Append of an event
// the SQL API published is a duplicate.
func TestOutboxIdempotencyAcrossAPIs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())

	rpc := mustAppend(t, lg, eventlog.Publish{Channel: "ch", Type: "t", Data: []byte("same"), IdempotencyKey: "k1", Format: eventlog.FormatText})
	inTx(t, lg.pool, func(tx pgx.Tx) error {
		if err := publishTx(tx, "ch", "t", "same", "k1"); err != nil { // a duplicate: dropped
			return err
		}
		if err := publishTx(tx, "ch", "t", "other", "k1"); err != nil { // a conflict: refused
			return err
		}
		return publishTx(tx, "ch", "t", "from sql", "k2")
	})
	evs := waitEvents(t, lg, 2)
	if evs[0].Position != rpc[0].Event.Position || string(evs[1].Data) != "from sql" || evs[1].IdempotencyKey != "k2" {
		t.Fatalf("log = %+v", evs)
	}
	var (
		code, reason string
		position     int64
	)
	if err := lg.pool.QueryRow(ctx, "SELECT code, reason, position FROM herald_outbox_failed").Scan(&code, &reason, &position); err != nil {
		t.Fatal(err)
	}
	if code != "idempotency_conflict" || position != rpc[0].Event.Position || !strings.Contains(reason, `idempotency key 'k1'`) {
		t.Fatalf("failed row: %s %q at %d", code, reason, position)
	}

	res, errs, err := lg.Append(ctx, []eventlog.Publish{
		{Channel: "ch", Type: "t", Data: []byte("from sql"), IdempotencyKey: "k2"},
		{Channel: "ch", Type: "t", Data: []byte("changed"), IdempotencyKey: "k2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || !res[0].Duplicate || res[0].Event.Position != evs[1].Position {
		t.Fatalf("Append of the SQL API's event: %+v, %v; want a duplicate of position %d", res[0], errs[0], evs[1].Position)
	}
	var conflict *eventlog.IdempotencyConflictError
	if !errors.As(errs[1], &conflict) || conflict.Position != evs[1].Position {
		t.Fatalf("Append reusing the key for other data: %v, want a conflict with position %d", errs[1], evs[1].Position)
	}
}

// TestOutboxRefusedAtDrain: rows the channel's rules refuse when they are
// drained (an unknown channel with auto-create off, data over the
// channel's max_event_size) are kept in herald_outbox_failed with why; the
// rows after them are appended.
func TestOutboxRefusedAtDrain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, schema := pgtest.Schema(t)
	if _, err := pool.Exec(ctx, "INSERT INTO herald_channels (name, max_event_size) VALUES ('here', 4)"); err != nil {
		t.Fatal(err)
	}
	inTx(t, pool, func(tx pgx.Tx) error {
		if err := publishTx(tx, "gone", "", "lost", ""); err != nil {
			return err
		}
		if err := publishTx(tx, "here", "", "too long", ""); err != nil {
			return err
		}
		return publishTx(tx, "here", "", "kept", "")
	})
	lg := runPostgres(t, pool, schema, eventlog.PostgresOptions{}) // auto-create off
	evs := waitEvents(t, lg, 1)
	if string(evs[0].Data) != "kept" {
		t.Fatalf("log = %+v", evs)
	}
	rows, err := pool.Query(ctx, "SELECT code, reason, convert_from(data, 'UTF8') FROM herald_outbox_failed ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for rows.Next() {
		var code, reason, data string
		if err := rows.Scan(&code, &reason, &data); err != nil {
			t.Fatal(err)
		}
		failed = append(failed, code+": "+reason+": "+data)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"channel_not_found: channel 'gone' not found (deleted, or unknown and auto-create is off): lost",
		"too_large: event data is 8 bytes, the channel's max_event_size is 4: too long",
	}
	if !slices.Equal(failed, want) {
		t.Fatalf("failed rows:\n%s\nwant\n%s", strings.Join(failed, "\n"), strings.Join(want, "\n"))
	}
}

// TestOutboxPermissions: a role granted what docs/operations.md says can
// publish through the SQL API and cannot write Herald's tables, drain the
// outbox or call Herald's internal functions.
func TestOutboxPermissions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())
	var b [6]byte
	_, _ = rand.Read(b[:])
	role := "herald_test_app_" + hex.EncodeToString(b[:])
	admin := lg.pool
	schema := pgx.Identifier{lg.schema}.Sanitize()
	r := pgx.Identifier{role}.Sanitize()
	// As in docs/operations.md, with the schema and role of this test.
	for _, stmt := range []string{
		"CREATE ROLE " + r + " NOLOGIN",
		"GRANT USAGE ON SCHEMA " + schema + " TO " + r,
		"GRANT EXECUTE ON FUNCTION " + schema + ".herald_publish_tx(text, text, jsonb, text), " +
			schema + ".herald_publish_tx(text, text, json, text), " +
			schema + ".herald_publish_tx(text, text, text, text), " +
			schema + ".herald_publish_tx(text, text, bytea, text) TO " + r,
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, stmt := range []string{"DROP OWNED BY " + r, "DROP ROLE " + r} {
			if _, err := admin.Exec(ctx, stmt); err != nil {
				t.Errorf("%s: %v", stmt, err)
			}
		}
	})

	asRole := func(sql string) error {
		return pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+r); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, sql)
			return err
		})
	}
	if err := asRole(`SELECT herald_publish_tx('orders:42', 'order.paid', '{"total":12}'::jsonb, 'pay-42')`); err != nil {
		t.Fatalf("the granted role cannot publish: %v", err)
	}
	for _, sql := range []string{
		`INSERT INTO herald_events (channel, data) VALUES ('orders:42', 'x')`,
		`INSERT INTO herald_outbox (channel, type, data, format, author) VALUES ('orders:42', '', 'x', 0, 'forged')`,
		`SELECT * FROM herald_events`,
		`SELECT herald_outbox_refuse('orders:42', '', 'x', NULL)`,
		`SELECT * FROM herald_outbox_drain(10, true)`,
		`SELECT * FROM herald_publish(ARRAY['c'], ARRAY[''], ARRAY['x'::bytea], ARRAY[''], ARRAY[''], ARRAY[NULL::bytea], ARRAY[0::smallint], true)`,
	} {
		err := asRole(sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // insufficient_privilege
			t.Errorf("as the application role: %s: %v, want permission denied (42501)", sql, err)
		}
	}
	evs := waitEvents(t, lg, 1)
	if evs[0].Author != "db:"+role || evs[0].Format != eventlog.FormatJSON {
		t.Fatalf("event = %+v, want author db:%s", evs[0], role)
	}
}
