package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a memory log and a hub until the test ends.
func start(t testing.TB, opts fanout.Options) (eventlog.Log, *fanout.Hub) {
	t.Helper()
	log := eventlog.NewMemory(eventlog.Options{AutoCreate: true})
	hub := fanout.NewHub(log, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = log.Run(ctx) })
	wg.Go(func() { _ = hub.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return log, hub
}

func publish(t testing.TB, log eventlog.Log, ch string, n int) []int64 {
	t.Helper()
	ps := make([]eventlog.Publish, n)
	for i := range ps {
		ps[i] = eventlog.Publish{Channel: ch, Data: fmt.Appendf(nil, "%s-%d", ch, i)}
	}
	res, errs, err := log.Append(context.Background(), ps)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	pos := make([]int64, n)
	for i := range res {
		if errs != nil && errs[i] != nil {
			t.Fatalf("append %d: %v", i, errs[i])
		}
		pos[i] = res[i].Event.Position
	}
	return pos
}

// collect reads n events from sub, failing on anything else.
func collect(t testing.TB, sub *fanout.Subscription, n int) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []int64
	for len(got) < n {
		msg, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(got), n, err)
		}
		if msg.Entry != nil {
			got = append(got, msg.Entry.Position())
		}
	}
	return got
}

func ptr(v int64) *int64 { return &v }

func equal(t testing.TB, got, want []int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d positions %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("position %d: got %d, want %d (got %v)", i, got[i], want[i], got)
		}
	}
}

func TestReplayThenLive(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{ReplayPage: 3})
	want := publish(t, log, "a", 10)
	publish(t, log, "b", 5) // other channel: never delivered

	sub, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if st := sub.Start(); st.Cursor != 0 || st.Truncated {
		t.Fatalf("start = %+v", st)
	}
	equal(t, collect(t, sub, 10), want)
	want = publish(t, log, "a", 5)
	equal(t, collect(t, sub, 5), want)
}

func TestResumeFromCursor(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	pos := publish(t, log, "a", 10)
	sub, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(pos[6]))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	equal(t, collect(t, sub, 3), pos[7:])
}

func TestLiveOnly(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	publish(t, log, "a", 3)
	waitFor(t, func() bool { return hub.Head() == 3 })
	sub, err := hub.Subscribe(t.Context(), []string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if st := sub.Start(); st.Cursor != 3 {
		t.Fatalf("live start cursor = %d, want the head 3", st.Cursor)
	}
	want := publish(t, log, "a", 2)
	equal(t, collect(t, sub, 2), want)
}

func TestMultipleChannelsInPositionOrder(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	var want []int64
	for i := range 6 {
		want = append(want, publish(t, log, []string{"x", "y"}[i%2], 2)...)
		publish(t, log, "z", 1)
	}
	sub, err := hub.Subscribe(t.Context(), []string{"y", "x", "x"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	equal(t, collect(t, sub, len(want)), want)
}

func TestSlowConsumerEndsWithLastPosition(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{QueueSize: 8})
	sub, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	first := publish(t, log, "a", 1)
	equal(t, collect(t, sub, 1), first)

	// Not reading while 20 more arrive overflows the queue of 8.
	rest := publish(t, log, "a", 20)
	waitFor(t, func() bool { return hub.Subscribers() == 0 })
	_, err = sub.Next(t.Context())
	var end *fanout.EndError
	if !errors.As(err, &end) || end.Reason != fanout.ReasonSlowConsumer || !errors.Is(err, fanout.ErrSlowConsumer) {
		t.Fatalf("Next = %v, want a slow-consumer EndError", err)
	}
	if end.LastPosition != first[0] {
		t.Fatalf("LastPosition = %d, want %d", end.LastPosition, first[0])
	}

	// Resuming from LastPosition loses nothing.
	again, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(end.LastPosition))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	equal(t, collect(t, again, 20), rest)
}

func TestShutdownEndsSubscriptions(t *testing.T) {
	t.Parallel()
	log := eventlog.NewMemory(eventlog.Options{AutoCreate: true})
	hub := fanout.NewHub(log, fanout.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = hub.Run(ctx) }()
	pos := publish(t, log, "a", 2)
	sub, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	equal(t, collect(t, sub, 2), pos)
	cancel()
	<-done
	_, err = sub.Next(t.Context())
	var end *fanout.EndError
	if !errors.As(err, &end) || end.Reason != fanout.ReasonShutdown || end.LastPosition != pos[1] {
		t.Fatalf("Next after shutdown = %v, want shutdown at %d", err, pos[1])
	}
	if _, err := hub.Subscribe(t.Context(), []string{"a"}, nil); !errors.Is(err, fanout.ErrStopped) {
		t.Fatalf("Subscribe after stop = %v, want ErrStopped", err)
	}
}

func TestTruncatedHistory(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	max := int64(5)
	if _, err := log.CreateChannel(t.Context(), "a", eventlog.Settings{MaxEvents: max, MaxEventSize: 1024}); err != nil {
		t.Fatal(err)
	}
	pos := publish(t, log, "a", 20)
	if _, err := log.Trim(t.Context(), time.Now()); err != nil {
		t.Fatal(err)
	}
	sub, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	st := sub.Start()
	if !st.Truncated || st.TruncatedThrough != pos[14] {
		t.Fatalf("start = %+v, want truncated through %d", st, pos[14])
	}
	equal(t, collect(t, sub, 5), pos[15:])

	// A cursor past the removed part is not truncated.
	ok, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(pos[16]))
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	if ok.Start().Truncated {
		t.Fatalf("cursor %d after the truncated part reported truncated", pos[16])
	}
}

