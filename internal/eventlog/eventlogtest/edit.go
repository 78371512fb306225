package eventlogtest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
)

var editTests = []test{
	{"UpdateDelete", testUpdateDelete},
	{"DeleteErasesUpdates", testDeleteErasesUpdates},
	{"EditErrors", testEditErrors},
	{"Get", testGet},
}

// testUpdateDelete: Update and Delete change the stored event, append their
// entries in order, and leave events handed out earlier as they were.
func testUpdateDelete(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	evs := appendNew(t, l,
		eventlog.Publish{Channel: "ch", Type: "note", Data: []byte("v1"), IdempotencyKey: "k1"},
		eventlog.Publish{Channel: "ch", Type: "memo", Data: []byte("doomed")},
		pub("other", "x"),
	)
	e1, e2 := evs[0], evs[1]
	// Events handed out earlier are shared: the edits must not change them.
	before := readAll(t, l)
	snapshot := make([]eventlog.Event, len(before))
	for i, ev := range before {
		snapshot[i] = ev
		snapshot[i].Data = slices.Clone(ev.Data)
	}

	ev, upd, err := l.Update(ctx, "ch", e1.Position, []byte("v2"), 0, "")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	want := e1
	want.Data = []byte("v2")
	want.UpdatedAt = ev.UpdatedAt
	equalEvent(t, "updated event", ev, want)
	if ev.UpdatedAt.IsZero() || ev.UpdatedAt.Before(e1.CreatedAt) {
		t.Errorf("UpdatedAt %v, want set and not before CreatedAt %v", ev.UpdatedAt, e1.CreatedAt)
	}
	equalEvent(t, "Updated entry", upd, eventlog.Event{
		Position:  evs[2].Position + 1,
		Channel:   "ch",
		Type:      "note",
		Data:      []byte("v2"),
		Kind:      eventlog.KindUpdated,
		Target:    e1.Position,
		CreatedAt: upd.CreatedAt,
		Seq:       3,
	})
	recent(t, "Updated entry CreatedAt", upd.CreatedAt)

	del, err := l.Delete(ctx, "ch", e2.Position, "")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	equalEvent(t, "Deleted entry", del, eventlog.Event{
		Position:  upd.Position + 1,
		Channel:   "ch",
		Type:      "memo",
		Kind:      eventlog.KindDeleted,
		Target:    e2.Position,
		CreatedAt: del.CreatedAt,
		Seq:       4,
	})
	gone := e2
	gone.Data, gone.Deleted = nil, true

	// Update the updated event again: it is still editable.
	ev2, upd2, err := l.Update(ctx, "ch", e1.Position, nil, 0, "")
	if err != nil {
		t.Fatalf("second Update: %v", err)
	}
	if len(ev2.Data) != 0 || ev2.UpdatedAt.Before(ev.UpdatedAt) || upd2.Position != del.Position+1 {
		t.Errorf("second Update: event %+v, entry %+v", ev2, upd2)
	}

	equalEvents(t, "Read after edits", readAll(t, l), []eventlog.Event{ev2, gone, evs[2], upd, del, upd2})
	equalEvents(t, "Read of ch after edits", readAll(t, l, "ch"), []eventlog.Event{ev2, gone, upd, del, upd2})
	equalEvents(t, "events read before the edits", before, snapshot)
	equalEvents(t, "events appended before the edits", evs, snapshot)

	page, err := l.History(ctx, eventlog.HistoryQuery{Channel: "ch", Limit: 10, CurrentOnly: true})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	equalEvents(t, "current view", page.Events, []eventlog.Event{ev2})
	page, err = l.History(ctx, eventlog.HistoryQuery{Channel: "ch", Limit: 10})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	equalEvents(t, "full view", page.Events, []eventlog.Event{ev2, gone, upd, del, upd2})
	got, err := l.Get(ctx, "ch", e2.Position)
	if err != nil {
		t.Fatalf("Get deleted event: %v", err)
	}
	equalEvent(t, "Get deleted event", got, gone)
}

