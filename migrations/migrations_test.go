package migrations_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"go.uber.org/goleak"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/eventlog/eventlogtest"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/migrations"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pgx pools close their background health checker asynchronously.
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool).Acquire.func1"),
	)
}

// upTo migrates the pool's schema to version v only.
func upTo(t *testing.T, pool *pgxpool.Pool, v int64) {
	t.Helper()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithTableName(migrations.VersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(t.Context(), v); err != nil {
		t.Fatalf("migrate to %d: %v", v, err)
	}
}

// publish02 publishes one event through 0002's herald_publish, as an
// instance of the previous release does.
func publish02(t *testing.T, pool *pgxpool.Pool, typ, data, key string) int64 {
	t.Helper()
	var id int64
	err := pool.QueryRow(t.Context(), `SELECT id FROM herald_publish($1, $2, $3, $4, $5, true)`,
		[]string{"ch"}, []string{typ}, [][]byte{[]byte(data)}, []string{key}, []string{""}).Scan(&id)
	if err != nil {
		t.Fatalf("0002 herald_publish: %v", err)
	}
	return id
}

// edit02 updates (data != nil) or deletes an event through 0002's
// herald_edit.
func edit02(t *testing.T, pool *pgxpool.Pool, pos int64, data []byte) {
	t.Helper()
	var status int16
	err := pool.QueryRow(t.Context(), `SELECT status FROM herald_edit('ch', $1, $2, $3, '')`,
		pos, data == nil, append([]byte{}, data...)).Scan(&status)
	if err != nil || status != 0 {
		t.Fatalf("0002 herald_edit of %d: status %d, %v", pos, status, err)
	}
}

type row struct {
	kind    int16
	target  int64
	data    string
	deleted bool
	digest  []byte
}

func rows(t *testing.T, pool *pgxpool.Pool) map[int64]row {
	t.Helper()
	rs, err := pool.Query(t.Context(), `SELECT id, kind, target, data, deleted, idempotency_digest FROM herald_events`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[int64]row{}
	for rs.Next() {
		var (
			id   int64
			r    row
			data []byte
		)
		if err := rs.Scan(&id, &r.kind, &r.target, &data, &r.deleted, &r.digest); err != nil {
			t.Fatal(err)
		}
		r.data = string(data)
		out[id] = r
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// TestErasureAndDigests02To03: a database written by the previous release
// (0002), migrated to 0003, holds no data of events deleted before, gets
// the digests it can compute, and keeps serving instances of the previous
// release during a rollout, whose deletes then erase too.
func TestErasureAndDigests02To03(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.EmptySchema(t)
	upTo(t, pool, 2)

	deleted := publish02(t, pool, "note", "secret v1", "k-deleted")
	edit02(t, pool, deleted, []byte("secret v2"))
	edit02(t, pool, deleted, []byte("secret v3"))
	kept := publish02(t, pool, "note", "kept", "k-kept")
	edit02(t, pool, kept, []byte("kept v2")) // updated, not deleted: its first data is gone
	plain := publish02(t, pool, "note", "plain", "k-plain")
	edit02(t, pool, deleted, nil)

	if err := migrations.Up(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	got := rows(t, pool)
	for id, r := range got {
		switch {
		case id == deleted || r.target == deleted:
			if r.data != "" || !r.deleted && r.kind != 3 || r.digest != nil {
				t.Errorf("entry %d of the deleted event after the migration: %+v, want erased", id, r)
			}
		case id == kept:
			if r.data != "kept v2" || r.deleted || r.digest != nil {
				t.Errorf("updated event %d: %+v, want its data and no digest", id, r)
			}
		case r.target == kept:
			if r.data != "kept v2" || r.deleted {
				t.Errorf("Updated entry %d of a kept event: %+v", id, r)
			}
		case id == plain:
			if r.data != "plain" || string(r.digest) != string(sum("plain")) {
				t.Errorf("never edited event %d: %+v, want the digest of its data", id, r)
			}
		}
	}

	// The previous release keeps working on the migrated schema, and its
	// deletes erase the Updated entries (the trigger does it).
	old := publish02(t, pool, "note", "old v1", "k-old")
	edit02(t, pool, old, []byte("old v2"))
	edit02(t, pool, old, nil)
	for id, r := range rows(t, pool) {
		if (id == old || r.target == old) && (r.data != "" || r.digest != nil) {
			t.Errorf("entry %d of an event deleted by the previous release: %+v, want erased", id, r)
		}
	}

	// This release on the migrated schema: keys are compared by digest
	// where there is one, by type only where there is none.
	lg := eventlogtest.Start(t, eventlog.OpenPostgres(pool, eventlog.PostgresOptions{NotifyChannel: schema}))
	appendOne := func(typ, data, key string) (eventlog.Published, error) {
		t.Helper()
		res, errs, err := lg.Append(context.Background(), []eventlog.Publish{
			{Channel: "ch", Type: typ, Data: []byte(data), IdempotencyKey: key}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0], errs[0]
	}
	if r, err := appendOne("note", "plain", "k-plain"); err != nil || !r.Duplicate || r.Event.Position != plain {
		t.Errorf("retry of a migrated event: %+v, %v", r, err)
	}
	if _, err := appendOne("note", "not plain", "k-plain"); !errors.Is(err, eventlog.ErrIdempotencyConflict) {
		t.Errorf("key of a migrated event reused with other data: %v, want a conflict", err)
	}
	if r, err := appendOne("note", "anything", "k-kept"); err != nil || !r.Duplicate {
		t.Errorf("key of an event updated before the migration (type only): %+v, %v", r, err)
	}
	if _, err := appendOne("memo", "kept", "k-kept"); !errors.Is(err, eventlog.ErrIdempotencyConflict) {
		t.Errorf("key of an event updated before the migration, another type: %v, want a conflict", err)
	}
}

// TestDataFormat03To04: what the previous release wrote reads back as
// bytes after 0004, its functions keep working beside the new ones, and
// the new ones store formats.
func TestDataFormat03To04(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.EmptySchema(t)
	upTo(t, pool, 3)
	old := publish02(t, pool, "note", "before", "")
	upTo(t, pool, 4)
	// The previous release's publish, during a rollout.
	during := publish02(t, pool, "note", "during", "")
	// This release's log needs the later migrations too (its writer drains
	// the outbox of 0006).
	if err := migrations.Up(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	l := eventlog.OpenPostgres(pool, eventlog.PostgresOptions{Options: eventlog.Options{AutoCreate: true}, NotifyChannel: schema})
	eventlogtest.Start(t, l)
	res, errs, err := l.Append(t.Context(), []eventlog.Publish{{Channel: "ch", Data: []byte(`{"a":1}`), Format: eventlog.FormatJSON}})
	if err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	evs, err := l.Read(t.Context(), eventlog.Query{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]eventlog.Format{}
	for _, ev := range evs {
		got[ev.Position] = ev.Format
	}
	if got[old] != eventlog.FormatUnspecified || got[during] != eventlog.FormatUnspecified || got[res[0].Event.Position] != eventlog.FormatJSON {
		t.Fatalf("formats %v: want bytes for %d and %d, JSON for %d", got, old, during, res[0].Event.Position)
	}
}

// TestSeq06To07: events the previous release wrote (0006) are numbered per
// channel in position order by 0007; what the previous release's writer
// (0002's herald_publish, still there) and its edits write during a rollout
// get the next numbers from the trigger; this release's log goes on from
// there, gap-free per channel.
func TestSeq06To07(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.EmptySchema(t)
	upTo(t, pool, 6)
	for i := range 3 {
		publish02(t, pool, "note", fmt.Sprint("before-", i), "")
	}
	var other int64
	if err := pool.QueryRow(t.Context(), `SELECT id FROM herald_publish($1, $2, $3, $4, $5, true)`,
		[]string{"other"}, []string{""}, [][]byte{[]byte("x")}, []string{""}, []string{""}).Scan(&other); err != nil {
		t.Fatal(err)
	}
	upTo(t, pool, 7)
	during := publish02(t, pool, "note", "during", "")
	edit02(t, pool, during, []byte("edited"))
	if err := migrations.Up(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	l := eventlog.OpenPostgres(pool, eventlog.PostgresOptions{Options: eventlog.Options{AutoCreate: true}, NotifyChannel: schema})
	eventlogtest.Start(t, l)
	if _, errs, err := l.Append(t.Context(), []eventlog.Publish{{Channel: "ch", Data: []byte("after")}, {Channel: "other", Data: []byte("y")}}); err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatal(err, errs)
	}
	evs, err := l.Read(t.Context(), eventlog.Query{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"ch":    {"before-0", "before-1", "before-2", "edited", "edited", "after"}, // the UPDATED entry carries the new data
		"other": {"x", "y"},
	}
	got := map[string][]string{}
	for _, ev := range evs {
		got[ev.Channel] = append(got[ev.Channel], string(ev.Data))
		if n := int64(len(got[ev.Channel])); ev.Seq != n {
			t.Errorf("%s position %d (%q): seq %d, want %d", ev.Channel, ev.Position, ev.Data, ev.Seq, n)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("log %v, want %v", got, want)
	}
}

// publish07 publishes events through 0007's herald_publish (the overload
// with tags), as an instance of the previous release does, and returns
// their seqs.
func publish07(t *testing.T, pool *pgxpool.Pool, channels ...string) []int64 {
	t.Helper()
	n := len(channels)
	rows, err := pool.Query(t.Context(), `SELECT seq FROM herald_publish($1, $2, $3, $4, $5, $6, $7, $8, true) ORDER BY ord`,
		channels, make([]string, n), make([][]byte, n), make([]string, n), make([]string, n), make([][]byte, n),
		make([]int16, n), make([]*string, n))
	if err != nil {
		t.Fatalf("0007 herald_publish: %v", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("0007 herald_publish: %v", err)
	}
	return seqs
}

// TestSeqCache08To09: seqs stay gap-free per channel across 0009 (the
// writer's remembered seqs, the sparse seq index), with an instance of the
// previous release (0007's herald_publish, the trigger) writing to the
// same channels before, during and after, interleaved with this release's
// writer; and history from a seq finds entries numbered before 0009.
func TestSeqCache08To09(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.EmptySchema(t)
	upTo(t, pool, 8)
	for range 10 {
		publish07(t, pool, "ch", "ch", "other", "ch")
	}
	upTo(t, pool, 9)
	l := eventlog.OpenPostgres(pool, eventlog.PostgresOptions{Options: eventlog.Options{AutoCreate: true}, NotifyChannel: schema})
	eventlogtest.Start(t, l)
	for i := range 10 {
		for range 2 { // the second batch uses what the writer remembers
			if _, errs, err := l.Append(t.Context(), []eventlog.Publish{{Channel: "ch"}, {Channel: "other"}, {Channel: "ch"}}); err != nil || errs[0] != nil || errs[1] != nil || errs[2] != nil {
				t.Fatal(err, errs)
			}
		}
		publish07(t, pool, "ch", "other")
		if i%3 == 0 {
			edit02(t, pool, 1+4*int64(i), []byte("edited")) // a "ch" event of the first loop
		}
	}
	evs, err := l.Read(t.Context(), eventlog.Query{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, ev := range evs {
		got[ev.Channel]++
		if ev.Seq != got[ev.Channel] {
			t.Fatalf("%s position %d: seq %d, want %d", ev.Channel, ev.Position, ev.Seq, got[ev.Channel])
		}
	}
	if got["ch"] < 64+2 {
		t.Fatalf("ch holds %d entries; the test needs more than the index step (64)", got["ch"])
	}
	for _, from := range []int64{1, 2, 30, 64, 65, 66, got["ch"]} {
		page, err := l.History(t.Context(), eventlog.HistoryQuery{Channel: "ch", FromSeq: from, Limit: 1})
		if err != nil || len(page.Events) != 1 || page.Events[0].Seq != from {
			t.Errorf("ch from seq %d: %v, %v", from, page.Events, err)
		}
	}
}
