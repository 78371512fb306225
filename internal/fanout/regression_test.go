package fanout_test

// Regression tests for findings of a review of the subscription core; each
// failed before its fix.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
)

// DeleteChannel's contract (channel_service.proto, Log.DeleteChannel) says a
// subscriber resuming from a cursor before the deletion gets
// history_truncated. GetChannels leaves deleted channels out, so
// Subscription.truncatedThrough never sees them: the gap is silent.
func TestResumeAfterChannelDeletionIsTruncated(t *testing.T) {
	log, hub := start(t, fanout.Options{})
	ctx := context.Background()
	publish(t, log, "room", 3) // positions 1..3
	if err := log.DeleteChannel(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	sub, err := hub.Subscribe(ctx, []string{"room"}, ptr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if st := sub.Start(); !st.Truncated || st.TruncatedThrough != 3 {
		t.Fatalf("resume at 0 after the channel lost 1..3: Start = %+v, want Truncated through 3", st)
	}
}

// A cursor beyond the log's head (a client resuming after the embedded
// memory log restarted, or a cursor from another database) is taken as
// "already seen": every new event up to it is dropped by the dedupe with no
// signal. Subscribe should reject it (or report a reset).
func TestCursorAheadOfLogIsRefused(t *testing.T) {
	log, hub := start(t, fanout.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// The client saw position 50 before the (memory) server restarted.
	sub, err := hub.Subscribe(ctx, []string{"room"}, ptr(50))
	var ahead *fanout.CursorAheadError
	if errors.As(err, &ahead) && errors.Is(err, fanout.ErrCursorAhead) && ahead.Cursor == 50 && ahead.Head == 0 {
		return // refused, saying why
	}
	if err != nil {
		t.Fatalf("Subscribe(cursor=50 > head=0) = %v, want a CursorAheadError", err)
	}
	defer sub.Close()
	if st := sub.Start(); st.Truncated {
		return // so is an explicit signal
	}
	publish(t, log, "room", 3) // positions 1..3 after the restart
	msg, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("3 events published after Subscribe(cursor=50 > head=0) never arrive and nothing says why: %v", err)
	}
	_ = msg
}

// Subscribe registers (Hub.mu released) and only then marks the subscription
// live. Entries dispatched in between find live == false, and if they fill
// the queue they set overflowed = true. markLive never clears it, so once
// the consumer drains the queue push() takes the "overflowed" branch and
// drops every later entry silently: the subscription never ends and never
// delivers again. QueueSize 1 makes the window easy to hit; with the default
// 4096 it takes a burst of > 4096 entries in that window.
func TestLiveSubscribeUnderContentionNeverStalls(t *testing.T) {
	log, hub := start(t, fanout.Options{QueueSize: 1, PollInterval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	<-hub.Ready()
	// Keep the memory log small: retention trims behind the publisher.
	if _, err := log.CreateChannel(ctx, "c", eventlog.Settings{MaxEvents: 10000, MaxEventSize: 1024}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		ps := make([]eventlog.Publish, 128)
		for i := range ps {
			ps[i] = eventlog.Publish{Channel: "c"}
		}
		for n := 0; ctx.Err() == nil; n++ {
			if n%100 == 0 {
				_, _ = log.Trim(ctx, time.Now())
			}
			if _, _, err := log.Append(ctx, ps); err != nil {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	})

	// Several subscribers contend for Hub.mu while dispatch holds it for
	// whole batches; once the mutex is in starvation mode, register's Unlock
	// hands Hub.mu straight to dispatch, which then runs inside the window.
	deadline := time.Now().Add(3 * time.Second)
	var failed sync.Once
	var sw sync.WaitGroup
	for range 4 {
		sw.Go(func() {
			for attempt := 0; time.Now().Before(deadline) && ctx.Err() == nil; attempt++ {
				sub, err := hub.Subscribe(ctx, []string{"c"}, nil)
				if err != nil {
					return
				}
				// Correct behaviour with QueueSize 1 and 128-entry batches:
				// within a dispatch or two Next yields an entry or ends
				// with slow consumer.
				var stuck bool
				for range 3 {
					before := hub.Head()
					nctx, ncancel := context.WithTimeout(ctx, 2*time.Second)
					_, err := sub.Next(nctx)
					ncancel()
					if errors.Is(err, context.DeadlineExceeded) {
						stuck = hub.Head()-before >= 64
						break
					}
					if err != nil {
						break // slow consumer: the expected, resumable end
					}
				}
				sub.Close()
				if stuck {
					failed.Do(func() {
						t.Errorf("attempt %d: live subscription silently stopped receiving while the hub dispatched entries to its channel", attempt)
					})
					cancel()
					return
				}
			}
		})
	}
	sw.Wait()
}

// Subscribe with no channels: slices.Compact(slices.Sorted(...)) of an empty
// list is nil, and Query.Channels == nil means "every channel". The RPCs
// validate min_items = 1, but the core every transport adapts replays the
// whole log of every channel to such a subscription.
func TestSubscribeWithoutChannelsIsRefused(t *testing.T) {
	log, hub := start(t, fanout.Options{})
	publish(t, log, "secret", 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sub, err := hub.Subscribe(ctx, []string{}, ptr(0))
	if errors.Is(err, fanout.ErrNoChannels) {
		return
	}
	if err != nil {
		t.Fatalf("Subscribe with no channels = %v, want ErrNoChannels", err)
	}
	defer sub.Close()
	if msg, err := sub.Next(ctx); err == nil && msg.Entry != nil {
		t.Fatalf("a subscription to no channels received %q from channel %q", msg.Entry.Event().Data, msg.Entry.Event().Channel)
	}
}
