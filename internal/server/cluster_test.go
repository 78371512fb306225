package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// cluster starts n instances on one fresh schema.
func cluster(t *testing.T, n int) []*instance {
	t.Helper()
	dsn, schema := database(t)
	out := make([]*instance, n)
	for i := range out {
		out[i] = startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}})
	}
	return out
}

func grpcClients(in *instance) clients {
	return newClients(in.base, h2cClient(), connect.WithGRPC())
}

// allPositions reads every position of channels from the log, in order.
func allPositions(t *testing.T, log eventlog.Log, channels ...string) []int64 {
	t.Helper()
	evs, err := log.Read(t.Context(), eventlog.Query{Channels: channels, Limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Position
	}
	return out
}

func TestTwoInstancesPublishOnAReceiveLiveOnB(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 2)
	a, b := grpcClients(nodes[0]), grpcClients(nodes[1])
	s := subscribe(t, b.events, []string{"feed"}, nil)
	s.next(t) // subscribed
	var want []int64
	for i := range 20 {
		want = append(want, mustPublish(t, a.events, "feed", fmt.Sprint(i)).Position)
	}
	start := time.Now()
	equalPositions(t, positions(s.events(t, 20)), want)
	t.Logf("20 events published on A arrived live on B within %v of the last publish", time.Since(start))
}

// TestOrderingUnderLoad: 16 concurrent publishers x 1,000 events over 4
// channels, spread over two instances, while subscribers on both stream.
// Every subscriber sees each of its channels' events exactly once, in
// position order.
func TestOrderingUnderLoad(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 2)
	channels := []string{"load-0", "load-1", "load-2", "load-3"}
	const publishers, perPublisher = 16, 1000
	total := publishers * perPublisher

	// Subscribers on both instances, from cursor 0 of the fresh schema.
	// Under this burst a subscriber may be ended as a slow consumer; it
	// then resumes from StreamEnd.last_position, as clients must.
	type sub struct {
		channels []string
		done     chan resumed
	}
	var subs []*sub
	for i := range 8 {
		chs := []string{channels[i%4]}
		want := total / 4
		if i >= 4 {
			chs = channels // all four
			want = total
		}
		s := &sub{channels: chs, done: make(chan resumed, 1)}
		subs = append(subs, s)
		go func() { s.done <- collectResuming(grpcClients(nodes[i%2]).events, chs, 0, want) }()
	}

	// Each publisher pipelines its events over a Connect stream (acks
	// arrive after commit) so that the run is bounded by the server, not
	// by one round trip per event.
	var wg sync.WaitGroup
	var failed atomic.Int64
	for p := range publishers {
		c := grpcClients(nodes[p%2]).events
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			st := c.Connect(ctx)
			sendErr := make(chan error, 1)
			go func() {
				for i := range perPublisher {
					if err := st.Send(&heraldv1.ConnectRequest{Id: fmt.Sprint(i), Command: &heraldv1.ConnectRequest_Publish{
						Publish: &heraldv1.PublishRequest{Channel: channels[(p+i)%4], Data: fmt.Appendf(nil, "%d-%d", p, i)},
					}}); err != nil {
						sendErr <- err
						return
					}
				}
				sendErr <- st.CloseRequest()
			}()
			last := int64(0)
			for i := range perPublisher {
				m, err := st.Receive()
				if err != nil || m.GetPublished() == nil || m.Id != fmt.Sprint(i) || m.GetPublished().Event.Position <= last {
					failed.Add(1)
					t.Errorf("publisher %d ack %d: %v %v (previous position %d)", p, i, m, err, last)
					return
				}
				last = m.GetPublished().Event.Position
			}
			if err := <-sendErr; err != nil {
				failed.Add(1)
				t.Errorf("publisher %d: %v", p, err)
			}
			_ = st.CloseResponse()
		})
	}
	start := time.Now()
	wg.Wait()
	elapsed := time.Since(start)
	if failed.Load() > 0 {
		t.FailNow()
	}
	t.Logf("%d events from %d pipelining publishers in %v (%.0f events/s)", total, publishers, elapsed, float64(total)/elapsed.Seconds())

	log := nodes[0].srv.Log()
	resumes := 0
	for _, s := range subs {
		r := <-s.done
		if r.err != nil {
			t.Fatalf("subscriber of %v: %v", s.channels, r.err)
		}
		resumes += r.resumes
		evs := r.events
		equalPositions(t, positions(evs), allPositions(t, log, s.channels...))
		if len(s.channels) == 4 {
			// Each publisher's events appear in the order it sent them.
			next := make(map[int]int)
			for _, ev := range evs {
				var p, i int
				if _, err := fmt.Sscanf(string(ev.Data), "%d-%d", &p, &i); err != nil || i != next[p] {
					t.Fatalf("publisher %d: event %q at position %d, want its event %d next", p, ev.Data, ev.Position, next[p])
				}
				next[p]++
			}
		}
	}
	t.Logf("8 subscribers each saw their channels' events exactly once in order (%d slow-consumer resumes)", resumes)
}

