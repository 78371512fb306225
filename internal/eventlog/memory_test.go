package eventlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/eventlog/eventlogtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, opts eventlog.Options) eventlog.Log {
		return eventlogtest.Start(t, eventlog.NewMemory(opts))
	})
}

// FuzzMemory runs a random sequence of appends, edits, trims and channel
// deletions and checks after each step that the log's views agree: Read,
// Read by channel, History both ways, Get, Head and TruncatedThrough.
func FuzzMemory(f *testing.F) {
	for _, ops := range fuzzSeeds() {
		f.Add(ops)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		runOps(t, []eventlog.Log{eventlog.NewMemory(eventlog.Options{AutoCreate: true})}, ops)
	})
}

func fuzzSeeds() [][]byte {
	return [][]byte{
		{0, 0, 1, 1, 1, 2, 4, 0, 1, 5, 0, 2, 6, 0, 200, 7, 1, 0, 3, 2, 9},
		{3, 0, 255, 3, 1, 17, 0, 2, 5, 4, 2, 1, 6, 0, 0, 0, 0, 33, 0, 0, 33, 6, 1, 250},
		bytes.Repeat([]byte{0, 0, 7, 3, 0, 6, 4, 0, 3, 6, 0, 0}, 8),
		// Publish with key k1, update it twice, delete it, retry the key.
		{2, 2, 1, 4, 2, 2, 4, 2, 3, 5, 2, 0, 2, 2, 1, 2, 2, 17},
	}
}