func TestCloseEndsNext(t *testing.T) {
	t.Parallel()
	_, hub := start(t, fanout.Options{})
	sub, err := hub.Subscribe(t.Context(), []string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := sub.Next(context.Background()); errc <- err }()
	sub.Close()
	if err := <-errc; !errors.Is(err, fanout.ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	if n := hub.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers registered after Close", n)
	}
}

// TestExactlyOnceUnderConcurrentPublishing subscribes at random moments
// while publishers append, with a tiny queue and replay page so that
// replay overflows and live subscribers get ended as slow: resuming from
// LastPosition after every end, each subscriber still sees every event of
// its channels exactly once, in position order.
func TestExactlyOnceUnderConcurrentPublishing(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{QueueSize: 4, ReplayPage: 7})
	channels := []string{"c0", "c1", "c2", "c3"}
	const publishers, perPublisher = 8, 150

	var pubWG sync.WaitGroup
	for p := range publishers {
		pubWG.Go(func() {
			for i := range perPublisher {
				_, errs, err := log.Append(context.Background(), []eventlog.Publish{{Channel: channels[(p+i)%len(channels)]}})
				if err == nil {
					err = errors.Join(errs...)
				}
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}

	type result struct {
		channels []string
		got      []int64
		resumes  int
	}
	results := make([]*result, 12)
	var subWG sync.WaitGroup
	for i := range results {
		r := &result{channels: []string{channels[i%4], channels[(i+1)%4]}}
		results[i] = r
		subWG.Go(func() {
			time.Sleep(time.Duration(i) * time.Millisecond) // spread the subscribe moments
			cursor := int64(0)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for {
				sub, err := hub.Subscribe(ctx, r.channels, &cursor)
				if err != nil {
					t.Errorf("subscribe: %v", err)
					return
				}
				for {
					msg, err := sub.Next(ctx)
					if err != nil {
						sub.Close()
						var end *fanout.EndError
						if errors.As(err, &end) && end.Reason == fanout.ReasonSlowConsumer {
							cursor = end.LastPosition
							r.resumes++
							break
						}
						if ctx.Err() == nil {
							t.Errorf("next: %v", err)
						}
						return
					}
					if msg.Entry != nil {
						r.got = append(r.got, msg.Entry.Position())
						cursor = msg.Entry.Position()
						if len(r.got) == publishers*perPublisher/2 {
							sub.Close()
							return
						}
					}
				}
			}
		})
	}
	pubWG.Wait()
	subWG.Wait()

	all, err := log.Read(t.Context(), eventlog.Query{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	resumes := 0
	for _, r := range results {
		var want []int64
		for _, ev := range all {
			if ev.Channel == r.channels[0] || ev.Channel == r.channels[1] {
				want = append(want, ev.Position)
			}
		}
		equal(t, r.got, want)
		resumes += r.resumes
	}
	t.Logf("%d subscribers, %d events each, %d slow-consumer resumes", len(results), publishers*perPublisher/2, resumes)
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
