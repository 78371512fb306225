package eventlogtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
)

var appendTests = []test{
	{"Order", testOrder},
	{"ReadFilters", testReadFilters},
	{"ReadMaxBytes", testReadMaxBytes},
	{"IdempotentRetry", testIdempotentRetry},
	{"IdempotentInOneCall", testIdempotentInOneCall},
	{"IdempotentPerChannel", testIdempotentPerChannel},
	{"PerItemErrors", testPerItemErrors},
	{"AutoCreate", testAutoCreate},
	{"NoAutoCreate", testNoAutoCreate},
	{"TooLarge", testTooLarge},
	{"Concurrent", testConcurrent},
}

// testOrder: positions start at 1, grow by one per written event across
// calls and channels, and Read returns exactly what Append returned.
func testOrder(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	if h := head(t, l); h != 0 {
		t.Fatalf("Head of an empty log = %d, want 0", h)
	}
	if evs := readAll(t, l); len(evs) != 0 {
		t.Fatalf("Read of an empty log returned %d entries", len(evs))
	}
	res, errs := appendSome(t, l)
	if len(res) != 0 || len(errs) != 0 {
		t.Fatalf("empty Append returned %d results", len(res))
	}

	batches := [][]eventlog.Publish{
		{pub("a", "1"), pub("b", "2"), {Channel: "a", Type: "greeting", Data: []byte("3"), IdempotencyKey: "k3"}},
		{pub("c", "4")},
		{pub("a", ""), {Channel: "b", Type: "t", Data: []byte{0, 1, 2, 255}}},
	}
	var appended []eventlog.Event
	seqs := map[string]int64{}
	for _, b := range batches {
		for i, ev := range appendNew(t, l, b...) {
			seqs[b[i].Channel]++
			want := eventlog.Event{
				Seq:            seqs[b[i].Channel],
				Position:       int64(len(appended) + 1),
				Channel:        b[i].Channel,
				Type:           b[i].Type,
				Data:           b[i].Data,
				Kind:           eventlog.KindPublished,
				IdempotencyKey: b[i].IdempotencyKey,
				CreatedAt:      ev.CreatedAt,
			}
			equalEvent(t, fmt.Sprintf("appended event %d", want.Position), ev, want)
			recent(t, "CreatedAt", ev.CreatedAt)
			appended = append(appended, ev)
		}
	}
	got := readAll(t, l)
	equalEvents(t, "Read after appends", got, appended)
	for i := 1; i < len(got); i++ {
		if got[i].CreatedAt.Before(got[i-1].CreatedAt) {
			t.Errorf("CreatedAt goes backwards: position %d at %v, %d at %v",
				got[i-1].Position, got[i-1].CreatedAt, got[i].Position, got[i].CreatedAt)
		}
	}
	if h := head(t, l); h != int64(len(appended)) {
		t.Errorf("Head = %d, want %d", h, len(appended))
	}

	// The log keeps its own copy of the data.
	buf := []byte("original")
	ev := appendNew(t, l, eventlog.Publish{Channel: "a", Data: buf})[0]
	copy(buf, "CHANGED!")
	stored, err := l.Get(context.Background(), "a", ev.Position)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if string(stored.Data) != "original" {
		t.Errorf("stored data changed with the caller's buffer: %q", stored.Data)
	}
}

// testReadFilters checks every Query field against the full log.
func testReadFilters(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	chans := []string{"a", "b", "a", "c", "b", "a", "a", "c", "b", "a", "c", "a"}
	for i, ch := range chans {
		appendNew(t, l, pub(ch, fmt.Sprint(i)))
	}
	full := readAll(t, l)
	if len(full) != len(chans) {
		t.Fatalf("Read returned %d entries, want %d", len(full), len(chans))
	}
	p := positions(full)
	expect := func(q eventlog.Query) []eventlog.Event {
		var out []eventlog.Event
		for _, ev := range full {
			if ev.Position <= q.After || (q.UpTo > 0 && ev.Position > q.UpTo) {
				continue
			}
			if q.Channels != nil && !slices.Contains(q.Channels, ev.Channel) {
				continue
			}
			if len(out) < q.Limit {
				out = append(out, ev)
			}
		}
		return out
	}
	queries := []eventlog.Query{
		{Limit: all},
		{Channels: []string{"a"}, Limit: all},
		{Channels: []string{"a", "c"}, Limit: all},
		{Channels: []string{"c", "a", "a"}, Limit: all},
		{Channels: []string{"missing"}, Limit: all},
		{Channels: []string{"b", "missing"}, Limit: all},
		{After: p[3], Limit: all},
		{After: p[len(p)-1], Limit: all},
		{UpTo: p[7], Limit: all},
		{After: p[2], UpTo: p[8], Limit: all},
		{After: p[5], UpTo: p[5], Limit: all},
		{Limit: 1},
		{Limit: 5},
		{After: p[1], Limit: 4},
		{Channels: []string{"a", "b"}, Limit: 3},
		{Channels: []string{"a", "b"}, After: p[2], UpTo: p[10], Limit: 3},
		{Channels: []string{"c"}, After: p[3], UpTo: p[9], Limit: all},
	}
	for _, q := range queries {
		equalEvents(t, fmt.Sprintf("Read(%+v)", q), read(t, l, q), expect(q))
	}
	// Limit <= 0 means no limit; an empty (not nil) channel list selects
	// nothing.
	equalEvents(t, "Read with Limit 0", read(t, l, eventlog.Query{After: p[1]}), full[2:])
	if evs := read(t, l, eventlog.Query{Channels: []string{}, Limit: all}); len(evs) != 0 {
		t.Errorf("Read of no channels returned %d entries", len(evs))
	}
}

