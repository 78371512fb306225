package fanout_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/wire"
)

// entries reads n events from sub and returns their entries.
func entries(t *testing.T, sub *fanout.Subscription, n int) []*wire.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []*wire.Entry
	for len(got) < n {
		msg, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(got), n, err)
		}
		if msg.Entry != nil {
			got = append(got, msg.Entry)
		}
	}
	return got
}

// A live subscriber and one that replays the same positions later get the
// same entries: one conversion and one encoding per event, however many
// subscribers and whether they are live or replaying.
func TestReplaySharesLiveEntries(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{ReplayPage: 4})
	live, err := hub.Subscribe(t.Context(), []string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	publish(t, log, "a", 10)
	got := entries(t, live, 10)

	replay, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	again := entries(t, replay, 10)
	for i := range got {
		if got[i] != again[i] {
			t.Fatalf("position %d: the replay read a new entry instead of the live one", got[i].Position())
		}
	}
	if string(got[3].JSON()) != string(again[3].JSON()) {
		t.Fatal("shared entries encode differently")
	}
}

// An edit after the live delivery makes the replay read the new version,
// not the window's stale entry.
func TestReplayAfterEditReadsNewVersion(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	live, err := hub.Subscribe(t.Context(), []string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	pos := publish(t, log, "a", 1)[0]
	first := entries(t, live, 1)[0]
	if _, _, err := log.Update(t.Context(), "a", pos, []byte("edited"), 0, ""); err != nil {
		t.Fatal(err)
	}
	entries(t, live, 1) // the UPDATED entry

	replay, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	e := entries(t, replay, 1)[0]
	if e == first || string(e.Event().Data) != "edited" || !strings.Contains(string(e.Proto().GetData()), "edited") {
		t.Fatalf("replay of an edited event got %q (shared with the live entry: %v)", e.Event().Data, e == first)
	}
}

// A delete after the live deliveries erases every version from what a
// replay reads: neither the event nor its UPDATED entry comes back with
// data from the window's entries of them.
func TestReplayAfterDeleteErasesEveryVersion(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	live, err := hub.Subscribe(t.Context(), []string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, _, err := log.Append(t.Context(), []eventlog.Publish{{Channel: "a", Data: []byte("original secret")}}); err != nil {
		t.Fatal(err)
	}
	pos := entries(t, live, 1)[0].Position()
	if _, _, err := log.Update(t.Context(), "a", pos, []byte("edited secret"), 0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Delete(t.Context(), "a", pos, ""); err != nil {
		t.Fatal(err)
	}
	entries(t, live, 2) // the UPDATED and DELETED entries, which the window now holds

	replay, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	for _, e := range entries(t, replay, 3) {
		for _, form := range []string{string(e.Event().Data), string(e.Proto().GetData()), string(e.JSON())} {
			if strings.Contains(form, "secret") {
				t.Fatalf("replayed entry %d (kind %v) still carries deleted data: %q", e.Position(), e.Event().Kind, form)
			}
		}
	}
}

// A live queue is bounded in bytes too: large events end a stalled
// subscriber long before QueueSize entries.
func TestQueueBoundedInBytes(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{QueueSize: 1000, QueueBytes: 64 << 10})
	sub, err := hub.Subscribe(t.Context(), []string{"big"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for range 20 {
		if _, _, err := log.Append(t.Context(), []eventlog.Publish{{Channel: "big", Data: make([]byte, 8<<10)}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	n := 0
	for {
		_, err := sub.Next(ctx)
		if err != nil {
			if !errors.Is(err, fanout.ErrSlowConsumer) {
				t.Fatalf("after %d events: %v, want slow consumer", n, err)
			}
			break
		}
		n++
	}
	if n >= 20 {
		t.Fatalf("all %d events were queued: the byte bound did not apply", n)
	}
}

// Stop ends a subscription with the owner's cause and the position to
// resume from.
func TestStop(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	sub, err := hub.Subscribe(t.Context(), []string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pos := publish(t, log, "a", 1)[0]
	entries(t, sub, 1)
	cause := errors.New("token expired")
	sub.Stop(cause)
	_, err = sub.Next(t.Context())
	var end *fanout.EndError
	if !errors.As(err, &end) || end.Reason != fanout.ReasonStopped || end.LastPosition != pos || !errors.Is(err, cause) {
		t.Fatalf("after Stop: %v, want a stopped end at %d wrapping the cause", err, pos)
	}
}

// sourceSpy is a log whose subscription reads are counted (the hub's own
// reads name no channel), and whose wake-ups can be held back.
type sourceSpy struct {
	eventlog.Log
	reads   atomic.Int64
	noWakes atomic.Bool
}

func (s *sourceSpy) Read(ctx context.Context, q eventlog.Query) ([]eventlog.Event, error) {
	if len(q.Channels) > 0 {
		s.reads.Add(1)
	}
	return s.Log.Read(ctx, q)
}

func (s *sourceSpy) Watch(ctx context.Context, wake func()) error {
	return s.Log.Watch(ctx, func() {
		if !s.noWakes.Load() {
			wake()
		}
	})
}

// startSpied is start with the hub reading through a sourceSpy.
func startSpied(t *testing.T, opts fanout.Options) (*sourceSpy, *fanout.Hub) {
	t.Helper()
	spy := &sourceSpy{Log: eventlog.NewMemory(eventlog.Options{AutoCreate: true})}
	hub := fanout.NewHub(spy, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = spy.Log.Run(ctx) })
	wg.Go(func() { _ = hub.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return spy, hub
}

// A resume within the window is served from it, without reading the log,
// with the entries live delivery used; one from before the window reads
// the log. Both get every entry of their channels once, in order.
func TestReplayFromWindow(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 4} { // 0: the default window
		spy, hub := startSpied(t, fanout.Options{WindowSize: size, ReplayPage: 3})
		live, err := hub.Subscribe(t.Context(), []string{"a", "b"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want []int64
		for i := range 10 {
			ch := "a"
			if i%3 == 0 {
				ch = "b"
			}
			if p := publish(t, spy, ch, 1)[0]; ch == "a" && p > 3 {
				want = append(want, p)
			}
		}
		got := entries(t, live, 10)
		live.Close()

		before := spy.reads.Load()
		replay, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(3))
		if err != nil {
			t.Fatal(err)
		}
		var pos []int64
		for _, e := range entries(t, replay, len(want)) {
			pos = append(pos, e.Position())
			if size == 0 && e != got[e.Position()-1] {
				t.Errorf("window %d: position %d is not the live entry", size, e.Position())
			}
		}
		replay.Close()
		equal(t, pos, want)
		reads := spy.reads.Load() - before
		if size == 0 && reads != 0 {
			t.Errorf("a resume within the window read the log %d times", reads)
		}
		if size == 4 && reads == 0 {
			t.Error("a resume from before the window did not read the log")
		}
	}
}

// An edit committed but not yet dispatched by the hub changes an entry the
// window holds: the resume must not serve the window's stale copy. The
// hub is not woken, so it never catches up: the resume reads the log.
func TestReplayFromWindowWaitsForTheHub(t *testing.T) {
	t.Parallel()
	spy, hub := startSpied(t, fanout.Options{PollInterval: time.Hour})
	spy.noWakes.Store(true) // the hub reads the log only when CatchUp wakes it
	<-hub.Ready()           // its head is 0: it dispatches the 5 entries
	pos := publish(t, spy, "a", 5)
	if err := hub.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := spy.Update(t.Context(), "a", pos[2], []byte("edited"), 0, ""); err != nil {
		t.Fatal(err)
	}
	replay, err := hub.Subscribe(t.Context(), []string{"a"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	got := entries(t, replay, 5)
	if d := string(got[2].Event().Data); d != "edited" {
		t.Fatalf("position %d replayed with %q, want the edited data", got[2].Position(), d)
	}
	if spy.reads.Load() == 0 {
		t.Fatal("the resume did not read the log")
	}
}