// testDeleteErasesUpdates: deleting an event erases the data of every
// version of it: the event's and that of each of its Updated entries,
// which are marked Deleted, in every view. Other events' entries keep
// theirs; the entries themselves, their types, authors, times and
// positions stay.
func testDeleteErasesUpdates(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	evs := appendNew(t, l,
		eventlog.Publish{Channel: "ch", Type: "note", Data: []byte("secret v1"), IdempotencyKey: "k", Author: "user:a"},
		eventlog.Publish{Channel: "ch", Type: "note", Data: []byte("kept v1")},
	)
	doomed, kept := evs[0], evs[1]
	var updates []eventlog.Event
	for _, d := range []string{"secret v2", "secret v3"} {
		_, entry, err := l.Update(ctx, "ch", doomed.Position, []byte(d), 0, "user:b")
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		updates = append(updates, entry)
	}
	_, keptUpd, err := l.Update(ctx, "ch", kept.Position, []byte("kept v2"), 0, "user:b")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	// Handed out before the delete: a snapshot, which must stay as it was.
	before := readAll(t, l, "ch")
	del, err := l.Delete(ctx, "ch", doomed.Position, "user:c")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if string(before[2].Data) != "secret v2" || before[2].Deleted {
		t.Errorf("an Updated entry read before the delete changed: %+v", before[2])
	}

	gone := doomed
	gone.Data, gone.Deleted = nil, true
	gone.UpdatedAt = before[0].UpdatedAt
	want := []eventlog.Event{gone, before[1]}
	for _, u := range updates {
		u.Data, u.Deleted = nil, true
		want = append(want, u)
	}
	want = append(want, keptUpd, del)

	equalEvents(t, "Read after the delete", readAll(t, l), want)
	equalEvents(t, "Read of ch after the delete", readAll(t, l, "ch"), want)
	equalEvents(t, "Read after the event", read(t, l, eventlog.Query{After: doomed.Position, Limit: all}), want[1:])
	page, err := l.History(ctx, eventlog.HistoryQuery{Channel: "ch", Limit: all})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	equalEvents(t, "History (log view)", page.Events, want)
	page, err = l.History(ctx, eventlog.HistoryQuery{Channel: "ch", Limit: all, Backward: true})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	back := slices.Clone(want)
	slices.Reverse(back)
	equalEvents(t, "History backward", page.Events, back)
	for _, w := range want {
		got, err := l.Get(ctx, "ch", w.Position)
		if err != nil {
			t.Fatalf("Get(%d): %v", w.Position, err)
		}
		equalEvent(t, fmt.Sprintf("Get(%d)", w.Position), got, w)
	}
	// Updated entries read before the delete have a different identity
	// (Deleted) from the erased ones, for caches keyed on it.
	for i := 2; i < 4; i++ {
		if before[i].Deleted == want[i].Deleted {
			t.Errorf("erased Updated entry %d has the Deleted flag it had before the delete", want[i].Position)
		}
	}
}

func testEditErrors(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	evs := appendNew(t, l, pub("ch", "a"), pub("ch", "b"), pub("other", "c"))
	_, upd, err := l.Update(ctx, "ch", evs[0].Position, []byte("a2"), 0, "")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	del, err := l.Delete(ctx, "ch", evs[1].Position, "")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	h := head(t, l)
	log := readAll(t, l)

	cases := []struct {
		name    string
		channel string
		pos     int64
		want    error
	}{
		{"no such position", "ch", h + 100, eventlog.ErrEventNotFound},
		{"position 0", "ch", 0, eventlog.ErrEventNotFound},
		{"wrong channel", "other", evs[0].Position, eventlog.ErrEventNotFound},
		{"unknown channel", "missing", evs[0].Position, eventlog.ErrEventNotFound},
		{"deleted event", "ch", evs[1].Position, eventlog.ErrNotEditable},
		{"Updated entry", "ch", upd.Position, eventlog.ErrNotEditable},
		{"Deleted entry", "ch", del.Position, eventlog.ErrNotEditable},
	}
	for _, tc := range cases {
		_, _, err := l.Update(ctx, tc.channel, tc.pos, []byte("new"), 0, "")
		wantErr(t, fmt.Sprintf("Update %s", tc.name), err, tc.want)
		_, err = l.Delete(ctx, tc.channel, tc.pos, "")
		wantErr(t, fmt.Sprintf("Delete %s", tc.name), err, tc.want)
	}
	if got := head(t, l); got != h {
		t.Errorf("Head moved from %d to %d on failed edits", h, got)
	}
	equalEvents(t, "log after failed edits", readAll(t, l), log)
}

func testGet(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	evs := appendNew(t, l, pub("a", "1"), keyed("b", "k", "2"), pub("a", "3"))
	if _, _, err := l.Update(ctx, "a", evs[0].Position, []byte("1b"), 0, ""); err != nil {
		t.Fatalf("Update: %v", err)
	}
	for _, want := range readAll(t, l) {
		got, err := l.Get(ctx, want.Channel, want.Position)
		if err != nil {
			t.Fatalf("Get(%q, %d): %v", want.Channel, want.Position, err)
		}
		equalEvent(t, fmt.Sprintf("Get(%q, %d)", want.Channel, want.Position), got, want)
	}
	for _, tc := range []struct {
		channel string
		pos     int64
	}{{"b", evs[0].Position}, {"a", evs[1].Position}, {"missing", evs[0].Position}, {"a", 0}, {"a", 1 << 40}} {
		_, err := l.Get(ctx, tc.channel, tc.pos)
		wantErr(t, fmt.Sprintf("Get(%q, %d)", tc.channel, tc.pos), err, eventlog.ErrEventNotFound)
	}
}
