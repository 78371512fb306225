package fanout_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
)

func TestFilterMatch(t *testing.T) {
	ev := func(typ string, tags map[string]string) *eventlog.Event {
		return &eventlog.Event{Type: typ, Tags: tags}
	}
	room := map[string]string{"room": "1", "lang": "en"}
	cases := []struct {
		f    *fanout.Filter
		ev   *eventlog.Event
		want bool
	}{
		{nil, ev("x", nil), true},
		{&fanout.Filter{}, ev("x", nil), true},
		{&fanout.Filter{Types: []string{"chat.message"}}, ev("chat.message", nil), true},
		{&fanout.Filter{Types: []string{"chat.message"}}, ev("chat.messages", nil), false},
		{&fanout.Filter{Types: []string{"chat.*"}}, ev("chat.typing.start", nil), true},
		{&fanout.Filter{Types: []string{"chat.*"}}, ev("chat.", nil), false},
		{&fanout.Filter{Types: []string{"chat.*"}}, ev("chat", nil), false},
		{&fanout.Filter{Types: []string{"chat.*"}}, ev("chatter", nil), false},
		{&fanout.Filter{Types: []string{"message"}}, ev("", nil), true},
		{&fanout.Filter{Types: []string{"a", "b"}}, ev("b", nil), true},
		{&fanout.Filter{Tags: map[string]string{"room": "1"}}, ev("x", room), true},
		{&fanout.Filter{Tags: map[string]string{"room": "2"}}, ev("x", room), false},
		{&fanout.Filter{Tags: map[string]string{"room": "1", "lang": "de"}}, ev("x", room), false},
		{&fanout.Filter{Tags: map[string]string{"room": ""}}, ev("x", nil), false},
		{&fanout.Filter{Types: []string{"y"}, Tags: map[string]string{"room": "1"}}, ev("x", room), false},
	}
	for i, c := range cases {
		if got := c.f.Match(c.ev); got != c.want {
			t.Errorf("case %d: %+v matches %q %v: %v, want %v", i, c.f, c.ev.Type, c.ev.Tags, got, c.want)
		}
	}
}

// TestFilteredSubscription: a filter that drops 9 events of 10, over replay
// and live: exactly the matching events arrive, once, in order; the
// subscription's position covers the dropped ones; a run of dropped events
// yields a checkpoint after CheckpointEvery of them and, when shorter,
// CheckpointAfter after its first.
func TestFilteredSubscription(t *testing.T) {
	t.Parallel()
	log, hub := start(t, fanout.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var want []int64
	pub := func(n int) {
		t.Helper()
		ps := make([]eventlog.Publish, n)
		for i := range ps {
			ps[i] = eventlog.Publish{Channel: "f", Type: "noise", Data: []byte("x")}
			if i%10 == 3 {
				ps[i] = eventlog.Publish{Channel: "f", Type: "chat.msg", Data: []byte("y"), Tags: map[string]string{"room": "1"}}
			}
		}
		res, _, err := log.Append(ctx, ps)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if i%10 == 3 {
				want = append(want, r.Event.Position)
			}
		}
	}
	pub(500) // replayed
	sub, err := hub.SubscribeFilter(ctx, []string{"f"}, ptr(0), &fanout.Filter{Types: []string{"chat.*"}, Tags: map[string]string{"room": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub(500) // live
	var got []int64
	checkpoints := 0
	for len(got) < 100 {
		msg, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		switch {
		case msg.Entry != nil:
			got = append(got, msg.Entry.Position())
		case msg.Checkpoint != 0:
			checkpoints++
		}
	}
	equal(t, got, want)
	if checkpoints != 0 {
		t.Errorf("%d checkpoints with at most 9 drops between deliveries, want 0", checkpoints)
	}

	// A long run of dropped events (after the 6 dropped since the last
	// match): a checkpoint every CheckpointEvery, then one for the rest
	// CheckpointAfter after the first of them.
	prev := got[len(got)-1]
	head := publish(t, log, "f", 2*fanout.CheckpointEvery+5) // type "" matches nothing here
	start := time.Now()
	var cps []int64
	for len(cps) == 0 || cps[len(cps)-1] != head[len(head)-1] {
		msg, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Checkpoint == 0 {
			t.Fatalf("%+v in a run of dropped events", msg)
		}
		if msg.Checkpoint-prev > fanout.CheckpointEvery {
			t.Fatalf("checkpoint at %d, %d after %d", msg.Checkpoint, msg.Checkpoint-prev, prev)
		}
		cps = append(cps, msg.Checkpoint)
		prev = msg.Checkpoint
	}
	if len(cps) != 3 || sub.LastPosition() != head[len(head)-1] {
		t.Errorf("checkpoints %v, position %d; want 3 ending at %d", cps, sub.LastPosition(), head[len(head)-1])
	}
	if d := time.Since(start); d < fanout.CheckpointAfter/2 || d > fanout.CheckpointAfter+500*time.Millisecond {
		t.Errorf("the last checkpoint came after %v, want about %v", d, fanout.CheckpointAfter)
	}
	// Nothing more: no checkpoint without dropped events.
	qctx, qcancel := context.WithTimeout(ctx, fanout.CheckpointAfter+200*time.Millisecond)
	defer qcancel()
	if msg, err := sub.Next(qctx); err == nil {
		t.Fatalf("got %+v with nothing published", msg)
	}
}
