package eventlogtest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
)

// testConcurrent: 16 publishers append 200 events each over 4 channels while
// a reader, woken only by Watch, reads after its cursor. The reader must see
// every position exactly once and in order, and each channel must keep each
// publisher's order.
func testConcurrent(t *testing.T, open Open) {
	const (
		publishers = 16
		perPub     = 200
		total      = publishers * perPub
	)
	channels := []string{"c0", "c1", "c2", "c3"}
	l := open(t, eventlog.Options{AutoCreate: true})

	type sent struct {
		pub, seq int
		ev       eventlog.Event
	}
	// Reader: only a wake-up makes it read, so a missing wake-up after the
	// last append shows as a timeout.
	wakes := watch(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
	type readResult struct {
		evs []eventlog.Event
		err error
	}
	var rr readResult
	readDone := make(chan struct{})
	defer func() { cancel(); <-readDone }()
	go func() {
		defer close(readDone)
		var seen []eventlog.Event
		var cursor int64
		for len(seen) < total {
			select {
			case <-wakes:
			case <-ctx.Done():
				rr = readResult{seen, fmt.Errorf("reader saw %d of %d events: %w", len(seen), total, ctx.Err())}
				return
			}
			for {
				evs, err := l.Read(ctx, eventlog.Query{After: cursor, Limit: 97})
				if err != nil {
					rr = readResult{seen, fmt.Errorf("Read after %d: %w", cursor, err)}
					return
				}
				if len(evs) == 0 {
					break
				}
				seen = append(seen, evs...)
				cursor = evs[len(evs)-1].Position
			}
		}
		rr = readResult{seen, nil}
	}()

	results := make([][]sent, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range perPub {
				ch := channels[(p+i)%len(channels)]
				res, errs, err := l.Append(ctx, []eventlog.Publish{{
					Channel: ch,
					Type:    "concurrent",
					Data:    fmt.Appendf(nil, "%d/%d", p, i),
				}})
				if err == nil {
					err = errs[0]
				}
				if err != nil {
					t.Errorf("publisher %d, event %d: %v", p, i, err)
					return
				}
				results[p] = append(results[p], sent{p, i, res[0].Event})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	<-readDone
	if rr.err != nil {
		t.Fatal(rr.err)
	}
	seen := rr.evs

	// Every position exactly once, in order: strictly increasing, and the
	// same set the publishers were given.
	byPos := make(map[int64]sent, total)
	for _, rs := range results {
		prev := int64(0)
		for _, s := range rs {
			if s.ev.Position <= prev {
				t.Fatalf("publisher %d: event %d at %d after %d", s.pub, s.seq, s.ev.Position, prev)
			}
			prev = s.ev.Position
			if _, dup := byPos[s.ev.Position]; dup {
				t.Fatalf("position %d handed out twice", s.ev.Position)
			}
			byPos[s.ev.Position] = s
		}
	}
	if len(seen) != total {
		t.Fatalf("reader saw %d events, want %d", len(seen), total)
	}
	for i := range seen {
		if i > 0 && seen[i].Position <= seen[i-1].Position {
			t.Fatalf("reader saw position %d after %d", seen[i].Position, seen[i-1].Position)
		}
		s, ok := byPos[seen[i].Position]
		if !ok {
			t.Fatalf("reader saw position %d, which no publisher was given", seen[i].Position)
		}
		equalEvent(t, fmt.Sprintf("read event %d", seen[i].Position), seen[i], s.ev)
	}

	// Per channel, each publisher's events keep its order; and History
	// agrees with Read.
	for _, ch := range channels {
		var inChannel []eventlog.Event
		for _, ev := range seen {
			if ev.Channel == ch {
				inChannel = append(inChannel, ev)
			}
		}
		last := make(map[int]int)
		for _, ev := range inChannel {
			s := byPos[ev.Position]
			if prev, ok := last[s.pub]; ok && s.seq <= prev {
				t.Errorf("channel %s: publisher %d's event %d after its event %d", ch, s.pub, s.seq, prev)
			}
			last[s.pub] = s.seq
		}
		equalEvents(t, "Read of "+ch, readAll(t, l, ch), inChannel)
		hist, _ := walk(t, l, eventlog.HistoryQuery{Channel: ch, Limit: 250})
		equalEvents(t, "History of "+ch, hist, inChannel)
	}
	if h := head(t, l); h != seen[len(seen)-1].Position {
		t.Errorf("Head = %d, want %d", h, seen[len(seen)-1].Position)
	}
}
