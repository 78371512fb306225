package fanout_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/fanout"
)

// TestBroadcast: a broadcast reaches every subscription of its channel
// once (a presence broadcast only those that want presence), carries no
// position and leaves LastPosition alone; a replaying subscription gets it
// too; a prepended snapshot comes first; a full ephemeral queue ends the
// subscription as a slow consumer, resumably.
func TestBroadcast(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{EphemeralQueue: 4})
	pos := publish(t, log, "c", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitHead(t, hub, pos[2])

	live, err := hub.Subscribe(ctx, []string{"c", "d"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	watcher, err := hub.Subscribe(ctx, []string{"c"}, ptr(0)) // replays 3 entries
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	watcher.WantPresence()
	watcher.Prepend([]any{"snapshot"})

	if n := hub.Broadcast("c", "sig", false); n != 2 {
		t.Fatalf("signal reached %d subscriptions, want 2", n)
	}
	if n := hub.Broadcast("c", "join", true); n != 1 {
		t.Fatalf("presence reached %d subscriptions, want 1", n)
	}
	if n := hub.Broadcast("other", "sig", false); n != 0 {
		t.Fatalf("reached %d subscriptions of another channel", n)
	}
	next := func(s *fanout.Subscription) fanout.Message {
		t.Helper()
		m, err := s.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := next(live); m.Ephemeral != "sig" || m.Entry != nil {
		t.Fatalf("live got %+v", m)
	}
	if live.LastPosition() != pos[2] {
		t.Fatalf("a signal moved the position to %d", live.LastPosition())
	}
	for _, want := range []any{"snapshot", "sig", "join"} {
		if m := next(watcher); m.Ephemeral != want {
			t.Fatalf("watcher got %+v, want %v", m, want)
		}
	}
	equal(t, collect(t, watcher, 3), pos)

	// Nobody reads live: its ephemeral queue (4) overflows.
	for range 5 {
		hub.Broadcast("d", "sig", false)
	}
	var end *fanout.EndError
	for {
		_, err := live.Next(ctx)
		if err == nil {
			continue
		}
		if !errors.As(err, &end) || end.Reason != fanout.ReasonSlowConsumer || end.LastPosition != pos[2] {
			t.Fatalf("overflow: %v", err)
		}
		break
	}
	// EndPresence ends the watcher, resumably.
	if n := hub.EndPresence(); n != 1 {
		t.Fatalf("EndPresence ended %d", n)
	}
	if _, err := watcher.Next(ctx); !errors.As(err, &end) || end.Reason != fanout.ReasonUnavailable || end.LastPosition != pos[2] {
		t.Fatalf("after EndPresence: %v", err)
	}
}

func waitHead(t *testing.T, hub *fanout.Hub, p int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for hub.Head() < p {
		if time.Now().After(deadline) {
			t.Fatal("hub did not reach the head")
		}
		hub.Wake()
		time.Sleep(5 * time.Millisecond)
	}
}
