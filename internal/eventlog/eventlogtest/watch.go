package eventlogtest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
)

var watchTests = []test{
	{"Wakes", testWatchWakes},
}

var contextTests = []test{
	{"Canceled", testCanceled},
	{"WatchStops", testWatchStops},
}

// testWatchWakes: Watch wakes once at the start and after every append,
// update and delete.
func testWatchWakes(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	ctx := context.Background()
	wakes := watch(t, l)
	waitWake(t, "start", wakes)
	drain(wakes)

	ev := appendNew(t, l, pub("w", "1"))[0]
	waitWake(t, "append", wakes)
	drain(wakes)
	if _, _, err := l.Update(ctx, "w", ev.Position, []byte("2"), 0, ""); err != nil {
		t.Fatalf("Update: %v", err)
	}
	waitWake(t, "update", wakes)
	drain(wakes)
	if _, err := l.Delete(ctx, "w", ev.Position, ""); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	waitWake(t, "delete", wakes)
	drain(wakes)
	appendNew(t, l, pub("w", "3"), pub("x", "4"))
	waitWake(t, "batch append", wakes)

	// A second watcher hears the same log.
	other := watch(t, l)
	waitWake(t, "second watcher start", other)
	drain(other)
	appendNew(t, l, pub("w", "5"))
	waitWake(t, "second watcher append", other)
}

// testCanceled: a call whose context has ended fails with the context's
// error and changes nothing.
func testCanceled(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()

	_, _, err := l.Append(canceled, []eventlog.Publish{pub("c", "1")})
	wantErr(t, "Append with a canceled context", err, context.Canceled)
	_, _, err = l.Append(expired, []eventlog.Publish{pub("c", "1")})
	wantErr(t, "Append with an expired context", err, context.DeadlineExceeded)
	if h := head(t, l); h != 0 {
		t.Errorf("Head = %d after canceled appends", h)
	}
	if _, err := l.GetChannel(context.Background(), "c"); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Errorf("a canceled append created its channel: %v", err)
	}

	ev := appendNew(t, l, pub("c", "kept"))[0]
	if _, _, err := l.Update(canceled, "c", ev.Position, []byte("changed"), 0, ""); err == nil {
		t.Error("Update with a canceled context succeeded")
	}
	if _, err := l.Delete(canceled, "c", ev.Position, ""); err == nil {
		t.Error("Delete with a canceled context succeeded")
	}
	if _, err := l.CreateChannel(canceled, "c2", eventlog.DefaultSettings()); err == nil {
		t.Error("CreateChannel with a canceled context succeeded")
	}
	if err := l.DeleteChannel(canceled, "c"); err == nil {
		t.Error("DeleteChannel with a canceled context succeeded")
	}
	equalEvents(t, "log after canceled calls", readAll(t, l), []eventlog.Event{ev})
	getChannel(t, l, "c")
	if _, err := l.GetChannel(context.Background(), "c2"); !errors.Is(err, eventlog.ErrChannelNotFound) {
		t.Errorf("a canceled CreateChannel created its channel: %v", err)
	}
	if _, err := l.Read(canceled, eventlog.Query{Limit: 10}); err == nil {
		t.Error("Read with a canceled context succeeded")
	}
}

// testWatchStops: Watch returns the context's error when it ends.
func testWatchStops(t *testing.T, open Open) {
	l := open(t, eventlog.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 1)
	done := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		done <- l.Watch(ctx, func() {
			select {
			case started <- struct{}{}:
			default:
			}
		})
	})
	waitWake(t, "start", started)
	cancel()
	select {
	case err := <-done:
		wantErr(t, "Watch after cancel", err, context.Canceled)
	case <-time.After(waitTimeout):
		t.Fatalf("Watch did not return within %v of cancel", waitTimeout)
	}
}
