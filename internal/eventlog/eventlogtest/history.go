package eventlogtest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
)

var historyTests = []test{
	{"Pages", testHistoryPages},
	{"Empty", testHistoryEmpty},
}

// walk pages through History from q.Cursor, passing each page's last
// position as the next cursor, until HasMore is false. Every page but the
// last must be full and every page must be in the query's direction.
func walk(t testing.TB, l eventlog.Log, q eventlog.HistoryQuery) (evs []eventlog.Event, pages int) {
	t.Helper()
	for {
		page, err := l.History(context.Background(), q)
		if err != nil {
			t.Fatalf("History(%+v): %v", q, err)
		}
		pages++
		if len(page.Events) > q.Limit {
			t.Fatalf("History(%+v) returned %d events", q, len(page.Events))
		}
		if page.HasMore && len(page.Events) < q.Limit {
			t.Fatalf("History(%+v): HasMore with a page of %d", q, len(page.Events))
		}
		for i, ev := range page.Events {
			if ev.Channel != q.Channel {
				t.Fatalf("History(%+v) returned an event of channel %q", q, ev.Channel)
			}
			prev := q.Cursor
			if i > 0 {
				prev = page.Events[i-1].Position
			}
			if prev != 0 && q.Backward != (ev.Position < prev) {
				t.Fatalf("History(%+v): position %d after %d", q, ev.Position, prev)
			}
		}
		evs = append(evs, page.Events...)
		if !page.HasMore {
			return evs, pages
		}
		if pages > all {
			t.Fatalf("History(%+v): no end after %d pages", q, pages)
		}
		q.Cursor = page.Events[len(page.Events)-1].Position
	}
}

// testHistoryPages walks a channel with edits, interleaved with another
// channel, in both directions, in both views, at several page sizes: the
// pages must join up with no overlap and no gap.
func testHistoryPages(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	var published []eventlog.Event
	for i := range 17 {
		evs := appendNew(t, l, pub("h", fmt.Sprint(i)), pub("other", fmt.Sprint(i)))
		published = append(published, evs[0])
	}
	for _, i := range []int{2, 3, 9} {
		if _, _, err := l.Update(ctx, "h", published[i].Position, []byte("edited"), 0, ""); err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	for _, i := range []int{0, 3, 10, 11, 16} {
		if _, err := l.Delete(ctx, "h", published[i].Position, ""); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	full := readAll(t, l, "h")
	if len(full) != 17+3+5 {
		t.Fatalf("channel h has %d entries, want 25", len(full))
	}
	var current []eventlog.Event
	for _, ev := range full {
		if ev.Kind == eventlog.KindPublished && !ev.Deleted {
			current = append(current, ev)
		}
	}
	reversed := func(evs []eventlog.Event) []eventlog.Event {
		r := slices.Clone(evs)
		slices.Reverse(r)
		return r
	}

	for _, currentOnly := range []bool{false, true} {
		want := full
		if currentOnly {
			want = current
		}
		for _, limit := range []int{1, 3, 4, len(want) - 1, len(want), len(want) + 5} {
			for _, backward := range []bool{false, true} {
				q := eventlog.HistoryQuery{Channel: "h", Limit: limit, Backward: backward, CurrentOnly: currentOnly}
				name := fmt.Sprintf("History(%+v)", q)
				got, pages := walk(t, l, q)
				w := want
				if backward {
					w = reversed(want)
				}
				equalEvents(t, name, got, w)
				if wantPages := max(1, (len(want)+limit-1)/limit); pages != wantPages {
					t.Errorf("%s: %d pages, want %d", name, pages, wantPages)
				}
			}
		}
		// A cursor in the middle, in both directions.
		mid := want[len(want)/2].Position
		got, _ := walk(t, l, eventlog.HistoryQuery{Channel: "h", Cursor: mid, Limit: 4, CurrentOnly: currentOnly})
		equalEvents(t, fmt.Sprintf("forward after %d", mid), got, want[len(want)/2+1:])
		got, _ = walk(t, l, eventlog.HistoryQuery{Channel: "h", Cursor: mid, Limit: 4, Backward: true, CurrentOnly: currentOnly})
		equalEvents(t, fmt.Sprintf("backward before %d", mid), got, reversed(want[:len(want)/2]))
	}

	// Limit <= 0 means no limit.
	page, err := l.History(ctx, eventlog.HistoryQuery{Channel: "h", Backward: true})
	if err != nil || page.HasMore {
		t.Fatalf("History without a limit: HasMore %v, err %v", page.HasMore, err)
	}
	equalEvents(t, "History without a limit", page.Events, reversed(full))

	// A cursor past either end gives an empty last page.
	last := full[len(full)-1].Position
	page, err = l.History(ctx, eventlog.HistoryQuery{Channel: "h", Cursor: last, Limit: 5})
	if err != nil || len(page.Events) != 0 || page.HasMore {
		t.Errorf("History after the newest entry: %d events, HasMore %v, err %v", len(page.Events), page.HasMore, err)
	}
	page, err = l.History(ctx, eventlog.HistoryQuery{Channel: "h", Cursor: full[0].Position, Limit: 5, Backward: true})
	if err != nil || len(page.Events) != 0 || page.HasMore {
		t.Errorf("History before the oldest entry: %d events, HasMore %v, err %v", len(page.Events), page.HasMore, err)
	}
}

func testHistoryEmpty(t *testing.T, open Open) {
	l := open(t, eventlog.Options{})
	createChannel(t, l, "empty", eventlog.DefaultSettings())
	for _, backward := range []bool{false, true} {
		page, err := l.History(context.Background(), eventlog.HistoryQuery{Channel: "empty", Limit: 10, Backward: backward})
		if err != nil || len(page.Events) != 0 || page.HasMore {
			t.Errorf("History of an empty channel (backward %v): %d events, HasMore %v, err %v", backward, len(page.Events), page.HasMore, err)
		}
	}
}