type resumed struct {
	events  []*heraldv1.Event
	resumes int
	err     error
}

// collectResuming streams channels from cursor until n events arrived,
// resuming after slow-consumer ends the way a client should.
func collectResuming(c heraldv1connect.EventServiceClient, channels []string, cursor int64, n int) resumed {
	var r resumed
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for {
		st, err := c.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: channels, Cursor: &cursor}))
		if err != nil {
			r.err = err
			return r
		}
		for st.Receive() {
			if ev := st.Msg().GetEvent(); ev != nil {
				r.events = append(r.events, ev)
				cursor = ev.Position
				if len(r.events) == n {
					st.Close()
					return r
				}
			}
		}
		err = st.Err()
		st.Close()
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
			r.err = fmt.Errorf("after %d events: %w", len(r.events), err)
			return r
		}
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if se, ok := v.(*heraldv1.StreamEnd); ok && se.LastPosition != cursor {
					r.err = fmt.Errorf("StreamEnd.last_position %d, last event received %d", se.LastPosition, cursor)
					return r
				}
			}
		}
		r.resumes++
	}
}

// TestListenerLoss kills each instance's LISTEN connection while events
// keep coming: subscribers miss nothing.
func TestListenerLoss(t *testing.T) {
	t.Parallel()
	dsn, schema := database(t)
	nodes := []*instance{startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}, Hub: fanout.Options{PollInterval: time.Hour}})}
	c := grpcClients(nodes[0])
	s := subscribe(t, c.events, []string{"l"}, nil)
	s.next(t)

	admin, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	kill := func() int {
		var n int
		err := admin.QueryRow(t.Context(), `
			SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = 'herald-listener' AND query ILIKE '%' || $1 || '%'`, schema).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	var want []int64
	killed := 0
	for round := range 5 {
		waitFor(t, func() bool { return kill() > 0 })
		killed++
		for i := range 20 {
			want = append(want, mustPublish(t, c.events, "l", fmt.Sprintf("%d-%d", round, i)).Position)
		}
	}
	// The safety poll is an hour: only reconnect + catch-up can deliver.
	equalPositions(t, positions(s.events(t, len(want))), want)
	t.Logf("listener killed %d times; %d events delivered exactly once", killed, len(want))
}

