package eventlogtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
)

var authorTests = []test{
	{"RoundTrip", testAuthorRoundTrip},
	{"Edits", testAuthorEdits},
	{"Duplicates", testAuthorDuplicates},
}

// wantAuthors fails unless evs carry the authors want, in order.
func wantAuthors(t testing.TB, what string, evs []eventlog.Event, want ...string) {
	t.Helper()
	if len(evs) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(evs), len(want))
	}
	for i := range evs {
		if evs[i].Author != want[i] {
			t.Errorf("%s [%d] (position %d): Author %q, want %q", what, i, evs[i].Position, evs[i].Author, want[i])
		}
	}
}

// readEverywhere checks that every way of reading the log back (Read of
// all channels and of want's channel, History in both directions, Get of
// each entry) returns want, authors included. want are the entries of one
// channel, in position order, and the only entries of the log.
func readEverywhere(t testing.TB, l eventlog.Log, want []eventlog.Event) {
	t.Helper()
	ctx := context.Background()
	ch := want[0].Channel
	equalEvents(t, "Read", readAll(t, l), want)
	equalEvents(t, "Read of "+ch, readAll(t, l, ch), want)
	equalEvents(t, "Read after the first (replay from a cursor)",
		read(t, l, eventlog.Query{Channels: []string{ch}, After: want[0].Position, Limit: all}), want[1:])
	page, err := l.History(ctx, eventlog.HistoryQuery{Channel: ch, Limit: all})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	equalEvents(t, "History", page.Events, want)
	page, err = l.History(ctx, eventlog.HistoryQuery{Channel: ch, Limit: all, Backward: true})
	if err != nil {
		t.Fatalf("History backward: %v", err)
	}
	back := make([]eventlog.Event, len(want))
	for i := range want {
		back[len(want)-1-i] = want[i]
	}
	equalEvents(t, "History backward", page.Events, back)
	for _, w := range want {
		got, err := l.Get(ctx, ch, w.Position)
		if err != nil {
			t.Fatalf("Get(%q, %d): %v", ch, w.Position, err)
		}
		equalEvent(t, fmt.Sprintf("Get(%q, %d)", ch, w.Position), got, w)
	}
}

// testAuthorRoundTrip: the author given to Append is returned by Append and
// by every read, per event of one call; an empty author stays empty.
func testAuthorRoundTrip(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	evs := appendNew(t, l,
		eventlog.Publish{Channel: "ch", Data: []byte("1"), Author: "user:ann"},
		eventlog.Publish{Channel: "ch", Data: []byte("2"), Author: "key:backend"},
		eventlog.Publish{Channel: "ch", Data: []byte("3")},
		eventlog.Publish{Channel: "ch", Data: []byte("4"), Author: "user:zoë@example.com", IdempotencyKey: "k"},
	)
	wantAuthors(t, "Append", evs, "user:ann", "key:backend", "", "user:zoë@example.com")
	readEverywhere(t, l, evs)

	// A later call by someone else changes none of it.
	more := appendNew(t, l, eventlog.Publish{Channel: "ch", Data: []byte("5"), Author: "user:bob"})
	wantAuthors(t, "second Append", more, "user:bob")
	readEverywhere(t, l, append(evs, more...))
}

