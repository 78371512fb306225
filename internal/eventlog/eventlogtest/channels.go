package eventlogtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
)

var channelTests = []test{
	{"CRUD", testChannelCRUD},
	{"List", testListChannels},
	{"Delete", testDeleteChannel},
	{"DeleteAutoCreated", testDeleteAutoCreated},
}

func equalChannel(t testing.TB, what string, got, want eventlog.Channel) {
	t.Helper()
	if got.Name != want.Name || got.Settings != want.Settings || got.TruncatedThrough != want.TruncatedThrough ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Errorf("%s: got %+v, want %+v", what, got, want)
	}
}

func names(cs []eventlog.Channel) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

func testChannelCRUD(t *testing.T, open Open) {
	l := open(t, eventlog.Options{})
	ctx := context.Background()
	s := eventlog.Settings{MaxEvents: 5, MaxAge: time.Hour + 30*time.Second, MaxEventSize: 100}
	c := createChannel(t, l, "crud/a", s)
	if c.Name != "crud/a" || c.Settings != s || c.TruncatedThrough != 0 {
		t.Errorf("CreateChannel returned %+v", c)
	}
	recent(t, "channel CreatedAt", c.CreatedAt)
	if c.UpdatedAt.Before(c.CreatedAt) {
		t.Errorf("UpdatedAt %v before CreatedAt %v", c.UpdatedAt, c.CreatedAt)
	}
	_, err := l.CreateChannel(ctx, "crud/a", eventlog.DefaultSettings())
	wantErr(t, "CreateChannel twice", err, eventlog.ErrChannelExists)
	equalChannel(t, "GetChannel", getChannel(t, l, "crud/a"), c)
	_, err = l.GetChannel(ctx, "crud/missing")
	wantErr(t, "GetChannel of a missing channel", err, eventlog.ErrChannelNotFound)

	// A patch changes only its non-nil fields.
	age := 2 * time.Minute
	u, err := l.UpdateChannel(ctx, "crud/a", eventlog.SettingsPatch{MaxAge: &age})
	if err != nil {
		t.Fatalf("UpdateChannel: %v", err)
	}
	want := c
	want.Settings.MaxAge = age
	want.UpdatedAt = u.UpdatedAt
	equalChannel(t, "UpdateChannel MaxAge", u, want)
	if u.UpdatedAt.Before(c.UpdatedAt) {
		t.Errorf("UpdatedAt went back from %v to %v", c.UpdatedAt, u.UpdatedAt)
	}
	equalChannel(t, "GetChannel after update", getChannel(t, l, "crud/a"), u)
	zero, size := int64(0), int32(eventlog.MaxEventSize)
	u, err = l.UpdateChannel(ctx, "crud/a", eventlog.SettingsPatch{MaxEvents: &zero, MaxEventSize: &size})
	if err != nil {
		t.Fatalf("UpdateChannel: %v", err)
	}
	if want := (eventlog.Settings{MaxAge: age, MaxEventSize: eventlog.MaxEventSize}); u.Settings != want {
		t.Errorf("settings %+v, want %+v", u.Settings, want)
	}
	_, err = l.UpdateChannel(ctx, "crud/missing", eventlog.SettingsPatch{MaxAge: &age})
	wantErr(t, "UpdateChannel of a missing channel", err, eventlog.ErrChannelNotFound)
	wantErr(t, "DeleteChannel of a missing channel", l.DeleteChannel(ctx, "crud/missing"), eventlog.ErrChannelNotFound)

	b := createChannel(t, l, "crud/b", eventlog.DefaultSettings())
	got, err := l.GetChannels(ctx, []string{"crud/b", "crud/missing", "crud/a"})
	if err != nil {
		t.Fatalf("GetChannels: %v", err)
	}
	slices.SortFunc(got, func(x, y eventlog.Channel) int { return cmp.Compare(x.Name, y.Name) })
	if len(got) != 2 {
		t.Fatalf("GetChannels returned %v, want crud/a and crud/b", names(got))
	}
	equalChannel(t, "GetChannels crud/a", got[0], u)
	equalChannel(t, "GetChannels crud/b", got[1], b)
	got, err = l.GetChannels(ctx, nil)
	if err != nil || len(got) != 0 {
		t.Errorf("GetChannels(nil) = %v, %v; want none", names(got), err)
	}
}

