package eventlogtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
)

var trimTests = []test{
	{"ByCount", testTrimByCount},
	{"ByAge", testTrimByAge},
}

// testTrimByCount keeps the newest MaxEvents entries of each channel with
// a limit and raises TruncatedThrough over the removed ones.
func testTrimByCount(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	createChannel(t, l, "cnt", eventlog.Settings{MaxEvents: 3, MaxEventSize: 100})
	var ps []eventlog.Publish
	for i := range 10 {
		ps = append(ps, pub("cnt", fmt.Sprint(i)), pub("free", fmt.Sprint(i)))
	}
	appendNew(t, l, ps...)
	cnt, free := readAll(t, l, "cnt"), readAll(t, l, "free")
	if n := trim(t, l, time.Now()); n != 7 {
		t.Errorf("Trim removed %d entries, want 7", n)
	}
	equalEvents(t, "cnt after trim", readAll(t, l, "cnt"), cnt[7:])
	equalEvents(t, "free after trim", readAll(t, l, "free"), free)
	if got := getChannel(t, l, "cnt").TruncatedThrough; got != cnt[6].Position {
		t.Errorf("TruncatedThrough %d, want %d", got, cnt[6].Position)
	}
	if got := getChannel(t, l, "free").TruncatedThrough; got != 0 {
		t.Errorf("TruncatedThrough of a channel without limits = %d", got)
	}
	for _, ev := range cnt[:7] {
		_, err := l.Get(ctx, "cnt", ev.Position)
		wantErr(t, fmt.Sprintf("Get of trimmed %d", ev.Position), err, eventlog.ErrEventNotFound)
	}
	got, pages := walk(t, l, eventlog.HistoryQuery{Channel: "cnt", Limit: 2, Backward: true})
	if len(got) != 3 || pages != 2 {
		t.Errorf("History after trim: %d entries in %d pages, want 3 in 2", len(got), pages)
	}
	if n := trim(t, l, time.Now()); n != 0 {
		t.Errorf("second Trim removed %d entries, want 0", n)
	}

	// Edit entries count; a limit set later applies at the next trim.
	if _, _, err := l.Update(ctx, "cnt", cnt[9].Position, []byte("edited"), 0, ""); err != nil {
		t.Fatalf("Update: %v", err)
	}
	two := int64(2)
	if _, err := l.UpdateChannel(ctx, "free", eventlog.SettingsPatch{MaxEvents: &two}); err != nil {
		t.Fatalf("UpdateChannel: %v", err)
	}
	if n := trim(t, l, time.Now()); n != 1+8 {
		t.Errorf("Trim removed %d entries, want 9", n)
	}
	if got := positions(readAll(t, l, "cnt")); len(got) != 3 || got[0] != cnt[8].Position {
		t.Errorf("cnt holds %v, want 3 entries from %d", got, cnt[8].Position)
	}
	equalEvents(t, "free after its limit", readAll(t, l, "free"), free[8:])
	if got := getChannel(t, l, "free").TruncatedThrough; got != free[7].Position {
		t.Errorf("free TruncatedThrough %d, want %d", got, free[7].Position)
	}
	if got := getChannel(t, l, "cnt").TruncatedThrough; got != cnt[7].Position {
		t.Errorf("cnt TruncatedThrough %d, want %d", got, cnt[7].Position)
	}
}

// testTrimByAge removes entries created before now minus MaxAge, judged by
// the log's own CreatedAt, with now in the future instead of sleeping.
func testTrimByAge(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	const maxAge = time.Hour
	createChannel(t, l, "age", eventlog.Settings{MaxAge: maxAge, MaxEventSize: 100})
	old := appendNew(t, l, pub("age", "a"), pub("age", "b"), pub("young", "c"))
	young := appendNew(t, l, pub("young", "d"))
	// Append until an event is strictly newer than the first.
	var evs []eventlog.Event
	deadline := time.Now().Add(waitTimeout)
	for {
		ev := appendNew(t, l, pub("age", "later"))[0]
		evs = append(evs, ev)
		if ev.CreatedAt.After(old[0].CreatedAt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CreatedAt did not advance past %v in %v", old[0].CreatedAt, waitTimeout)
		}
	}
	newest := evs[len(evs)-1]
	aged := readAll(t, l, "age")

	if n := trim(t, l, time.Now().Add(-maxAge)); n != 0 {
		t.Errorf("Trim in the past removed %d", n)
	}
	// Exactly at the age limit nothing is older than MaxAge.
	if n := trim(t, l, old[0].CreatedAt.Add(maxAge)); n != 0 {
		t.Errorf("Trim at CreatedAt+MaxAge of the oldest removed %d", n)
	}
	// Everything created before the newest event goes.
	n := trim(t, l, newest.CreatedAt.Add(maxAge))
	if n != int64(len(aged)-1) {
		t.Errorf("Trim removed %d, want %d", n, len(aged)-1)
	}
	equalEvents(t, "age after trim", readAll(t, l, "age"), []eventlog.Event{newest})
	if got := getChannel(t, l, "age").TruncatedThrough; got != aged[len(aged)-2].Position {
		t.Errorf("TruncatedThrough %d, want %d", got, aged[len(aged)-2].Position)
	}

	// Far in the future everything in age goes; young has no limit.
	if n := trim(t, l, time.Now().Add(24*time.Hour)); n != 1 {
		t.Errorf("Trim in the future removed %d, want 1", n)
	}
	if got := getChannel(t, l, "age").TruncatedThrough; got != newest.Position {
		t.Errorf("TruncatedThrough %d, want %d", got, newest.Position)
	}
	equalEvents(t, "young", readAll(t, l, "young"), []eventlog.Event{old[2], young[0]})
	after := appendNew(t, l, pub("age", "fresh"))[0]
	if after.Position <= newest.Position || getChannel(t, l, "age").TruncatedThrough != newest.Position {
		t.Errorf("append after trimming all: position %d", after.Position)
	}
}
