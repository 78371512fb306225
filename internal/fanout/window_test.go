package fanout_test

import (
	"context"
	"errors"
	"strings"
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