// testListChannels: names in byte order, pages that join up, prefixes
// taken literally.
func testListChannels(t *testing.T, open Open) {
	l := open(t, eventlog.Options{})
	ctx := context.Background()
	created := []string{"list/e", "list/a", "list/B", "list/a/1", "lisu", "list/d", "list/c", "list/b", "other", "lis%", "list_x"}
	for _, n := range created {
		createChannel(t, l, n, eventlog.DefaultSettings())
	}
	sorted := slices.Clone(created)
	slices.Sort(sorted)
	list := func(after, prefix string, limit int) eventlog.ChannelPage {
		t.Helper()
		page, err := l.ListChannels(ctx, after, prefix, limit)
		if err != nil {
			t.Fatalf("ListChannels(%q, %q, %d): %v", after, prefix, limit, err)
		}
		return page
	}
	equalNames := func(what string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", what, got, want)
		}
	}

	for _, limit := range []int{100, 0} { // 0: no limit
		page := list("", "", limit)
		equalNames(fmt.Sprintf("everything, limit %d", limit), names(page.Channels), sorted)
		if page.Next != "" {
			t.Errorf("Next = %q on the only page", page.Next)
		}
	}

	// 7 names under "list/", pages of 3: the last page is partial.
	wantPages := [][]string{
		{"list/B", "list/a", "list/a/1"},
		{"list/b", "list/c", "list/d"},
		{"list/e"},
	}
	after := ""
	for i, want := range wantPages {
		page := list(after, "list/", 3)
		equalNames(fmt.Sprintf("page %d", i), names(page.Channels), want)
		wantNext := ""
		if i < len(wantPages)-1 {
			wantNext = want[len(want)-1]
		}
		if page.Next != wantNext {
			t.Fatalf("page %d: Next %q, want %q", i, page.Next, wantNext)
		}
		after = page.Next
	}

	// Pages of exactly the remaining size: Next may point at an empty page.
	var walked []string
	after = ""
	for range 10 {
		page := list(after, "list/", 7)
		walked = append(walked, names(page.Channels)...)
		if page.Next == "" {
			break
		}
		if len(page.Channels) != 7 {
			t.Errorf("a page of %d with Next %q", len(page.Channels), page.Next)
		}
		after = page.Next
	}
	equalNames("pages of 7", walked, slices.Concat(wantPages...))

	equalNames("after list/b", names(list("list/b", "list/", 10).Channels), []string{"list/c", "list/d", "list/e"})
	equalNames("prefix list/a", names(list("", "list/a", 10).Channels), []string{"list/a", "list/a/1"})
	equalNames("prefix lis_ (literal _)", names(list("", "lis_", 10).Channels), nil)
	equalNames("prefix list_ (literal _)", names(list("", "list_", 10).Channels), []string{"list_x"})
	equalNames("prefix lis% (literal %)", names(list("", "lis%", 10).Channels), []string{"lis%"})
	equalNames("prefix with no match", names(list("", "zzz", 10).Channels), nil)

	if err := l.DeleteChannel(ctx, "list/c"); err != nil {
		t.Fatalf("DeleteChannel: %v", err)
	}
	equalNames("after deleting list/c", names(list("list/b", "list/", 10).Channels), []string{"list/d", "list/e"})
}