// testIdempotentRetry: a retry with the same type and data returns the
// stored event (as it is now) and writes nothing; the key reused with
// another type or data is a conflict that writes nothing either.
func testIdempotentRetry(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	orig := eventlog.Publish{Channel: "ch", Type: "t1", Data: []byte("one"), IdempotencyKey: "k"}
	first := appendNew(t, l, orig)[0]
	h := head(t, l)

	retry := appendAll(t, l, orig)[0]
	if !retry.Duplicate {
		t.Fatalf("retry with the same key: Duplicate false, new event %d", retry.Event.Position)
	}
	equalEvent(t, "retry result", retry.Event, first)
	otherType, otherData := orig, orig
	otherType.Type = "t2"
	otherData.Data = []byte("other")
	noData := orig
	noData.Data = nil
	for what, p := range map[string]eventlog.Publish{"another type": otherType, "other data": otherData, "no data": noData} {
		_, errs := appendSome(t, l, p)
		wantConflict(t, "key reused with "+what, errs[0], "k", "ch", first.Position)
	}
	if got := head(t, l); got != h {
		t.Errorf("Head moved from %d to %d on a duplicate and conflicts", h, got)
	}
	if n := len(readAll(t, l)); n != 1 {
		t.Errorf("log has %d entries after a retry and conflicts, want 1", n)
	}

	// The duplicate is the event as stored now, and the retry is compared
	// with what was first published: after an update, the first data is a
	// retry and the new data a conflict.
	ev, _, err := l.Update(ctx, "ch", first.Position, []byte("edited"), 0, "")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	retry = appendAll(t, l, orig)[0]
	if !retry.Duplicate {
		t.Fatal("retry after update: not a duplicate")
	}
	equalEvent(t, "retry after update", retry.Event, ev)
	edited := orig
	edited.Data = []byte("edited")
	_, errs := appendSome(t, l, edited)
	wantConflict(t, "key reused with the updated data", errs[0], "k", "ch", first.Position)

	// Deletion erases the data, so only the type can be compared: any
	// data of the same type is a retry of the deleted event.
	if _, err := l.Delete(ctx, "ch", first.Position, ""); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, p := range []eventlog.Publish{orig, otherData} {
		retry = appendAll(t, l, p)[0]
		if !retry.Duplicate || retry.Event.Position != first.Position || !retry.Event.Deleted || len(retry.Event.Data) != 0 {
			t.Errorf("retry after delete with %q: %+v, want the deleted event %d", p.Data, retry, first.Position)
		}
	}
	_, errs = appendSome(t, l, otherType)
	wantConflict(t, "key of a deleted event reused with another type", errs[0], "k", "ch", first.Position)

	// A key whose event failed was not used.
	_, errs = appendSome(t, l, keyed("ch", "k2", strings.Repeat("x", eventlog.DefaultMaxEventSize+1)))
	wantErr(t, "too large keyed event", errs[0], eventlog.ErrTooLarge)
	if r := appendAll(t, l, keyed("ch", "k2", "fits"))[0]; r.Duplicate {
		t.Errorf("key of a failed event counted as used: duplicate of %d", r.Event.Position)
	}
}