// testAuthorEdits: an Updated or Deleted entry carries the editor's author;
// the published event keeps its own, in what Update returns and in every
// read, in both views.
func testAuthorEdits(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	evs := appendNew(t, l,
		eventlog.Publish{Channel: "ch", Type: "note", Data: []byte("v1"), Author: "user:ann"},
		eventlog.Publish{Channel: "ch", Type: "memo", Data: []byte("doomed"), Author: "user:bob"},
	)
	ev, upd, err := l.Update(ctx, "ch", evs[0].Position, []byte("v2"), 0, "user:carol")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if ev.Author != "user:ann" {
		t.Errorf("updated event: Author %q, want the original %q", ev.Author, "user:ann")
	}
	if upd.Author != "user:carol" {
		t.Errorf("Updated entry: Author %q, want the editor %q", upd.Author, "user:carol")
	}
	del, err := l.Delete(ctx, "ch", evs[1].Position, "key:moderation")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if del.Author != "key:moderation" {
		t.Errorf("Deleted entry: Author %q, want the editor %q", del.Author, "key:moderation")
	}
	// An edit without an author records none, whoever published.
	ev2, upd2, err := l.Update(ctx, "ch", evs[0].Position, []byte("v3"), 0, "")
	if err != nil {
		t.Fatalf("second Update: %v", err)
	}
	if ev2.Author != "user:ann" || upd2.Author != "" {
		t.Errorf("second Update: event Author %q, entry Author %q; want %q and %q", ev2.Author, upd2.Author, "user:ann", "")
	}

	gone := evs[1]
	gone.Data, gone.Deleted = nil, true
	log := []eventlog.Event{ev2, gone, upd, del, upd2}
	wantAuthors(t, "log after edits", log, "user:ann", "user:bob", "user:carol", "key:moderation", "")
	readEverywhere(t, l, log)
	page, err := l.History(ctx, eventlog.HistoryQuery{Channel: "ch", Limit: all, CurrentOnly: true})
	if err != nil {
		t.Fatalf("History current: %v", err)
	}
	equalEvents(t, "History current", page.Events, []eventlog.Event{ev2})
}

// testAuthorDuplicates: an idempotent duplicate returns the first event's
// author, not the retry's, whether the first was stored by an earlier call
// or is an earlier input of the same call, and also after an edit by
// someone else.
func testAuthorDuplicates(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	first := appendNew(t, l, eventlog.Publish{Channel: "ch", Data: []byte("one"), IdempotencyKey: "k", Author: "user:ann"})[0]

	retry := appendAll(t, l, eventlog.Publish{Channel: "ch", Data: []byte("one"), IdempotencyKey: "k", Author: "user:mallory"})[0]
	if !retry.Duplicate {
		t.Fatalf("retry: Duplicate false, new event %d", retry.Event.Position)
	}
	equalEvent(t, "retry by another author", retry.Event, first)

	// Anonymous retry of an authored event, and the reverse.
	retry = appendAll(t, l, eventlog.Publish{Channel: "ch", Data: []byte("one"), IdempotencyKey: "k"})[0]
	equalEvent(t, "retry without an author", retry.Event, first)
	anon := appendNew(t, l, eventlog.Publish{Channel: "ch", Data: []byte("anon"), IdempotencyKey: "a"})[0]
	retry = appendAll(t, l, eventlog.Publish{Channel: "ch", Data: []byte("anon"), IdempotencyKey: "a", Author: "user:ann"})[0]
	if !retry.Duplicate || retry.Event.Author != "" {
		t.Errorf("authored retry of an anonymous event: Duplicate %v, Author %q; want a duplicate with no author", retry.Duplicate, retry.Event.Author)
	}
	equalEvent(t, "authored retry of an anonymous event", retry.Event, anon)

	// In one call: the later input is a duplicate of the earlier, author and all.
	res := appendAll(t, l,
		eventlog.Publish{Channel: "ch", Data: []byte("x"), IdempotencyKey: "same", Author: "key:first"},
		eventlog.Publish{Channel: "ch", Data: []byte("x"), IdempotencyKey: "same", Author: "key:second"},
	)
	if res[0].Duplicate || !res[1].Duplicate {
		t.Fatalf("one call: Duplicate %v and %v, want false and true", res[0].Duplicate, res[1].Duplicate)
	}
	wantAuthors(t, "one call", []eventlog.Event{res[0].Event, res[1].Event}, "key:first", "key:first")
	equalEvent(t, "duplicate in one call", res[1].Event, res[0].Event)

	// After an edit by someone else, the duplicate is the event as stored
	// now, with its original author.
	ev, _, err := l.Update(ctx, "ch", first.Position, []byte("edited"), 0, "user:carol")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	retry = appendAll(t, l, eventlog.Publish{Channel: "ch", Data: []byte("one"), IdempotencyKey: "k", Author: "user:mallory"})[0]
	if !retry.Duplicate {
		t.Fatal("retry after update: not a duplicate")
	}
	equalEvent(t, "retry after an update by another author", retry.Event, ev)
	if retry.Event.Author != "user:ann" {
		t.Errorf("retry after update: Author %q, want %q", retry.Event.Author, "user:ann")
	}
}