// testDeleteChannel: the channel and its entries go; a channel created
// again under the name reports them as truncated.
func testDeleteChannel(t *testing.T, open Open) {
	l := open(t, eventlog.Options{})
	ctx := context.Background()
	createChannel(t, l, "del", eventlog.Settings{MaxEventSize: 100, MaxEvents: 50})
	createChannel(t, l, "keep", eventlog.DefaultSettings())
	evs := appendNew(t, l, keyed("del", "k", "1"), pub("keep", "2"), pub("del", "3"))
	_, upd, err := l.Update(ctx, "del", evs[0].Position, []byte("1b"), 0, "")
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	kept := appendNew(t, l, pub("keep", "4"))
	removedMax := upd.Position

	if err := l.DeleteChannel(ctx, "del"); err != nil {
		t.Fatalf("DeleteChannel: %v", err)
	}
	_, err = l.GetChannel(ctx, "del")
	wantErr(t, "GetChannel after delete", err, eventlog.ErrChannelNotFound)
	wantErr(t, "DeleteChannel twice", l.DeleteChannel(ctx, "del"), eventlog.ErrChannelNotFound)
	// Subscribers resuming on a deleted channel must learn of the loss.
	if tt, err := l.TruncatedThrough(ctx, []string{"keep", "del", "never-existed"}); err != nil || tt < removedMax {
		t.Errorf("TruncatedThrough of a deleted channel = %d, %v; want >= %d", tt, err, removedMax)
	}
	if tt, err := l.TruncatedThrough(ctx, []string{"keep"}); err != nil || tt != 0 {
		t.Errorf("TruncatedThrough of an untouched channel = %d, %v", tt, err)
	}
	// ReplayState reads the same, with the last committed position.
	if tt, last, err := l.ReplayState(ctx, []string{"keep", "del"}); err != nil || tt < removedMax || last != kept[0].Position {
		t.Errorf("ReplayState = %d, %d, %v; want >= %d, %d", tt, last, err, removedMax, kept[0].Position)
	}
	if tt, last, err := l.ReplayState(ctx, []string{"keep"}); err != nil || tt != 0 || last != kept[0].Position {
		t.Errorf("ReplayState of an untouched channel = %d, %d, %v; want 0, %d", tt, last, err, kept[0].Position)
	}
	if evs := readAll(t, l, "del"); len(evs) != 0 {
		t.Errorf("Read of a deleted channel returned %d entries", len(evs))
	}
	equalEvents(t, "log after delete", readAll(t, l), []eventlog.Event{evs[1], kept[0]})
	for _, p := range []int64{evs[0].Position, evs[2].Position, upd.Position} {
		_, err := l.Get(ctx, "del", p)
		wantErr(t, fmt.Sprintf("Get(del, %d)", p), err, eventlog.ErrEventNotFound)
	}
	_, _, err = l.Update(ctx, "del", evs[2].Position, []byte("x"), 0, "")
	wantErr(t, "Update in a deleted channel", err, eventlog.ErrEventNotFound)
	page, err := l.History(ctx, eventlog.HistoryQuery{Channel: "del", Limit: 10})
	if err != nil && !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Errorf("History of a deleted channel: %v", err)
	}
	if len(page.Events) != 0 {
		t.Errorf("History of a deleted channel returned %d entries", len(page.Events))
	}
	_, errs := appendSome(t, l, pub("del", "x"))
	wantErr(t, "append to a deleted channel", errs[0], eventlog.ErrChannelNotFound)

	// Created again: new settings, positions after the removed ones, the old
	// idempotency key free, and the loss reported.
	c := createChannel(t, l, "del", eventlog.DefaultSettings())
	if c.TruncatedThrough < removedMax {
		t.Errorf("re-created channel TruncatedThrough %d, want >= %d", c.TruncatedThrough, removedMax)
	}
	if c.Settings != eventlog.DefaultSettings() {
		t.Errorf("re-created channel settings %+v, want the defaults", c.Settings)
	}
	r := appendAll(t, l, keyed("del", "k", "new"))[0]
	if r.Duplicate || r.Event.Position <= removedMax {
		t.Errorf("append to the re-created channel: %+v", r)
	}
	if got := getChannel(t, l, "del").TruncatedThrough; got < removedMax {
		t.Errorf("TruncatedThrough %d after an append, want >= %d", got, removedMax)
	}

	// Deleted again: the newer loss is covered too.
	if err := l.DeleteChannel(ctx, "del"); err != nil {
		t.Fatalf("DeleteChannel: %v", err)
	}
	c = createChannel(t, l, "del", eventlog.DefaultSettings())
	if c.TruncatedThrough < r.Event.Position {
		t.Errorf("TruncatedThrough %d after a second delete, want >= %d", c.TruncatedThrough, r.Event.Position)
	}
	if got := getChannel(t, l, "keep").TruncatedThrough; got != 0 {
		t.Errorf("TruncatedThrough of an untouched channel = %d", got)
	}
}

// testDeleteAutoCreated: an append re-creates a deleted channel with the
// default settings and the loss reported.
func testDeleteAutoCreated(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	createChannel(t, l, "auto", eventlog.Settings{MaxEventSize: 5})
	evs := appendNew(t, l, pub("auto", "1"), pub("auto", "2"))
	if err := l.DeleteChannel(ctx, "auto"); err != nil {
		t.Fatalf("DeleteChannel: %v", err)
	}
	ev := appendNew(t, l, pub("auto", "longer than five"))[0]
	c := getChannel(t, l, "auto")
	if c.Settings != eventlog.DefaultSettings() {
		t.Errorf("re-created channel settings %+v, want the defaults", c.Settings)
	}
	if c.TruncatedThrough < evs[1].Position {
		t.Errorf("re-created channel TruncatedThrough %d, want >= %d", c.TruncatedThrough, evs[1].Position)
	}
	equalEvents(t, "re-created channel", readAll(t, l, "auto"), []eventlog.Event{ev})
}
