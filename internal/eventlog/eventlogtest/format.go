package eventlogtest

import (
	"context"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
)

var formatTests = []test{
	{"RoundTrip", testFormatRoundTrip},
	{"Edits", testFormatEdits},
	{"Duplicates", testFormatDuplicates},
}

// Every way of reading the log back returns each event's format as it was
// published.
func testFormatRoundTrip(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	evs := appendNew(t, l,
		eventlog.Publish{Channel: "ch", Data: []byte(`{"a":1}`), Format: eventlog.FormatJSON},
		eventlog.Publish{Channel: "ch", Data: []byte("hi"), Format: eventlog.FormatText},
		eventlog.Publish{Channel: "ch", Data: []byte{0xff}, Format: eventlog.FormatBytes},
		eventlog.Publish{Channel: "ch", Data: []byte{0}},
	)
	want := []eventlog.Format{eventlog.FormatJSON, eventlog.FormatText, eventlog.FormatBytes, eventlog.FormatUnspecified}
	for i, ev := range evs {
		if ev.Format != want[i] {
			t.Fatalf("Append result %d: Format %v, want %v", i, ev.Format, want[i])
		}
	}
	readEverywhere(t, l, evs)
}

// An update with a format sets the event's and its entry's; one without
// keeps the event's; a Deleted entry has none.
func testFormatEdits(t *testing.T, open Open) {
	ctx := context.Background()
	l := open(t, eventlog.Options{AutoCreate: true})
	ev := appendNew(t, l, eventlog.Publish{Channel: "ch", Data: []byte(`"v1"`), Format: eventlog.FormatJSON})[0]
	upd, entry, err := l.Update(ctx, "ch", ev.Position, []byte(`{"v":2}`), eventlog.FormatUnspecified, "")
	if err != nil {
		t.Fatal(err)
	}
	if upd.Format != eventlog.FormatJSON || entry.Format != eventlog.FormatJSON {
		t.Fatalf("update keeping the format: event %v, entry %v, want JSON", upd.Format, entry.Format)
	}
	upd2, entry2, err := l.Update(ctx, "ch", ev.Position, []byte("plain"), eventlog.FormatText, "")
	if err != nil {
		t.Fatal(err)
	}
	if upd2.Format != eventlog.FormatText || entry2.Format != eventlog.FormatText {
		t.Fatalf("update to text: event %v, entry %v, want text", upd2.Format, entry2.Format)
	}
	got, err := l.Get(ctx, "ch", ev.Position)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format != eventlog.FormatText {
		t.Fatalf("Get after the update: Format %v, want text", got.Format)
	}
	del, err := l.Delete(ctx, "ch", ev.Position, "")
	if err != nil {
		t.Fatal(err)
	}
	if del.Format != eventlog.FormatUnspecified {
		t.Fatalf("Deleted entry: Format %v, want none", del.Format)
	}
	all := readAll(t, l, "ch")
	if len(all) != 4 || all[1].Format != eventlog.FormatJSON || all[2].Format != eventlog.FormatText || all[3].Format != eventlog.FormatUnspecified {
		t.Fatalf("log after edits: %+v", all)
	}
}

// A duplicate returns the stored event's format.
func testFormatDuplicates(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	first := appendNew(t, l, eventlog.Publish{Channel: "ch", Data: []byte(`[1]`), IdempotencyKey: "k", Format: eventlog.FormatJSON})[0]
	res := appendAll(t, l, eventlog.Publish{Channel: "ch", Data: []byte(`[1]`), IdempotencyKey: "k", Format: eventlog.FormatJSON})
	if !res[0].Duplicate || res[0].Event.Format != eventlog.FormatJSON || res[0].Event.Position != first.Position {
		t.Fatalf("duplicate: %+v", res[0])
	}
}
