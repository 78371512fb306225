package herald_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/heraldrt/herald"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// countHandler counts log records.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h *countHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h *countHandler) WithGroup(string) slog.Handler             { return h }

func newClient(t *testing.T, url string, opts ...herald.Option) *herald.Client {
	t.Helper()
	opts = append([]herald.Option{herald.WithBackoff(20*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := herald.NewClient(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// collect reads n events from sub, failing on any error but truncation.
func collect(t *testing.T, sub *herald.Subscription, n int) []*heraldv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out []*heraldv1.Event
	for len(out) < n {
		ev, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, ev)
	}
	return out
}

// TestPublishRetriesWhileUnavailable: while the server cannot reach its
// database, Publish retries (with one idempotency key) and succeeds once
// the database is back; the event is stored once.
func TestPublishRetriesWhileUnavailable(t *testing.T) {
	t.Parallel()
	proxy := pgtest.NewProxy(t)
	_, schema := pgtest.Schema(t)
	in := start(t, server.Config{
		DatabaseURL: proxy.URL(t, pgtest.SchemaURL(t, schema)),
		Postgres:    eventlog.PostgresOptions{NotifyChannel: schema},
	})
	logs := &countHandler{}
	c := newClient(t, in.url, herald.WithMaxAttempts(100), herald.WithLogger(slog.New(logs)))
	proxy.Cut()
	done := make(chan error, 1)
	var ack *heraldv1.PublishResponse
	go func() {
		var err error
		ack, err = c.Publish(t.Context(), herald.Message{Channel: "outage", Data: []byte("once")})
		done <- err
	}()
	waitFor(t, "two retries while the database is away", func() bool { return logs.n.Load() >= 2 })
	proxy.Restore()
	if err := <-done; err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if ack.Event.Position == 0 || ack.Event.IdempotencyKey == "" {
		t.Fatalf("ack = %v, want a position and a generated key", ack)
	}
	evs, err := in.srv.Log().Read(t.Context(), eventlog.Query{Channels: []string{"outage"}})
	if err != nil || len(evs) != 1 {
		t.Fatalf("the channel holds %d events (%v), want 1", len(evs), err)
	}
}

// TestSubscribeAcrossInstanceKill: a subscription and a publisher on two
// instances of one database; the instance the subscription reads from is
// killed mid-stream. The subscription resumes on the other from its last
// event, the publisher's retries fail over too, and every event arrives
// once, in order.
func TestSubscribeAcrossInstanceKill(t *testing.T) {
	t.Parallel()
	nodes, _ := pgServers(t, 2)
	a, b := nodes[0], nodes[1]
	c := newClient(t, a.url, herald.WithServers(b.url))
	var reconnects atomic.Int64
	sub, err := c.Subscribe(t.Context(), []string{"stream"}, herald.After(0),
		herald.OnReconnect(func(error, time.Duration, *int64) { reconnects.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	const n = 300
	pub := newClient(t, b.url, herald.WithServers(a.url))
	var wg sync.WaitGroup
	var positions sync.Map // data -> position acknowledged
	wg.Go(func() {
		for i := range n {
			ack, err := pub.Publish(t.Context(), herald.Message{Channel: "stream", Data: fmt.Append(nil, i)})
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			positions.Store(i, ack.Event.Position)
		}
	})
	got := collect(t, sub, 100)
	a.kill()
	got = append(got, collect(t, sub, n-100)...)
	wg.Wait()
	for i, ev := range got {
		want, _ := positions.Load(i)
		if string(ev.Data) != fmt.Sprint(i) || ev.Position != want {
			t.Fatalf("event %d = %q at %d, want %q at %v", i, ev.Data, ev.Position, fmt.Sprint(i), want)
		}
	}
	if reconnects.Load() == 0 {
		t.Fatal("the subscription never reconnected")
	}
	if cur := sub.Cursor(); cur == nil || *cur != got[n-1].Position {
		t.Fatalf("Cursor = %v, want %d", cur, got[n-1].Position)
	}
}

// TestSubscribeTruncated: a cursor older than what retention kept gives a
// *TruncatedError, then the retained events.
func TestSubscribeTruncated(t *testing.T) {
	t.Parallel()
	in := start(t, server.Config{RetentionInterval: 20 * time.Millisecond})
	c := newClient(t, in.url)
	ctx := t.Context()
	if _, err := c.Channels().CreateChannel(ctx, connect.NewRequest(&heraldv1.CreateChannelRequest{
		Name: "short", Settings: &heraldv1.ChannelSettings{MaxEvents: new(int64(2))},
	})); err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := range 5 {
		ack, err := c.Publish(ctx, herald.Message{Channel: "short", Data: fmt.Append(nil, i)})
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Event.Position
	}
	waitFor(t, "retention", func() bool {
		page, err := c.History().ListEvents(ctx, connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "short"}))
		return err == nil && len(page.Msg.Events) == 2
	})
	sub, err := c.Subscribe(ctx, []string{"short"}, herald.After(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	_, err = sub.Next(ctx)
	var tr *herald.TruncatedError
	if !errors.As(err, &tr) || !errors.Is(err, herald.ErrHistoryTruncated) || tr.After != 0 || tr.Through != last-2 {
		t.Fatalf("first Next: %v, want truncation through %d", err, last-2)
	}
	if cur := sub.Cursor(); cur == nil || *cur != last-2 {
		t.Fatalf("Cursor after the truncation = %v, want %d", cur, last-2)
	}
	evs := collect(t, sub, 2)
	if evs[0].Position != last-1 || evs[1].Position != last {
		t.Fatalf("after the truncation: %d, %d; want %d, %d", evs[0].Position, evs[1].Position, last-1, last)
	}
}

// TestSubscribeRefused: a subscription the server refuses fails Subscribe
// with the server's code; one whose stream is refused later ends Next.
func TestSubscribeRefused(t *testing.T) {
	t.Parallel()
	in := start(t, server.Config{})
	c := newClient(t, in.url, herald.WithProtocol(herald.Connect))
	_, err := c.Subscribe(t.Context(), []string{"bad channel"})
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Subscribe to a bad channel: %v, want invalid_argument", err)
	}
	sess := c.Connect(t.Context())
	defer sess.Close()
	if _, err := sess.Subscribe(t.Context(), []string{"bad channel"}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Session.Subscribe to a bad channel: %v, want invalid_argument", err)
	}
	if _, err := sess.Publish(t.Context(), herald.Message{Channel: "c", Type: "bad type"}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Session.Publish of a bad type: %v, want invalid_argument", err)
	}
	sub, err := c.Subscribe(t.Context(), []string{"fine"})
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	if _, err := sub.Next(t.Context()); !errors.Is(err, herald.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
}

// TestSessionAcrossInstanceKill: a session with two subscriptions and
// pipelined publishes; its instance is killed mid-stream. The session
// reconnects to the other instance, resubscribes after the last events
// and resends what was not acknowledged: every publish is acknowledged
// once, stored once, and each subscription receives its channel's events
// once, in order.
func TestSessionAcrossInstanceKill(t *testing.T) {
	t.Parallel()
	nodes, _ := pgServers(t, 2)
	a, b := nodes[0], nodes[1]
	logs := &countHandler{}
	c := newClient(t, a.url, herald.WithServers(b.url), herald.WithLogger(slog.New(logs)))
	sess := c.Connect(t.Context())
	defer sess.Close()
	ctx := t.Context()
	subX, err := sess.Subscribe(ctx, []string{"x"}, herald.After(0))
	if err != nil {
		t.Fatal(err)
	}
	subY, err := sess.Subscribe(ctx, []string{"y"})
	if err != nil {
		t.Fatal(err)
	}

	const n = 200
	acks := make([]int64, n)
	var wg sync.WaitGroup
	for w := range 4 { // four publishers pipelining on the one session
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				ch := []string{"x", "y"}[i%2]
				ack, err := sess.Publish(ctx, herald.Message{Channel: ch, Data: fmt.Append(nil, i)})
				if err != nil {
					t.Errorf("publish %d: %v", i, err)
					return
				}
				acks[i] = ack.Event.Position
			}
		})
	}
	gotX := collect(t, subX, 20)
	a.kill()
	gotX = append(gotX, collect(t, subX, n/2-20)...)
	gotY := collect(t, subY, n/2)
	wg.Wait()
	for _, got := range [][]*heraldv1.Event{gotX, gotY} {
		for i := 1; i < len(got); i++ {
			if got[i].Position <= got[i-1].Position {
				t.Fatalf("%s: position %d after %d", got[i].Channel, got[i].Position, got[i-1].Position)
			}
		}
		for _, ev := range got {
			var i int
			fmt.Sscan(string(ev.Data), &i)
			if acks[i] != ev.Position {
				t.Fatalf("event %q received at %d, acknowledged at %d", ev.Data, ev.Position, acks[i])
			}
		}
	}
	if logs.n.Load() == 0 {
		t.Fatal("the session never reconnected")
	}
	evs, err := b.srv.Log().Read(ctx, eventlog.Query{})
	if err != nil || len(evs) != n {
		t.Fatalf("the log holds %d events (%v), want %d (each publish once)", len(evs), err, n)
	}
}

// TestPublishTx: PublishTx and PublishSQLTx deliver on commit only, with
// the message's format, and pass the database's refusals on.
func TestPublishTx(t *testing.T) {
	t.Parallel()
	nodes, pool := pgServers(t, 1)
	c := newClient(t, nodes[0].url)
	ctx := t.Context()
	sub, err := c.Subscribe(ctx, []string{"tx"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	errRollback := errors.New("rollback")
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := herald.PublishTx(ctx, tx, herald.Message{Channel: "tx", Data: []byte("lost")}); err != nil {
			return err
		}
		return errRollback
	}); !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, m := range []herald.Message{
			{Channel: "tx", Type: "j", Data: []byte(`{"a" : [1]}`), Format: herald.FormatJSON, IdempotencyKey: "k1"},
			{Channel: "tx", Type: "t", Data: []byte("héllo"), Format: herald.FormatText},
			{Channel: "tx", Type: "b", Data: []byte{0, 1, 0xff}},
		} {
			if err := herald.PublishTx(ctx, tx, m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var current string
	if err := tx.QueryRowContext(ctx, "SELECT current_schema()").Scan(&current); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "SET LOCAL search_path = public"); err != nil {
		t.Fatal(err)
	}
	if err := herald.PublishSQLTx(ctx, tx, herald.Message{Channel: "tx", Data: []byte("sql")}, herald.InSchema(current)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	evs := collect(t, sub, 4)
	want := []struct {
		typ, data string
		format    herald.Format
	}{
		{"j", `{"a" : [1]}`, herald.FormatJSON},
		{"t", "héllo", herald.FormatText},
		{"b", "\x00\x01\xff", heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED},
		{"", "sql", heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED},
	}
	for i, w := range want {
		if evs[i].Type != w.typ || string(evs[i].Data) != w.data || evs[i].Format != w.format {
			t.Errorf("event %d = %v, want %+v", i, evs[i], w)
		}
	}

	// Refusals come from the database, in the transaction.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return herald.PublishTx(ctx, tx, herald.Message{Channel: "bad channel"})
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22023" {
		t.Fatalf("bad channel: %v, want SQLSTATE 22023", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return herald.PublishTx(ctx, tx, herald.Message{Channel: "tx", Data: []byte{0xff}, Format: herald.FormatText})
	})
	if err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("invalid UTF-8 as text: %v", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return herald.PublishTx(ctx, tx, herald.Message{Channel: "tx", Data: []byte("{"), Format: herald.FormatJSON})
	})
	if !errors.As(err, &pgErr) || pgErr.Code != "22P02" { // invalid_text_representation
		t.Fatalf("invalid JSON: %v, want SQLSTATE 22P02", err)
	}
}
