package eventlogtest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
)

var errorTests = []test{
	{"Messages", testErrorMessages},
}

// testErrorMessages pins the text of every error a log returns for a
// client's mistake. Both implementations must word each one exactly so,
// whichever log a server runs on: services send these texts to clients.
func testErrorMessages(t *testing.T, open Open) {
	ctx := context.Background()
	l := open(t, eventlog.Options{})
	check := func(what string, err, sentinel error, want string) {
		t.Helper()
		if !errors.Is(err, sentinel) {
			t.Errorf("%s: got error %v, want %v", what, err, sentinel)
			return
		}
		if err.Error() != want {
			t.Errorf("%s:\n got  %s\n want %s", what, err, want)
		}
	}
	appendErr := func(p eventlog.Publish) error {
		t.Helper()
		_, errs := appendSome(t, l, p)
		return errs[0]
	}

	check("append to a missing channel", appendErr(pub("missing", "x")), eventlog.ErrChannelNotFound,
		`append to "missing": channel not found`)
	_, err := l.GetChannel(ctx, "missing")
	check("get a missing channel", err, eventlog.ErrChannelNotFound, `get channel "missing": channel not found`)
	_, err = l.UpdateChannel(ctx, "missing", eventlog.SettingsPatch{})
	check("update a missing channel", err, eventlog.ErrChannelNotFound, `update channel "missing": channel not found`)
	check("delete a missing channel", l.DeleteChannel(ctx, "missing"), eventlog.ErrChannelNotFound,
		`delete channel "missing": channel not found`)

	createChannel(t, l, "ch", eventlog.Settings{MaxEventSize: 4})
	_, err = l.CreateChannel(ctx, "ch", eventlog.DefaultSettings())
	check("create an existing channel", err, eventlog.ErrChannelExists, `create channel "ch": channel already exists`)
	check("append too much", appendErr(pub("ch", "12345")), eventlog.ErrTooLarge,
		`append to "ch": event data is 5 bytes, the channel's max_event_size is 4`)

	ev := appendNew(t, l, keyed("ch", "k-1", "a"))[0] // position 1
	check("reuse a key", appendErr(keyed("ch", "k-1", "b")), eventlog.ErrIdempotencyConflict,
		`append to "ch": idempotency key "k-1" was already used on channel "ch" for a different event (position 1); `+
			`use a new key for a new event, or resend exactly the same type and data to retry`)
	_, _, err = l.Update(ctx, "ch", ev.Position, []byte("12345"), 0, "")
	check("update with too much", err, eventlog.ErrTooLarge,
		`update 1 of "ch": event data is 5 bytes, the channel's max_event_size is 4`)
	_, upd, err := l.Update(ctx, "ch", ev.Position, []byte("b"), 0, "") // position 2
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	const updMsg = `entry 2 is an UPDATED entry: edit the published event at position 1`
	_, _, err = l.Update(ctx, "ch", upd.Position, []byte("c"), 0, "")
	check("update an Updated entry", err, eventlog.ErrNotEditable, `update 2 of "ch": `+updMsg)
	_, err = l.Delete(ctx, "ch", upd.Position, "")
	check("delete an Updated entry", err, eventlog.ErrNotEditable, `delete 2 of "ch": `+updMsg)

	del, err := l.Delete(ctx, "ch", ev.Position, "") // position 3
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err = l.Delete(ctx, "ch", ev.Position, "")
	check("delete twice", err, eventlog.ErrNotEditable, `delete 1 of "ch": event 1 was already deleted`)
	_, _, err = l.Update(ctx, "ch", ev.Position, []byte("c"), 0, "")
	check("update a deleted event", err, eventlog.ErrNotEditable, `update 1 of "ch": event 1 was already deleted`)
	_, err = l.Delete(ctx, "ch", del.Position, "")
	check("delete a Deleted entry", err, eventlog.ErrNotEditable,
		`delete 3 of "ch": entry 3 is a DELETED entry: the event at position 1 was deleted and cannot be edited`)
	var ne *eventlog.NotEditableError
	if !errors.As(err, &ne) || *ne != (eventlog.NotEditableError{Position: 3, Kind: eventlog.KindDeleted, Target: 1}) {
		t.Errorf("delete a Deleted entry: %#v, want a NotEditableError for entry 3 of event 1", ne)
	}

	_, err = l.Get(ctx, "ch", 99)
	check("get a missing event", err, eventlog.ErrEventNotFound, `get 99 of "ch": event not found`)
	_, _, err = l.Update(ctx, "ch", 99, nil, 0, "")
	check("update a missing event", err, eventlog.ErrEventNotFound, `update 99 of "ch": event not found`)
	_, err = l.Delete(ctx, "other", ev.Position, "")
	check("delete in the wrong channel", err, eventlog.ErrEventNotFound, `delete 1 of "other": event not found`)

	auto := open(t, eventlog.Options{AutoCreate: true})
	_, errs := appendSome(t, auto, pub("new", strings.Repeat("x", eventlog.DefaultMaxEventSize+1)))
	check("append too much to a new channel", errs[0], eventlog.ErrTooLarge,
		`append to "new": event data is 65537 bytes, the channel's max_event_size is 65536`)
}