// testIdempotentInOneCall: repeated keys within one call write once; a
// repeat with the same type and data is a duplicate of the first, one
// with other data a conflict; empty keys never dedupe.
func testIdempotentInOneCall(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	res, errs := appendSome(t, l,
		keyed("ch", "k", "x"),
		keyed("ch", "k", "x"),
		pub("ch", "z"),
		pub("ch", "z"),
		keyed("ch", "j", "w"),
		keyed("ch", "k", "v"),
		eventlog.Publish{Channel: "ch", Type: "other", Data: []byte("x"), IdempotencyKey: "k"},
		keyed("ch", "k", "x"),
	)
	wantDup := []bool{false, true, false, false, false, false, false, true}
	for i, r := range res {
		if i == 5 || i == 6 {
			continue
		}
		if errs[i] != nil {
			t.Fatalf("input %d: %v", i, errs[i])
		}
		if r.Duplicate != wantDup[i] {
			t.Errorf("input %d: Duplicate %v, want %v", i, r.Duplicate, wantDup[i])
		}
	}
	wantConflict(t, "input 5 (key k, other data)", errs[5], "k", "ch", res[0].Event.Position)
	wantConflict(t, "input 6 (key k, other type)", errs[6], "k", "ch", res[0].Event.Position)
	equalEvent(t, "second input with key k", res[1].Event, res[0].Event)
	equalEvent(t, "last input with key k", res[7].Event, res[0].Event)
	written := []eventlog.Event{res[0].Event, res[2].Event, res[3].Event, res[4].Event}
	for i := 1; i < len(written); i++ {
		if written[i].Position != written[i-1].Position+1 {
			t.Errorf("written positions %v are not consecutive", positions(written))
		}
	}
	equalEvents(t, "log after one call with repeated keys", readAll(t, l), written)

	// Against a stored event too, one call answers each input alone.
	res, errs = appendSome(t, l, keyed("ch", "j", "w"), keyed("ch", "j", "not w"), keyed("ch", "j", "w"))
	if errs[0] != nil || errs[2] != nil || !res[0].Duplicate || !res[2].Duplicate {
		t.Errorf("retries of key j around a conflict: %v %v, %+v %+v", errs[0], errs[2], res[0], res[2])
	}
	wantConflict(t, "key j with other data", errs[1], "j", "ch", written[3].Position)
}

// testIdempotentPerChannel: a key is scoped to its channel.
func testIdempotentPerChannel(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	evs := appendNew(t, l, keyed("a", "k", "in a"), keyed("b", "k", "in b"))
	if evs[0].Position == evs[1].Position {
		t.Fatalf("same key on two channels gave one position %d", evs[0].Position)
	}
	again := appendNew(t, l, keyed("c", "k", "in c"))[0]
	r := appendAll(t, l, keyed("b", "k", "in b"))[0]
	if !r.Duplicate {
		t.Fatal("retry on b: not a duplicate")
	}
	equalEvent(t, "retry on b", r.Event, evs[1])
	equalEvents(t, "log", readAll(t, l), []eventlog.Event{evs[0], evs[1], again})
}

// testPerItemErrors: a failing input fails alone and writes nothing.
func testPerItemErrors(t *testing.T, open Open) {
	l := open(t, eventlog.Options{})
	createChannel(t, l, "ok", eventlog.Settings{MaxEventSize: 8})
	res, errs := appendSome(t, l,
		pub("ok", "a"),
		pub("missing", "b"),
		keyed("ok", "big", "123456789"),
		pub("ok", "d"),
	)
	if errs[0] != nil || errs[3] != nil {
		t.Fatalf("valid inputs failed: %v, %v", errs[0], errs[3])
	}
	wantErr(t, "unknown channel", errs[1], eventlog.ErrChannelNotFound)
	wantTooLarge(t, "9 bytes over a limit of 8", errs[2], 9, 8)
	if res[3].Event.Position != res[0].Event.Position+1 {
		t.Errorf("positions %d and %d: failed inputs took positions", res[0].Event.Position, res[3].Event.Position)
	}
	equalEvents(t, "log", readAll(t, l), []eventlog.Event{res[0].Event, res[3].Event})
	if _, err := l.GetChannel(context.Background(), "missing"); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Errorf("GetChannel after a failed append: %v, want ErrChannelNotFound", err)
	}
	if r := appendAll(t, l, keyed("ok", "big", "fits"))[0]; r.Duplicate {
		t.Error("the key of the too-large input was used")
	}
}

