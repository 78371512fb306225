package eventlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
)

// pgInstance is one Postgres log with its Run goroutine.
type pgInstance struct {
	*eventlog.Postgres
	pool   *pgxpool.Pool
	schema string
}

// startPostgres opens a Postgres log on a fresh schema, its schema name as
// notify channel, and runs it until the test ends.
func startPostgres(t testing.TB, opts eventlog.PostgresOptions) *pgInstance {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	return runPostgres(t, pool, schema, opts)
}

// runPostgres opens a Postgres log on pool and runs it until the test ends.
func runPostgres(t testing.TB, pool *pgxpool.Pool, schema string, opts eventlog.PostgresOptions) *pgInstance {
	t.Helper()
	if opts.NotifyChannel == "" {
		opts.NotifyChannel = schema
	}
	lg := eventlog.OpenPostgres(pool, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &pgInstance{Postgres: lg, pool: pool, schema: schema}
}

// secondInstance opens another pool and log on the same schema, like a
// second server on the same database.
func secondInstance(t testing.TB, first *pgInstance, opts eventlog.PostgresOptions) *pgInstance {
	t.Helper()
	pool := pgtest.OpenPool(t, pgtest.SchemaURL(t, first.schema))
	return runPostgres(t, pool, first.schema, opts)
}

func autoCreate() eventlog.PostgresOptions {
	return eventlog.PostgresOptions{Options: eventlog.Options{AutoCreate: true}}
}

func mustAppend(t testing.TB, lg eventlog.Log, ps ...eventlog.Publish) []eventlog.Published {
	t.Helper()
	res, errs, err := lg.Append(context.Background(), ps)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Append: item %d: %v", i, err)
		}
	}
	return res
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPostgresAppendAndRead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())

	if head, err := lg.Head(ctx); err != nil || head != 0 {
		t.Fatalf("Head of an empty log = %d, %v; want 0", head, err)
	}
	res := mustAppend(t, lg,
		eventlog.Publish{Channel: "a", Type: "t1", Data: []byte("one")},
		eventlog.Publish{Channel: "b", Type: "t2", Data: []byte("two")},
		eventlog.Publish{Channel: "a", Data: nil},
	)
	for i := 1; i < len(res); i++ {
		if res[i].Event.Position <= res[i-1].Event.Position {
			t.Fatalf("positions not increasing in input order: %+v", res)
		}
	}
	if ev := res[0].Event; ev.Channel != "a" || ev.Type != "t1" || string(ev.Data) != "one" ||
		ev.Kind != eventlog.KindPublished || ev.CreatedAt.IsZero() || res[0].Duplicate {
		t.Fatalf("first result = %+v", res[0])
	}

	all, err := lg.Read(ctx, eventlog.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("Read all = %d events, want 3", len(all))
	}
	for i, ev := range all {
		want := res[i].Event
		if ev.Position != want.Position || ev.Channel != want.Channel || ev.Type != want.Type ||
			!bytes.Equal(ev.Data, want.Data) || !ev.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("Read[%d] = %+v, want %+v", i, ev, want)
		}
	}
	onlyA, err := lg.Read(ctx, eventlog.Query{Channels: []string{"a", "a", "zz"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(onlyA) != 2 || onlyA[0].Position != res[0].Event.Position || onlyA[1].Position != res[2].Event.Position {
		t.Fatalf("Read channel a = %+v", onlyA)
	}
	window, err := lg.Read(ctx, eventlog.Query{After: res[0].Event.Position, UpTo: res[1].Event.Position, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(window) != 1 || window[0].Position != res[1].Event.Position {
		t.Fatalf("Read window = %+v", window)
	}
	limited, err := lg.Read(ctx, eventlog.Query{Channels: []string{"a", "b"}, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(limited) != 2 || limited[1].Position != res[1].Event.Position {
		t.Fatalf("Read limit 2 = %+v", limited)
	}
	if head, err := lg.Head(ctx); err != nil || head != res[2].Event.Position {
		t.Fatalf("Head = %d, %v; want %d", head, err, res[2].Event.Position)
	}
	got, err := lg.Get(ctx, "b", res[1].Event.Position)
	if err != nil || string(got.Data) != "two" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := lg.Get(ctx, "a", res[1].Event.Position); !errors.Is(err, eventlog.ErrEventNotFound) {
		t.Fatalf("Get from the wrong channel: %v, want ErrEventNotFound", err)
	}
}

func TestPostgresHistory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())
	var pos []int64
	for i := range 5 {
		res := mustAppend(t, lg, eventlog.Publish{Channel: "h", Data: []byte{byte(i)}})
		pos = append(pos, res[0].Event.Position)
	}
	if _, err := lg.Delete(ctx, "h", pos[1], ""); err != nil {
		t.Fatal(err)
	}

	page, err := lg.History(ctx, eventlog.HistoryQuery{Channel: "h", Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 3 || !page.HasMore || page.Events[0].Position != pos[0] || !page.Events[1].Deleted {
		t.Fatalf("first forward page = %+v", page)
	}
	page, err = lg.History(ctx, eventlog.HistoryQuery{Channel: "h", Cursor: page.Events[2].Position, Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	// pos[3], pos[4] and the Deleted entry.
	if len(page.Events) != 3 || page.HasMore || page.Events[2].Kind != eventlog.KindDeleted {
		t.Fatalf("second forward page = %+v", page)
	}
	back, err := lg.History(ctx, eventlog.HistoryQuery{Channel: "h", Backward: true, Limit: 2, CurrentOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Events) != 2 || !back.HasMore || back.Events[0].Position != pos[4] || back.Events[1].Position != pos[3] {
		t.Fatalf("backward page = %+v", back)
	}
	back, err = lg.History(ctx, eventlog.HistoryQuery{Channel: "h", Backward: true, Cursor: pos[3], CurrentOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Events) != 2 || back.HasMore || back.Events[0].Position != pos[2] || back.Events[1].Position != pos[0] {
		t.Fatalf("backward page after pos[3], current only = %+v", back)
	}
}

func TestPostgresIdempotency(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	first := startPostgres(t, autoCreate())
	second := secondInstance(t, first, autoCreate())

	res := mustAppend(t, first,
		eventlog.Publish{Channel: "c", Type: "x", Data: []byte("original"), IdempotencyKey: "k1"},
		eventlog.Publish{Channel: "c", Type: "x", Data: []byte("original"), IdempotencyKey: "k1"},
		eventlog.Publish{Channel: "d", Data: []byte("other channel"), IdempotencyKey: "k1"},
	)
	if res[0].Duplicate || !res[1].Duplicate || res[2].Duplicate {
		t.Fatalf("duplicate flags = %v %v %v, want false true false", res[0].Duplicate, res[1].Duplicate, res[2].Duplicate)
	}
	if res[1].Event.Position != res[0].Event.Position || string(res[1].Event.Data) != "original" || res[1].Event.Type != "x" {
		t.Fatalf("in-batch duplicate = %+v, want the first event %+v", res[1].Event, res[0].Event)
	}

	// Retried through the other instance: the original comes back; the key
	// reused for something else is refused there too.
	_, perr, err := second.Append(ctx, []eventlog.Publish{{Channel: "c", Type: "x", Data: []byte("retry"), IdempotencyKey: "k1"}})
	if err != nil || !errors.Is(perr[0], eventlog.ErrIdempotencyConflict) {
		t.Fatalf("key reused through the other instance: %v, %v; want ErrIdempotencyConflict", err, perr)
	}
	again := mustAppend(t, second, eventlog.Publish{Channel: "c", Type: "x", Data: []byte("original"), IdempotencyKey: "k1"})
	if !again[0].Duplicate || again[0].Event.Position != res[0].Event.Position ||
		string(again[0].Event.Data) != "original" || again[0].Event.Type != "x" ||
		!again[0].Event.CreatedAt.Equal(res[0].Event.CreatedAt) {
		t.Fatalf("retry = %+v, want duplicate of %+v", again[0], res[0].Event)
	}

	// Concurrent appends with one key through both instances write once.
	var wg sync.WaitGroup
	results := make([]eventlog.Published, 20)
	errs := make([]error, 20)
	for i := range results {
		lg := first
		if i%2 == 1 {
			lg = second
		}
		wg.Go(func() {
			res, perr, err := lg.Append(ctx, []eventlog.Publish{{Channel: "race", Data: []byte("same"), IdempotencyKey: "once"}})
			if err == nil {
				err = perr[0]
			}
			if err == nil {
				results[i] = res[0]
			}
			errs[i] = err
		})
	}
	wg.Wait()
	written := 0
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("append %d: %v", i, errs[i])
		}
		if !results[i].Duplicate {
			written++
		}
		if results[i].Event.Position != results[0].Event.Position {
			t.Fatalf("append %d got position %d, append 0 got %d", i, results[i].Event.Position, results[0].Event.Position)
		}
	}
	if written != 1 {
		t.Fatalf("%d appends wrote, want 1", written)
	}
	evs, err := first.Read(ctx, eventlog.Query{Channels: []string{"race"}})
	if err != nil || len(evs) != 1 {
		t.Fatalf("channel race holds %d events (%v), want 1", len(evs), err)
	}
}

func TestPostgresPerItemErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, eventlog.PostgresOptions{}) // no auto-create
	s := eventlog.DefaultSettings()
	s.MaxEventSize = 4
	if _, err := lg.CreateChannel(ctx, "small", s); err != nil {
		t.Fatal(err)
	}
	res, errs, err := lg.Append(ctx, []eventlog.Publish{
		{Channel: "small", Data: []byte("ok")},
		{Channel: "missing", Data: []byte("x")},
		{Channel: "small", Data: []byte("too big"), IdempotencyKey: "k"},
		{Channel: "small", Data: []byte("fits"), IdempotencyKey: "k"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[3] != nil || res[3].Duplicate {
		t.Fatalf("errs = %v, res[3] = %+v", errs, res[3])
	}
	if !errors.Is(errs[1], eventlog.ErrChannelNotFound) {
		t.Fatalf("unknown channel: %v, want ErrChannelNotFound", errs[1])
	}
	var tl *eventlog.TooLargeError
	if !errors.Is(errs[2], eventlog.ErrTooLarge) || !errors.As(errs[2], &tl) || tl.Size != 7 || tl.Limit != 4 {
		t.Fatalf("too large: %v (%+v)", errs[2], tl)
	}
	if res[3].Event.Position <= res[0].Event.Position {
		t.Fatalf("positions %d, %d", res[0].Event.Position, res[3].Event.Position)
	}
}

func TestPostgresEdit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())
	ev := mustAppend(t, lg, eventlog.Publish{Channel: "e", Type: "note", Data: []byte("v1"), IdempotencyKey: "k"})[0].Event

	upd, entry, err := lg.Update(ctx, "e", ev.Position, []byte("v2"), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if upd.Position != ev.Position || string(upd.Data) != "v2" || upd.UpdatedAt.IsZero() || upd.Type != "note" || upd.IdempotencyKey != "k" {
		t.Fatalf("updated event = %+v", upd)
	}
	if entry.Kind != eventlog.KindUpdated || entry.Target != ev.Position || entry.Position <= ev.Position ||
		entry.Type != "note" || string(entry.Data) != "v2" {
		t.Fatalf("update entry = %+v", entry)
	}
	got, err := lg.Get(ctx, "e", ev.Position)
	if err != nil || string(got.Data) != "v2" || !got.UpdatedAt.Equal(upd.UpdatedAt) {
		t.Fatalf("Get after update = %+v, %v", got, err)
	}
	if _, _, err := lg.Update(ctx, "e", entry.Position, []byte("x"), 0, ""); !errors.Is(err, eventlog.ErrNotEditable) {
		t.Fatalf("update of an entry: %v, want ErrNotEditable", err)
	}
	if _, _, err := lg.Update(ctx, "other", ev.Position, []byte("x"), 0, ""); !errors.Is(err, eventlog.ErrEventNotFound) {
		t.Fatalf("update in the wrong channel: %v, want ErrEventNotFound", err)
	}
	big := make([]byte, eventlog.DefaultMaxEventSize+1)
	if _, _, err := lg.Update(ctx, "e", ev.Position, big, 0, ""); !errors.Is(err, eventlog.ErrTooLarge) {
		t.Fatalf("update too large: %v, want ErrTooLarge", err)
	}

	del, err := lg.Delete(ctx, "e", ev.Position, "")
	if err != nil {
		t.Fatal(err)
	}
	if del.Kind != eventlog.KindDeleted || del.Target != ev.Position || del.Position <= entry.Position || del.Type != "note" {
		t.Fatalf("delete entry = %+v", del)
	}
	got, err = lg.Get(ctx, "e", ev.Position)
	if err != nil || !got.Deleted || len(got.Data) != 0 {
		t.Fatalf("Get after delete = %+v, %v", got, err)
	}
	if _, err := lg.Delete(ctx, "e", ev.Position, ""); !errors.Is(err, eventlog.ErrNotEditable) {
		t.Fatalf("second delete: %v, want ErrNotEditable", err)
	}
	// No row holds any version of the deleted event's data, nor its digest.
	var left int
	if err := lg.pool.QueryRow(ctx, `SELECT count(*) FROM herald_events
WHERE (id = $1 OR target = $1) AND (data <> '' OR idempotency_digest IS NOT NULL)`, ev.Position).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d rows still hold data of the deleted event (%v)", left, err)
	}
	// The key still names the deleted event.
	dup := mustAppend(t, lg, eventlog.Publish{Channel: "e", Type: "note", Data: []byte("again"), IdempotencyKey: "k"})[0]
	if !dup.Duplicate || dup.Event.Position != ev.Position || !dup.Event.Deleted {
		t.Fatalf("append with the deleted event's key = %+v", dup)
	}
}

func TestPostgresChannels(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())
	s := eventlog.Settings{MaxEvents: 10, MaxAge: 90 * time.Minute, MaxEventSize: 100}
	c, err := lg.CreateChannel(ctx, "room/1", s)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "room/1" || c.Settings != s || c.CreatedAt.IsZero() {
		t.Fatalf("created %+v", c)
	}
	if _, err := lg.CreateChannel(ctx, "room/1", s); !errors.Is(err, eventlog.ErrChannelExists) {
		t.Fatalf("second create: %v, want ErrChannelExists", err)
	}
	for _, name := range []string{"room/2", "room/3", "lobby"} {
		if _, err := lg.CreateChannel(ctx, name, eventlog.DefaultSettings()); err != nil {
			t.Fatal(err)
		}
	}
	page, err := lg.ListChannels(ctx, "", "room/", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Channels) != 2 || page.Channels[0].Name != "room/1" || page.Next != "room/2" {
		t.Fatalf("first page = %+v", page)
	}
	page, err = lg.ListChannels(ctx, page.Next, "room/", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Channels) != 1 || page.Channels[0].Name != "room/3" || page.Next != "" {
		t.Fatalf("second page = %+v", page)
	}

	maxEvents := int64(0)
	upd, err := lg.UpdateChannel(ctx, "room/1", eventlog.SettingsPatch{MaxEvents: &maxEvents})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Settings.MaxEvents != 0 || upd.Settings.MaxAge != s.MaxAge || upd.Settings.MaxEventSize != 100 {
		t.Fatalf("updated settings = %+v", upd.Settings)
	}
	if _, err := lg.UpdateChannel(ctx, "nope", eventlog.SettingsPatch{}); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Fatalf("update of an unknown channel: %v", err)
	}

	res := mustAppend(t, lg,
		eventlog.Publish{Channel: "room/1", Data: []byte("a"), IdempotencyKey: "k"},
		eventlog.Publish{Channel: "room/1", Data: []byte("b")},
	)
	if err := lg.DeleteChannel(ctx, "room/1"); err != nil {
		t.Fatal(err)
	}
	// The newest entries are gone, their positions are not.
	if h, err := lg.Head(ctx); err != nil || h != res[1].Event.Position {
		t.Fatalf("Head after deleting the newest entries = %d, %v; want %d", h, err, res[1].Event.Position)
	}
	if err := lg.DeleteChannel(ctx, "room/1"); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := lg.GetChannel(ctx, "room/1"); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Fatalf("GetChannel after delete: %v", err)
	}
	chs, err := lg.GetChannels(ctx, []string{"room/1", "room/2", "nope"})
	if err != nil || len(chs) != 1 || chs[0].Name != "room/2" {
		t.Fatalf("GetChannels = %+v, %v", chs, err)
	}
	if evs, err := lg.Read(ctx, eventlog.Query{Channels: []string{"room/1"}}); err != nil || len(evs) != 0 {
		t.Fatalf("entries left after delete: %+v, %v", evs, err)
	}

	// Auto-create revives the channel with default settings; the key is
	// free again and TruncatedThrough covers the deleted entries.
	again := mustAppend(t, lg, eventlog.Publish{Channel: "room/1", Data: []byte("c"), IdempotencyKey: "k"})[0]
	if again.Duplicate {
		t.Fatalf("key of a deleted channel still used: %+v", again)
	}
	c, err = lg.GetChannel(ctx, "room/1")
	if err != nil {
		t.Fatal(err)
	}
	if c.TruncatedThrough != res[1].Event.Position || c.Settings != eventlog.DefaultSettings() {
		t.Fatalf("revived channel = %+v, want TruncatedThrough %d and default settings", c, res[1].Event.Position)
	}
	// CreateChannel after a delete keeps it too.
	if err := lg.DeleteChannel(ctx, "room/1"); err != nil {
		t.Fatal(err)
	}
	c, err = lg.CreateChannel(ctx, "room/1", s)
	if err != nil {
		t.Fatal(err)
	}
	if c.TruncatedThrough != again.Event.Position || c.Settings != s {
		t.Fatalf("recreated channel = %+v, want TruncatedThrough %d", c, again.Event.Position)
	}
}

func TestPostgresTrim(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())
	if _, err := lg.CreateChannel(ctx, "count", eventlog.Settings{MaxEvents: 3, MaxEventSize: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := lg.CreateChannel(ctx, "age", eventlog.Settings{MaxAge: time.Hour, MaxEventSize: 100}); err != nil {
		t.Fatal(err)
	}
	var countPos, agePos []int64
	for range 10 {
		r := mustAppend(t, lg, eventlog.Publish{Channel: "count"}, eventlog.Publish{Channel: "age"}, eventlog.Publish{Channel: "free"})
		countPos = append(countPos, r[0].Event.Position)
		agePos = append(agePos, r[1].Event.Position)
	}

	n, err := lg.Trim(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 {
		t.Fatalf("Trim removed %d, want 7 (count channel down to 3)", n)
	}
	evs, err := lg.Read(ctx, eventlog.Query{Channels: []string{"count"}})
	if err != nil || len(evs) != 3 || evs[0].Position != countPos[7] {
		t.Fatalf("count channel after trim = %+v, %v", evs, err)
	}
	c, err := lg.GetChannel(ctx, "count")
	if err != nil || c.TruncatedThrough != countPos[6] {
		t.Fatalf("count channel = %+v, %v; want TruncatedThrough %d", c, err, countPos[6])
	}

	// Two hours on, everything in "age" is too old.
	n, err = lg.Trim(ctx, time.Now().Add(2*time.Hour))
	if err != nil || n != 10 {
		t.Fatalf("Trim = %d, %v; want 10", n, err)
	}
	c, err = lg.GetChannel(ctx, "age")
	if err != nil || c.TruncatedThrough != agePos[9] {
		t.Fatalf("age channel = %+v, %v; want TruncatedThrough %d", c, err, agePos[9])
	}
	if evs, err := lg.Read(ctx, eventlog.Query{Channels: []string{"free"}}); err != nil || len(evs) != 10 {
		t.Fatalf("channel without limits lost entries: %d, %v", len(evs), err)
	}

	// While another session holds the retention lock, Trim does nothing.
	tx, err := lg.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext(current_schema()), 2)"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, lg, eventlog.Publish{Channel: "count"})
	if n, err := lg.Trim(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("Trim while locked = %d, %v; want 0, nil", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := lg.Trim(ctx, time.Now()); err != nil || n != 1 {
		t.Fatalf("Trim after unlock = %d, %v; want 1", n, err)
	}
}

func TestPostgresTrimBatches(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())
	// More than one trim transaction (10,000 entries each), over two
	// channels.
	for _, ch := range []string{"x", "y"} {
		if _, err := lg.CreateChannel(ctx, ch, eventlog.Settings{MaxEvents: 1, MaxEventSize: 100}); err != nil {
			t.Fatal(err)
		}
		if _, err := lg.pool.Exec(ctx, `INSERT INTO herald_events (channel) SELECT $1 FROM generate_series(1, 7001)`, ch); err != nil {
			t.Fatal(err)
		}
	}
	n, err := lg.Trim(ctx, time.Now())
	if err != nil || n != 14000 {
		t.Fatalf("Trim = %d, %v; want 14000", n, err)
	}
	for _, ch := range []string{"x", "y"} {
		evs, err := lg.Read(ctx, eventlog.Query{Channels: []string{ch}})
		if err != nil || len(evs) != 1 {
			t.Fatalf("channel %s keeps %d entries (%v), want 1", ch, len(evs), err)
		}
		c, err := lg.GetChannel(ctx, ch)
		if err != nil || c.TruncatedThrough != evs[0].Position-1 {
			t.Fatalf("channel %s = %+v, want TruncatedThrough %d", ch, c, evs[0].Position-1)
		}
	}
}

func TestPostgresAppendContext(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	lg := eventlog.OpenPostgres(pool, eventlog.PostgresOptions{Options: eventlog.Options{AutoCreate: true}, NotifyChannel: schema})

	// Run is not running: the append waits in the queue and gives up with
	// its ctx, and is never written.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := lg.Append(ctx, []eventlog.Publish{{Channel: "c", Data: []byte("abandoned")}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append without Run: %v, want DeadlineExceeded", err)
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lg.Run(runCtx) }()
	mustAppend(t, lg, eventlog.Publish{Channel: "c", Data: []byte("written")})
	evs, err := lg.Read(t.Context(), eventlog.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || string(evs[0].Data) != "written" {
		t.Fatalf("log = %+v, want only the second append", evs)
	}

	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, _, err := lg.Append(t.Context(), []eventlog.Publish{{Channel: "c"}}); !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Append after Run: %v, want ErrClosed", err)
	}
	if err := lg.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil")
	}
}

// TestPostgresQueueBoundedInBytes: appends waiting for the writer hold at
// most QueueBytes: one that would pass it waits for room (and gives up
// with its ctx, never queued, never written) instead of queueing.
func TestPostgresQueueBoundedInBytes(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	lg := eventlog.OpenPostgres(pool, eventlog.PostgresOptions{Options: eventlog.Options{AutoCreate: true}, NotifyChannel: schema, QueueBytes: 4 << 10})
	big := func(s string) []eventlog.Publish {
		return []eventlog.Publish{{Channel: "c", Data: []byte(s + strings.Repeat(".", 3<<10))}}
	}
	// Run is not running: the first append waits in the queue, holding
	// 3 KiB of the 4.
	first := make(chan error, 1)
	go func() {
		_, _, err := lg.Append(context.Background(), big("first"))
		first <- err
	}()
	waitFor(t, "the first append to queue", func() bool { return lg.QueueDepth() == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := lg.Append(ctx, big("refused")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append past the byte bound: %v, want DeadlineExceeded", err)
	}
	if d := lg.QueueDepth(); d != 1 {
		t.Fatalf("queue depth %d after the append past the bound gave up, want 1 (it must not have queued)", d)
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lg.Run(runCtx) }()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	mustAppend(t, lg, big("second")...)
	evs, err := lg.Read(t.Context(), eventlog.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || !strings.HasPrefix(string(evs[0].Data), "first") || !strings.HasPrefix(string(evs[1].Data), "second") {
		t.Fatalf("log holds %d events, want first and second only", len(evs))
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestPostgresClosedWhileQueued(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	lg := eventlog.OpenPostgres(pool, eventlog.PostgresOptions{Options: eventlog.Options{AutoCreate: true}, NotifyChannel: schema})
	// Hold the write lock so the writer's first batch waits in the
	// database while more appends queue behind it.
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), "SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1)"); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lg.Run(runCtx) }()

	const n = 20
	errs := make(chan error, n)
	first := make(chan error, 1)
	go func() {
		_, _, err := lg.Append(context.Background(), []eventlog.Publish{{Channel: "c", Data: []byte("first")}})
		first <- err
	}()
	// Wait for the writer to be blocked on the lock with the first batch.
	waitFor(t, "the writer to wait for the lock", func() bool {
		var waiting bool
		err := pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted AND objid = 1 AND classid = hashtext(current_schema())::oid)`).Scan(&waiting)
		return err == nil && waiting
	})
	for range n {
		go func() {
			_, _, err := lg.Append(context.Background(), []eventlog.Publish{{Channel: "c", Data: []byte("queued")}})
			errs <- err
		}()
	}
	stop()
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The batch in flight completes; everything else fails with ErrClosed
	// or was written (if it made it into the first batch).
	if err := <-first; err != nil {
		t.Fatalf("in-flight append: %v", err)
	}
	for range n {
		if err := <-errs; err != nil && !errors.Is(err, eventlog.ErrClosed) {
			t.Fatalf("queued append: %v, want nil or ErrClosed", err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPostgresUnavailable(t *testing.T) {
	t.Parallel()
	// A pool pointed at a port nobody listens on.
	pool, err := pgxpool.New(t.Context(), "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	lg := runPostgres(t, pool, "unreachable", autoCreate())

	start := time.Now()
	_, _, err = lg.Append(t.Context(), []eventlog.Publish{{Channel: "c", Data: []byte("x")}})
	if !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("Append: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Append took %v to fail", d)
	}
	if _, err := lg.Head(t.Context()); !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("Head: %v, want ErrUnavailable", err)
	}
	if _, _, err := lg.Update(t.Context(), "c", 1, nil, 0, ""); !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("Update: %v, want ErrUnavailable", err)
	}
}

// TestPostgresListenerLoss cuts the listener's connection while appends keep
// coming: Watch reconnects and wakes, and a reader that reads after its
// cursor on every wake-up (and on a 200 ms poll) sees every event once.
func TestPostgresListenerLoss(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())

	var wakes atomic.Int64
	wakeCh := make(chan struct{}, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- lg.Watch(watchCtx, func() {
			wakes.Add(1)
			select {
			case wakeCh <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		stopWatch()
		if err := <-watchDone; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch: %v, want context.Canceled", err)
		}
	}()
	wakeCount := wakes.Load
	waitFor(t, "the first wake-up", func() bool { return wakeCount() >= 1 })

	// The reader: on wake or every 200 ms, read after the cursor.
	readerCtx, stopReader := context.WithCancel(ctx)
	type readerOut struct {
		seen []int64
		err  error
	}
	readerDone := make(chan readerOut, 1)
	var cursor atomic.Int64
	go func() {
		var out readerOut
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			evs, err := lg.Read(readerCtx, eventlog.Query{After: cursor.Load(), Limit: 100})
			if err != nil {
				if readerCtx.Err() == nil {
					out.err = err
				}
				readerDone <- out
				return
			}
			for _, ev := range evs {
				out.seen = append(out.seen, ev.Position)
			}
			if len(evs) > 0 {
				cursor.Store(evs[len(evs)-1].Position)
				continue
			}
			select {
			case <-readerCtx.Done():
				readerDone <- out
				return
			case <-wakeCh:
			case <-tick.C:
			}
		}
	}()

	listenerPID := func() int {
		var pid int
		err := lg.pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
			WHERE application_name = $1 AND query LIKE '%' || $2 || '%'`,
			eventlog.ListenerApplicationName, lg.schema).Scan(&pid)
		if err != nil {
			return 0
		}
		return pid
	}
	var last int64
	appendSome := func(n int) {
		for i := range n {
			res := mustAppend(t, lg, eventlog.Publish{Channel: fmt.Sprintf("ch%d", i%3), Data: []byte("x")})
			last = res[0].Event.Position
		}
	}

	appendSome(20)
	for round := range 3 {
		var pid int
		waitFor(t, "the listener's backend", func() bool { pid = listenerPID(); return pid != 0 })
		before := wakeCount()
		var ok bool
		if err := lg.pool.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("round %d: pg_terminate_backend: %v, %v", round, ok, err)
		}
		appendSome(20) // some of these are notified while nobody listens
		waitFor(t, "a new listener", func() bool { p := listenerPID(); return p != 0 && p != pid })
		waitFor(t, "wake-ups after reconnecting", func() bool { return wakeCount() > before })
		appendSome(20)
	}
	waitFor(t, "the reader to catch up", func() bool { return cursor.Load() == last })
	stopReader()
	out := <-readerDone
	if out.err != nil {
		t.Fatalf("reader: %v", out.err)
	}
	all, err := lg.Read(ctx, eventlog.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.seen) != len(all) {
		t.Fatalf("reader saw %d events, the log holds %d", len(out.seen), len(all))
	}
	for i := range all {
		if out.seen[i] != all[i].Position {
			t.Fatalf("reader's event %d is position %d, the log's is %d", i, out.seen[i], all[i].Position)
		}
	}
}

// TestPostgresGapFree appends from 16 goroutines through two instances on
// one schema while a reader polls after its cursor: at the end it has seen
// exactly the table's positions, each once, in order.
func TestPostgresGapFree(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	first := startPostgres(t, autoCreate())
	second := secondInstance(t, first, autoCreate())

	const (
		publishers = 16
		perEach    = 1000
	)
	readerCtx, stopReader := context.WithCancel(ctx)
	type readerOut struct {
		seen []int64
		err  error
	}
	readerDone := make(chan readerOut, 1)
	var readerAt atomic.Int64
	go func() {
		var (
			out    readerOut
			cursor int64
		)
		for {
			evs, err := first.Read(readerCtx, eventlog.Query{After: cursor, Limit: 500})
			if err != nil {
				if readerCtx.Err() == nil {
					out.err = err
				}
				readerDone <- out
				return
			}
			for _, ev := range evs {
				out.seen = append(out.seen, ev.Position)
				cursor = ev.Position
			}
			readerAt.Store(cursor)
			if len(evs) == 0 {
				select {
				case <-readerCtx.Done():
					readerDone <- out
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for g := range publishers {
		lg := first
		if g%2 == 1 {
			lg = second
		}
		wg.Go(func() {
			for i := range perEach {
				_, perr, err := lg.Append(ctx, []eventlog.Publish{{
					Channel: fmt.Sprintf("ch%d", (g+i)%10),
					Data:    []byte("payload"),
				}})
				if err == nil {
					err = perr[0]
				}
				if err != nil {
					errs <- fmt.Errorf("publisher %d, append %d: %w", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	head, err := first.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reader to reach the head", func() bool { return readerAt.Load() == head })
	stopReader()
	out := <-readerDone
	if out.err != nil {
		t.Fatalf("reader: %v", out.err)
	}

	rows, err := first.pool.Query(ctx, "SELECT id FROM herald_events ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var table []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		table = append(table, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(table) != publishers*perEach {
		t.Fatalf("table holds %d events, want %d", len(table), publishers*perEach)
	}
	if table[len(table)-1] != head {
		t.Fatalf("Head = %d, table max = %d", head, table[len(table)-1])
	}
	if len(out.seen) != len(table) {
		t.Fatalf("reader saw %d events, the table holds %d", len(out.seen), len(table))
	}
	for i := range table {
		if out.seen[i] != table[i] {
			t.Fatalf("reader's event %d is position %d, the table's is %d (skipped or duplicated)", i, out.seen[i], table[i])
		}
	}
}

// TestPostgresSeqRemembered: each writer remembers its channels' last seqs
// (0009_seq_cache.sql), and everything that makes them stale is caught:
// the other instance's writer appending to the same channels, an edit (an
// UPDATED entry drawn by herald_edit), and the deletion of the channel that
// held the newest entry, followed by a writer whose last write it was.
// Every channel's seqs, in position order, must go 1, 2, 3, ... (a deleted
// channel goes on where it stopped).
func TestPostgresSeqRemembered(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	first := startPostgres(t, autoCreate())
	second := secondInstance(t, first, autoCreate())
	last := map[string]int64{} // what each channel's next entry must follow
	check := func(res []eventlog.Published) {
		t.Helper()
		for _, r := range res {
			ch := r.Event.Channel
			if r.Event.Seq != last[ch]+1 {
				t.Fatalf("%s position %d: seq %d, want %d", ch, r.Event.Position, r.Event.Seq, last[ch]+1)
			}
			last[ch] = r.Event.Seq
		}
	}
	batch := func(n int, chs ...string) []eventlog.Publish {
		ps := make([]eventlog.Publish, n)
		for i := range ps {
			ps[i] = eventlog.Publish{Channel: chs[i%len(chs)], Data: []byte("x")}
		}
		return ps
	}
	for round := range 20 {
		check(mustAppend(t, first, batch(5, "a", "b", "c")...))
		check(mustAppend(t, first, batch(3, "a", "b")...)) // the remembered seqs used
		check(mustAppend(t, second, batch(4, "b", "c")...))
		check(mustAppend(t, first, batch(1, "a")...))           // stale: caught, all forgotten
		check(mustAppend(t, first, batch(6, "a", "b", "c")...)) // b and c looked up again
		if round%5 == 4 {
			res := mustAppend(t, first, eventlog.Publish{Channel: "a", Data: []byte("edit me")})
			check(res)
			_, entry, err := second.Update(ctx, "a", res[0].Event.Position, []byte("edited"), 0, "")
			if err != nil {
				t.Fatal(err)
			}
			if entry.Seq != last["a"]+1 {
				t.Fatalf("UPDATED entry: seq %d, want %d", entry.Seq, last["a"]+1)
			}
			last["a"] = entry.Seq
			check(mustAppend(t, first, batch(2, "a")...))
		}
	}
	// The newest entry is first's, in channel d; delete d: the newest entry
	// is now first's previous one... or someone else's. Either way the
	// remembered seqs must not be trusted for d.
	check(mustAppend(t, first, batch(3, "a")...))
	check(mustAppend(t, first, batch(4, "d")...))
	if err := second.DeleteChannel(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	check(mustAppend(t, second, batch(1, "a")...))
	check(mustAppend(t, first, batch(2, "d", "a")...))
	check(mustAppend(t, first, batch(2, "d", "a")...))

	// From the table: every channel's seqs in position order, gap-free.
	rows, err := first.pool.Query(ctx, "SELECT channel, seq FROM herald_events ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int64{"d": 4} // d's first four entries were deleted
	for rows.Next() {
		var ch string
		var seq int64
		if err := rows.Scan(&ch, &seq); err != nil {
			t.Fatal(err)
		}
		if seq != seen[ch]+1 {
			t.Fatalf("table: %s seq %d after %d", ch, seq, seen[ch])
		}
		seen[ch] = seq
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresQuietChannelPlans: with one busy channel and a quiet one in
// the statistics, the generic plans (what prepared statements end up with)
// of a replay and of history read the quiet channel on the (channel, id)
// index, not by walking the primary key past the busy channel's entries
// (0010_channel_ndistinct.sql).
func TestPostgresQuietChannelPlans(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lg := startPostgres(t, autoCreate())
	mustAppend(t, lg, eventlog.Publish{Channel: "quiet", Data: []byte("x")})
	const busy = 20000
	if _, err := lg.pool.Exec(ctx, `SELECT count(*) FROM herald_publish(
		array_fill('busy'::text, ARRAY[$1::int]), array_fill(''::text, ARRAY[$1::int]), array_fill('\x00'::bytea, ARRAY[$1::int]),
		array_fill(''::text, ARRAY[$1::int]), array_fill(''::text, ARRAY[$1::int]), array_fill(NULL::bytea, ARRAY[$1::int]),
		array_fill(0::smallint, ARRAY[$1::int]), array_fill(NULL::text, ARRAY[$1::int]), NULL, 0, true)`, busy); err != nil {
		t.Fatal(err)
	}
	if _, err := lg.pool.Exec(ctx, "ANALYZE herald_events"); err != nil {
		t.Fatal(err)
	}
	conn, err := lg.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(context.Background(), "RESET plan_cache_mode") }()
	for _, c := range []struct {
		what string
		sql  string
		args []any
	}{
		{"replay", "", nil},
		{"history", "", nil},
		{"history backward", "", nil},
	} {
		switch c.what {
		case "replay":
			c.sql, c.args = eventlog.ReadSQL(eventlog.Query{Channels: []string{"quiet"}, After: 0, Limit: 100})
		case "history":
			c.sql, c.args = eventlog.HistorySQL(eventlog.HistoryQuery{Channel: "quiet", Limit: 100})
		default:
			c.sql, c.args = eventlog.HistorySQL(eventlog.HistoryQuery{Channel: "quiet", Limit: 100, Backward: true})
		}
		// PREPARE and EXPLAIN EXECUTE, as psql would: EXPLAIN of a query
		// with bound parameters plans it for their values (a custom plan),
		// which is not what a prepared statement ends up running.
		if _, err := conn.Exec(ctx, "DEALLOCATE ALL"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "PREPARE q AS "+c.sql); err != nil {
			t.Fatalf("%s: prepare: %v", c.what, err)
		}
		lits := make([]string, len(c.args))
		for i, a := range c.args {
			switch v := a.(type) {
			case int64:
				lits[i] = fmt.Sprint(v)
			case *int:
				lits[i] = "NULL"
				if v != nil {
					lits[i] = fmt.Sprint(*v)
				}
			case string:
				lits[i] = "'" + v + "'"
			case []string:
				lits[i] = "ARRAY['" + strings.Join(v, "','") + "']::text[]"
			default:
				t.Fatalf("%s: argument %d of type %T", c.what, i, a)
			}
		}
		rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q("+strings.Join(lits, ", ")+")", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		text := strings.Join(plan, "\n")
		if !strings.Contains(text, "herald_events_channel_id") || strings.Contains(text, "Rows Removed by Filter: 2") {
			t.Errorf("%s of the quiet channel does not read it on (channel, id):\n%s", c.what, text)
		}
	}
}