// TestInstanceLoss stops one of two instances abruptly mid-stream: its
// subscriber reconnects to the other with its cursor and gets every event
// exactly once.
func TestInstanceLoss(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 2)
	a, b := grpcClients(nodes[0]), grpcClients(nodes[1])

	// Publish continuously through B.
	ctx, stopPub := context.WithCancel(t.Context())
	var published atomic.Int64
	pubDone := make(chan error, 1)
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			_, err := b.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "stream", Data: fmt.Append(nil, i)}))
			if err != nil && ctx.Err() == nil {
				pubDone <- err
				return
			}
			published.Add(1)
			time.Sleep(time.Millisecond)
		}
		pubDone <- nil
	}()

	var got []int64
	cursor := int64(0)
	consume := func(c heraldv1connect.EventServiceClient, until func() bool) error {
		sctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		st, err := c.Subscribe(sctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"stream"}, Cursor: &cursor}))
		if err != nil {
			return err
		}
		defer st.Close()
		for st.Receive() {
			if ev := st.Msg().GetEvent(); ev != nil {
				got = append(got, ev.Position)
				cursor = ev.Position
			}
			if until() {
				return nil
			}
		}
		return st.Err()
	}

	// Stream from A; after 100 events, kill A (from another goroutine, so
	// the stream breaks while being read).
	var once sync.Once
	err := consume(a.events, func() bool {
		if len(got) >= 100 {
			once.Do(func() { go nodes[0].kill() })
		}
		return false
	})
	if err == nil {
		t.Fatal("stream from the killed instance ended cleanly")
	}
	t.Logf("stream from the killed instance broke with: %v", err)
	beforeKill := len(got)
	waitFor(t, func() bool { return published.Load() > int64(beforeKill)+100 })
	stopPub()
	if err := <-pubDone; err != nil {
		t.Fatalf("publishing through B: %v", err)
	}

	// Resume on B with the cursor until every event is in.
	want := allPositions(t, nodes[1].srv.Log(), "stream")
	if err := consume(b.events, func() bool { return len(got) >= len(want) }); err != nil {
		t.Fatalf("resume on B: %v", err)
	}
	equalPositions(t, got, want)
	t.Logf("%d events before A was killed, %d in all, each once in order", beforeKill, len(got))
}

// TestDatabaseOutage cuts the connection to PostgreSQL: publishes fail fast
// with unavailable, live streams stay open, and once the database is back
// the instance reconnects (pool and listener) and subscribers get every
// acknowledged event exactly once; a publish retried with its idempotency
// key is written once.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t)
	in := startInstance(t, server.Config{DatabaseURL: proxy.URL(t, pgtest.SchemaURL(t, schema)), Postgres: eventlog.PostgresOptions{NotifyChannel: schema}, Hub: fanout.Options{PollInterval: 100 * time.Millisecond}})
	c := grpcClients(in)
	s := subscribe(t, c.events, []string{"o"}, nil)
	s.next(t)
	var acked []int64
	for range 3 {
		acked = append(acked, mustPublish(t, c.events, "o", "before").Position)
	}

	proxy.Cut()
	start := time.Now()
	req := &heraldv1.PublishRequest{Channel: "o", Data: []byte("retried"), IdempotencyKey: "k-outage"}
	_, err := c.events.Publish(t.Context(), connect.NewRequest(req))
	if codeOf(err) != connect.CodeUnavailable {
		t.Fatalf("publish during the outage: %v, want unavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publish took %v to fail; want fast", d)
	}
	t.Logf("publish failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	select {
	case err := <-s.err:
		t.Fatalf("the live stream ended during the outage: %v", err)
	case <-time.After(500 * time.Millisecond):
	}

	proxy.Restore()
	var retried *heraldv1.PublishResponse
	waitFor(t, func() bool {
		resp, err := c.events.Publish(t.Context(), connect.NewRequest(req))
		if err != nil {
			return false
		}
		retried = resp.Msg
		return true
	})
	acked = append(acked, retried.Event.Position)
	for range 3 {
		acked = append(acked, mustPublish(t, c.events, "o", "after").Position)
	}
	// Exactly what the log holds, once each, in order (the failed attempt
	// either was not written or is the event the retry returned).
	want := allPositions(t, in.srv.Log(), "o")
	equalPositions(t, positions(s.events(t, len(want))), want)
	for _, p := range acked {
		if !slices.Contains(want, p) {
			t.Fatalf("acknowledged position %d is missing from the log %v", p, want)
		}
	}
	keyed := 0
	hist, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "o"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range hist.Msg.Events {
		if ev.IdempotencyKey == "k-outage" {
			keyed++
		}
	}
	if keyed != 1 {
		t.Fatalf("the retried publish was written %d times", keyed)
	}
}