func testAutoCreate(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ev := appendNew(t, l, pub("auto/x", "hello"), pub("auto/x", "again"))[0]
	c := getChannel(t, l, "auto/x")
	if c.Name != "auto/x" || c.Settings != eventlog.DefaultSettings() || c.TruncatedThrough != 0 {
		t.Errorf("auto-created channel %+v, want default settings", c)
	}
	recent(t, "auto-created channel CreatedAt", c.CreatedAt)
	equalEvents(t, "auto/x", readAll(t, l, "auto/x")[:1], []eventlog.Event{ev})
	if _, err := l.CreateChannel(context.Background(), "auto/x", eventlog.DefaultSettings()); !errors.Is(err, eventlog.ErrChannelExists) {
		t.Errorf("CreateChannel of an auto-created channel: %v, want ErrChannelExists", err)
	}
	// A publish the new channel could not hold is refused and creates
	// nothing, alone or next to one that is written.
	big := make([]byte, eventlog.DefaultMaxEventSize+1)
	_, errs := appendSome(t, l, eventlog.Publish{Channel: "auto/big", Data: big})
	wantTooLarge(t, "oversized publish to a new channel", errs[0], len(big), eventlog.DefaultMaxEventSize)
	if _, err := l.GetChannel(context.Background(), "auto/big"); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Errorf("a refused publish created its channel: %v", err)
	}
	res, errs := appendSome(t, l, eventlog.Publish{Channel: "auto/mixed", Data: big}, pub("auto/mixed", "fits"))
	wantTooLarge(t, "oversized publish next to one that fits", errs[0], len(big), eventlog.DefaultMaxEventSize)
	if errs[1] != nil || res[1].Event.Position == 0 {
		t.Errorf("the publish that fits: %v %+v", errs[1], res[1])
	}
}

func testNoAutoCreate(t *testing.T, open Open) {
	l := open(t, eventlog.Options{})
	_, errs := appendSome(t, l, pub("x", "1"), pub("x", "2"))
	for i, err := range errs {
		wantErr(t, fmt.Sprintf("input %d", i), err, eventlog.ErrChannelNotFound)
	}
	if _, err := l.GetChannel(context.Background(), "x"); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Errorf("GetChannel: %v, want ErrChannelNotFound", err)
	}
	if h := head(t, l); h != 0 {
		t.Errorf("Head = %d after failed appends, want 0", h)
	}
	createChannel(t, l, "x", eventlog.DefaultSettings())
	if ev := appendNew(t, l, pub("x", "3"))[0]; ev.Position != 1 {
		t.Errorf("first event at %d, want 1", ev.Position)
	}
}

// testTooLarge: the limit is the channel's, as it is now.
func testTooLarge(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	createChannel(t, l, "small", eventlog.Settings{MaxEventSize: 10})
	appendNew(t, l, pub("small", "0123456789"))
	_, errs := appendSome(t, l, pub("small", "0123456789a"))
	wantTooLarge(t, "11 bytes, limit 10", errs[0], 11, 10)

	size := int32(20)
	c, err := l.UpdateChannel(ctx, "small", eventlog.SettingsPatch{MaxEventSize: &size})
	if err != nil {
		t.Fatalf("UpdateChannel: %v", err)
	}
	if c.Settings.MaxEventSize != 20 {
		t.Fatalf("UpdateChannel returned MaxEventSize %d, want 20", c.Settings.MaxEventSize)
	}
	ev := appendNew(t, l, pub("small", "0123456789a"))[0]
	_, errs = appendSome(t, l, pub("small", strings.Repeat("x", 21)))
	wantTooLarge(t, "21 bytes, limit 20", errs[0], 21, 20)
	_, _, err = l.Update(ctx, "small", ev.Position, []byte(strings.Repeat("x", 21)), 0, "")
	wantTooLarge(t, "Update with 21 bytes, limit 20", err, 21, 20)

	appendNew(t, l, pub("auto", strings.Repeat("x", eventlog.DefaultMaxEventSize)))
	_, errs = appendSome(t, l, pub("auto", strings.Repeat("x", eventlog.DefaultMaxEventSize+1)))
	wantTooLarge(t, "auto-created channel", errs[0], eventlog.DefaultMaxEventSize+1, eventlog.DefaultMaxEventSize)
	if n := len(readAll(t, l)); n != 3 {
		t.Errorf("log has %d entries, want the 3 that fit", n)
	}
}

// A read bounded in bytes stops after the entry that reaches the bound,
// with at least one entry, over all channels and over a channel list.
func testReadMaxBytes(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	var ps []eventlog.Publish
	for i := range 10 {
		ps = append(ps, pub([]string{"a", "b"}[i%2], "0123456789"))
	}
	evs := appendNew(t, l, ps...)
	for _, tc := range []struct {
		channels []string
		maxBytes int
		want     int
	}{
		{nil, 25, 3}, {nil, 30, 3}, {nil, 1, 1}, {nil, 0, 10}, {nil, 1000, 10},
		{[]string{"a", "b"}, 25, 3}, {[]string{"a"}, 15, 2},
	} {
		got := read(t, l, eventlog.Query{Channels: tc.channels, Limit: all, MaxBytes: tc.maxBytes})
		if len(got) != tc.want {
			t.Errorf("Read(%v, MaxBytes %d): %d entries, want %d", tc.channels, tc.maxBytes, len(got), tc.want)
		}
		if len(got) > 0 && tc.channels == nil && got[0].Position != evs[0].Position {
			t.Errorf("Read(MaxBytes %d) starts at %d", tc.maxBytes, got[0].Position)
		}
	}
}