// runOps runs the operations ops encodes on each of logs (fresh, with
// AutoCreate), in step, and checks after each step that each log's views
// agree with one another and keep their promises, and that the logs agree
// with each other: the same positions, results, entries and error texts.
func runOps(t *testing.T, logs []eventlog.Log, ops []byte) {
	if len(ops) > 300 {
		ops = ops[:300]
	}
	ctx := context.Background()
	channels := []string{"a", "b", "c"}
	// PostgreSQL keeps microseconds: no entry is stored as created before
	// start.
	start := time.Now().Truncate(time.Microsecond)
	for _, l := range logs {
		// a keeps 4 entries, b two hours; c has no limits.
		if _, err := l.CreateChannel(ctx, "a", eventlog.Settings{MaxEvents: 4, MaxEventSize: 12}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.CreateChannel(ctx, "b", eventlog.Settings{MaxAge: 2 * time.Hour, MaxEventSize: 12}); err != nil {
			t.Fatal(err)
		}
	}
	lastHead := make([]int64, len(logs))
	for len(ops) >= 3 {
		op, ch, arg := ops[0]%8, channels[int(ops[1])%len(channels)], ops[2]
		ops = ops[3:]
		var results []string // per log: what the step returned, to compare
		for li, l := range logs {
			results = append(results, runOp(t, l, op, ch, arg, start))
			lastHead[li] = checkViews(t, l, channels, lastHead[li])
		}
		for li := 1; li < len(logs); li++ {
			if results[li] != results[0] {
				t.Fatalf("op %d on %q (arg %d): log %d returned\n%s\nlog 0 returned\n%s", op, ch, arg, li, results[li], results[0])
			}
			sameContent(t, fmt.Sprintf("log %d after op %d on %q", li, op, ch), readAll(t, logs[li], nil), readAll(t, logs[0], nil))
		}
	}
}

// runOp runs one operation on l, checks what it can of the result alone,
// and describes the result (without times) for comparison with other logs.
func runOp(t *testing.T, l eventlog.Log, op byte, ch string, arg byte, start time.Time) string {
	ctx := context.Background()
	before := readAll(t, l, nil)
	head := mustHead(t, l)
	var out strings.Builder
	switch op {
	case 0, 1, 2, 3:
		n := 1
		if op == 3 {
			n = 1 + int(arg)%3
		}
		ps := make([]eventlog.Publish, n)
		for i := range ps {
			ps[i] = eventlog.Publish{Channel: ch, Data: bytes.Repeat([]byte{'x'}, (int(arg)+i)%16)}
			if arg&0x40 != 0 {
				ps[i].Type = "t"
			}
			if k := (int(arg) + i) % 5; k > 0 {
				ps[i].IdempotencyKey = fmt.Sprint("k", k)
			}
		}
		res, errs, err := l.Append(ctx, ps)
		if err != nil {
			t.Fatal(err)
		}
		next := head + 1
		for i, r := range res {
			switch {
			case errs[i] != nil:
				if !errors.Is(errs[i], eventlog.ErrTooLarge) && !errors.Is(errs[i], eventlog.ErrIdempotencyConflict) {
					t.Fatalf("append: %v", errs[i])
				}
				fmt.Fprintf(&out, "error %v\n", errs[i])
			case r.Duplicate:
				got, err := l.Get(ctx, ch, r.Event.Position)
				if err != nil || got.IdempotencyKey != ps[i].IdempotencyKey || got.Kind != eventlog.KindPublished {
					t.Fatalf("duplicate %+v of key %q: stored %+v, %v", r.Event, ps[i].IdempotencyKey, got, err)
				}
				fmt.Fprintf(&out, "duplicate of %d\n", r.Event.Position)
			default:
				if r.Event.Position != next {
					t.Fatalf("new event at %d, want %d", r.Event.Position, next)
				}
				next++
				fmt.Fprintf(&out, "new %d\n", r.Event.Position)
			}
		}
	case 4, 5:
		pos := 1 + int64(arg)%(head+1)
		var (
			entry eventlog.Event
			err   error
		)
		if op == 4 {
			_, entry, err = l.Update(ctx, ch, pos, bytes.Repeat([]byte{'u'}, int(arg)%16), 0, "")
		} else {
			entry, err = l.Delete(ctx, ch, pos, "")
		}
		if err != nil && !errors.Is(err, eventlog.ErrEventNotFound) &&
			!errors.Is(err, eventlog.ErrNotEditable) && !errors.Is(err, eventlog.ErrTooLarge) {
			t.Fatalf("edit %q/%d: %v", ch, pos, err)
		}
		fmt.Fprintf(&out, "entry %d, %v", entry.Position, err)
	case 6:
		now := start.Add(time.Duration(arg) * time.Minute)
		n, err := l.Trim(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if after := readAll(t, l, nil); int64(len(before)-len(after)) != n {
			t.Fatalf("Trim reported %d, removed %d", n, len(before)-len(after))
		}
		fmt.Fprintf(&out, "trimmed %d", n)
	case 7:
		err := l.DeleteChannel(ctx, ch)
		if err != nil && !errors.Is(err, eventlog.ErrChannelNotFound) {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "%v", err)
	}
	return out.String()
}

func readAll(t *testing.T, l eventlog.Log, channels []string) []eventlog.Event {
	t.Helper()
	evs, err := l.Read(context.Background(), eventlog.Query{Channels: channels, Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func mustHead(t *testing.T, l eventlog.Log) int64 {
	t.Helper()
	h, err := l.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// checkViews checks that every view of l agrees and returns Head.
func checkViews(t *testing.T, l eventlog.Log, channels []string, lastHead int64) int64 {
	t.Helper()
	ctx := context.Background()
	head := mustHead(t, l)
	if head < lastHead {
		t.Fatalf("Head went back from %d to %d", lastHead, head)
	}
	full := readAll(t, l, nil)
	for i, ev := range full {
		if ev.Position > head || (i > 0 && ev.Position <= full[i-1].Position) {
			t.Fatalf("Read: position %d at index %d (head %d)", ev.Position, i, head)
		}
		if ev.Kind != eventlog.KindPublished && ev.Target >= ev.Position {
			t.Fatalf("entry %d targets %d", ev.Position, ev.Target)
		}
		if ev.Deleted && len(ev.Data) != 0 {
			t.Fatalf("deleted event %d has data", ev.Position)
		}
	}
	// Deleting an event erased the data of its Updated entries, and only
	// a deletion marks an Updated entry Deleted.
	deleted := map[int64]bool{}
	for _, ev := range full {
		if ev.Kind == eventlog.KindDeleted {
			deleted[ev.Target] = true
		}
	}
	for _, ev := range full {
		if ev.Kind == eventlog.KindUpdated && (deleted[ev.Target] != ev.Deleted || ev.Deleted && len(ev.Data) != 0) {
			t.Fatalf("Updated entry %d of event %d (deleted: %v): Deleted %v, data %q", ev.Position, ev.Target, deleted[ev.Target], ev.Deleted, ev.Data)
		}
	}
	// Paging Read two at a time gives the same entries.
	var paged []eventlog.Event
	for after := int64(0); ; {
		evs, err := l.Read(ctx, eventlog.Query{After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		paged = append(paged, evs...)
		after = evs[len(evs)-1].Position
	}
	sameEvents(t, "paged Read", paged, full)

	for _, ch := range channels {
		var want []eventlog.Event
		keys := map[string]bool{}
		for _, ev := range full {
			if ev.Channel != ch {
				continue
			}
			want = append(want, ev)
			if k := ev.IdempotencyKey; k != "" {
				if keys[k] {
					t.Fatalf("channel %s holds key %q twice", ch, k)
				}
				keys[k] = true
			}
			got, err := l.Get(ctx, ch, ev.Position)
			if err != nil {
				t.Fatal(err)
			}
			sameEvents(t, "Get", []eventlog.Event{got}, []eventlog.Event{ev})
		}
		sameEvents(t, "Read of "+ch, readAll(t, l, []string{ch}), want)
		c, err := l.GetChannel(ctx, ch)
		switch {
		case errors.Is(err, eventlog.ErrChannelNotFound):
			if len(want) != 0 {
				t.Fatalf("channel %s is gone but has %d entries", ch, len(want))
			}
		case err != nil:
			t.Fatal(err)
		case len(want) > 0 && want[0].Position <= c.TruncatedThrough:
			t.Fatalf("channel %s: entry %d at or below TruncatedThrough %d", ch, want[0].Position, c.TruncatedThrough)
		}
		for _, backward := range []bool{false, true} {
			var got []eventlog.Event
			q := eventlog.HistoryQuery{Channel: ch, Limit: 3, Backward: backward}
			for {
				page, err := l.History(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, page.Events...)
				if !page.HasMore {
					break
				}
				q.Cursor = page.Events[len(page.Events)-1].Position
			}
			if backward {
				slices.Reverse(got)
			}
			sameEvents(t, fmt.Sprintf("History of %s (backward %v)", ch, backward), got, want)
		}
	}
	return head
}

// sameContent is sameEvents for entries of two logs, whose clocks differ:
// everything but the times must be equal.
func sameContent(t *testing.T, what string, got, want []eventlog.Event) {
	t.Helper()
	untimed := func(evs []eventlog.Event) []eventlog.Event {
		out := slices.Clone(evs)
		for i := range out {
			out[i].CreatedAt, out[i].UpdatedAt = time.Time{}, time.Time{}
		}
		return out
	}
	sameEvents(t, what, untimed(got), untimed(want))
	for i := range got {
		if got[i].UpdatedAt.IsZero() != want[i].UpdatedAt.IsZero() {
			t.Fatalf("%s [%d]: UpdatedAt %v, want %v", what, i, got[i].UpdatedAt, want[i].UpdatedAt)
		}
	}
}

func sameEvents(t *testing.T, what string, got, want []eventlog.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Position != w.Position || g.Channel != w.Channel || g.Kind != w.Kind || g.Target != w.Target ||
			g.Deleted != w.Deleted || g.IdempotencyKey != w.IdempotencyKey || !bytes.Equal(g.Data, w.Data) ||
			!g.CreatedAt.Equal(w.CreatedAt) || !g.UpdatedAt.Equal(w.UpdatedAt) {
			t.Fatalf("%s [%d]: %+v, want %+v", what, i, g, w)
		}
	}
}
