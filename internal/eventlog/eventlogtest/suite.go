// Package eventlogtest is the conformance suite of eventlog.Log: every
// implementation (Memory, Postgres) must pass Run. The suite checks what the
// interface promises and nothing more: positions and order exactly, times
// only as far as they are promised (set, ordered, compared with Equal to the
// value the log itself returned), so that it holds against a real database.
package eventlogtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
)

// Open returns a new, empty log whose Run is running until the test ends
// (see Start). Every subtest opens its own log, so subtests run in parallel.
type Open = func(t *testing.T, opts eventlog.Options) eventlog.Log

// Run runs the conformance suite over the logs that open returns.
func Run(t *testing.T, open func(t *testing.T, opts eventlog.Options) eventlog.Log) {
	groups := []struct {
		name  string
		tests []test
	}{
		{"Append", appendTests},
		{"Edit", editTests},
		{"Author", authorTests},
		{"Format", formatTests},
		{"Seq", seqTests},
		{"History", historyTests},
		{"Channels", channelTests},
		{"Trim", trimTests},
		{"Watch", watchTests},
		{"Context", contextTests},
		{"Errors", errorTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, open)
				})
			}
		})
	}
}

type test struct {
	name string
	fn   func(t *testing.T, open Open)
}

// Start runs l.Run until the test ends, then stops it and fails the test if
// Run returned an error. Open functions call it.
func Start(t testing.TB, l eventlog.Log) eventlog.Log {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %v of its context ending", waitTimeout)
		}
	})
	return l
}

const (
	// all is a Limit that reads everything these tests write.
	all = 1 << 20
	// waitTimeout bounds every wait for something asynchronous.
	waitTimeout = 15 * time.Second
)

func pub(channel, data string) eventlog.Publish {
	return eventlog.Publish{Channel: channel, Data: []byte(data)}
}

func keyed(channel, key, data string) eventlog.Publish {
	return eventlog.Publish{Channel: channel, Data: []byte(data), IdempotencyKey: key}
}

// appendAll appends ps and fails unless every input succeeded.
func appendAll(t testing.TB, l eventlog.Log, ps ...eventlog.Publish) []eventlog.Published {
	t.Helper()
	res, errs := appendSome(t, l, ps...)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("append input %d (%q): %v", i, ps[i].Channel, err)
		}
	}
	return res
}

// appendSome appends ps and fails only if the whole call failed or the
// result lengths are wrong.
func appendSome(t testing.TB, l eventlog.Log, ps ...eventlog.Publish) ([]eventlog.Published, []error) {
	t.Helper()
	res, errs, err := l.Append(context.Background(), ps)
	if err != nil {
		t.Fatalf("append %d events: %v", len(ps), err)
	}
	if len(res) != len(ps) || len(errs) != len(ps) {
		t.Fatalf("append %d events: got %d results and %d errors", len(ps), len(res), len(errs))
	}
	return res, errs
}

// appendNew appends ps, which must all be new, and returns their events.
func appendNew(t testing.TB, l eventlog.Log, ps ...eventlog.Publish) []eventlog.Event {
	t.Helper()
	res := appendAll(t, l, ps...)
	evs := make([]eventlog.Event, len(res))
	for i, r := range res {
		if r.Duplicate {
			t.Fatalf("append input %d: Duplicate, want a new event", i)
		}
		evs[i] = r.Event
	}
	return evs
}

func read(t testing.TB, l eventlog.Log, q eventlog.Query) []eventlog.Event {
	t.Helper()
	evs, err := l.Read(context.Background(), q)
	if err != nil {
		t.Fatalf("Read(%+v): %v", q, err)
	}
	return evs
}

func readAll(t testing.TB, l eventlog.Log, channels ...string) []eventlog.Event {
	t.Helper()
	return read(t, l, eventlog.Query{Channels: channels, Limit: all})
}

func head(t testing.TB, l eventlog.Log) int64 {
	t.Helper()
	h, err := l.Head(context.Background())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

func getChannel(t testing.TB, l eventlog.Log, name string) eventlog.Channel {
	t.Helper()
	c, err := l.GetChannel(context.Background(), name)
	if err != nil {
		t.Fatalf("GetChannel(%q): %v", name, err)
	}
	return c
}

func createChannel(t testing.TB, l eventlog.Log, name string, s eventlog.Settings) eventlog.Channel {
	t.Helper()
	c, err := l.CreateChannel(context.Background(), name, s)
	if err != nil {
		t.Fatalf("CreateChannel(%q): %v", name, err)
	}
	return c
}

func trim(t testing.TB, l eventlog.Log, now time.Time) int64 {
	t.Helper()
	n, err := l.Trim(context.Background(), now)
	if err != nil {
		t.Fatalf("Trim(%v): %v", now, err)
	}
	return n
}

// wantErr fails unless errors.Is(err, target).
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// wantConflict fails unless err is an IdempotencyConflictError naming key,
// channel and the stored event's position.
func wantConflict(t testing.TB, what string, err error, key, channel string, pos int64) {
	t.Helper()
	var c *eventlog.IdempotencyConflictError
	if !errors.As(err, &c) || !errors.Is(err, eventlog.ErrIdempotencyConflict) {
		t.Errorf("%s: got error %v, want an IdempotencyConflictError", what, err)
		return
	}
	if *c != (eventlog.IdempotencyConflictError{Key: key, Channel: channel, Position: pos}) {
		t.Errorf("%s: %+v, want key %q, channel %q, position %d", what, *c, key, channel, pos)
	}
}

// wantTooLarge fails unless err is a TooLargeError with size and limit.
func wantTooLarge(t testing.TB, what string, err error, size, limit int) {
	t.Helper()
	var tl *eventlog.TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, eventlog.ErrTooLarge) {
		t.Errorf("%s: got error %v, want a TooLargeError", what, err)
		return
	}
	if tl.Size != size || tl.Limit != limit {
		t.Errorf("%s: TooLargeError{Size: %d, Limit: %d}, want {%d, %d}", what, tl.Size, tl.Limit, size, limit)
	}
}

func positions(evs []eventlog.Event) []int64 {
	ps := make([]int64, len(evs))
	for i := range evs {
		ps[i] = evs[i].Position
	}
	return ps
}

func equalPositions(t testing.TB, what string, got, want []int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d positions %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: position [%d] is %d, want %d (got %v, want %v)", what, i, got[i], want[i], got, want)
		}
	}
}

// diff describes how got differs from want, "" if not at all. Times are
// compared with Equal.
func diff(got, want eventlog.Event) string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s %v, want %v", field, g, w)) }
	if got.Position != want.Position {
		add("Position", got.Position, want.Position)
	}
	if got.Channel != want.Channel {
		add("Channel", got.Channel, want.Channel)
	}
	if got.Type != want.Type {
		add("Type", got.Type, want.Type)
	}
	if !bytes.Equal(got.Data, want.Data) {
		add("Data", fmt.Sprintf("%q", got.Data), fmt.Sprintf("%q", want.Data))
	}
	if got.Kind != want.Kind {
		add("Kind", got.Kind, want.Kind)
	}
	if got.Format != want.Format {
		add("Format", got.Format, want.Format)
	}
	if got.Target != want.Target {
		add("Target", got.Target, want.Target)
	}
	if got.IdempotencyKey != want.IdempotencyKey {
		add("IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		add("CreatedAt", got.CreatedAt, want.CreatedAt)
	}
	if !got.UpdatedAt.Equal(want.UpdatedAt) {
		add("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	}
	if got.Deleted != want.Deleted {
		add("Deleted", got.Deleted, want.Deleted)
	}
	if got.Author != want.Author {
		add("Author", fmt.Sprintf("%q", got.Author), fmt.Sprintf("%q", want.Author))
	}
	if got.Seq != want.Seq {
		add("Seq", got.Seq, want.Seq)
	}
	if !maps.Equal(got.Tags, want.Tags) {
		add("Tags", got.Tags, want.Tags)
	}
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint(d)
}

func equalEvent(t testing.TB, what string, got, want eventlog.Event) {
	t.Helper()
	if d := diff(got, want); d != "" {
		t.Errorf("%s: %s", what, d)
	}
}

func equalEvents(t testing.TB, what string, got, want []eventlog.Event) {
	t.Helper()
	equalPositions(t, what, positions(got), positions(want))
	for i := range got {
		equalEvent(t, fmt.Sprintf("%s [%d]", what, i), got[i], want[i])
	}
}

// recent fails unless ts is set and near the local clock: the log may use
// another clock (the database's), so only gross errors are caught.
func recent(t testing.TB, what string, ts time.Time) {
	t.Helper()
	if ts.IsZero() {
		t.Errorf("%s is zero", what)
		return
	}
	if d := time.Since(ts); d > time.Hour || d < -time.Hour {
		t.Errorf("%s is %v, %v away from now", what, ts, d)
	}
}

// watch runs l.Watch until the test ends and returns a channel that
// receives (coalesced) wake-ups. It fails the test if wake is ever called
// concurrently or Watch ends with something other than its context's error.
func watch(t testing.TB, l eventlog.Log) <-chan struct{} {
	t.Helper()
	wakes := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var inWake, overlaps atomic.Int32
	go func() {
		done <- l.Watch(ctx, func() {
			if inWake.Add(1) != 1 {
				overlaps.Add(1)
			}
			select {
			case wakes <- struct{}{}:
			default:
			}
			inWake.Add(-1)
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
			if n := overlaps.Load(); n != 0 {
				t.Errorf("wake was called concurrently %d times", n)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Watch did not return within %v of its context ending", waitTimeout)
		}
	})
	return wakes
}

// waitWake fails unless a wake-up arrives within waitTimeout.
func waitWake(t testing.TB, what string, wakes <-chan struct{}) {
	t.Helper()
	select {
	case <-wakes:
	case <-time.After(waitTimeout):
		t.Fatalf("%s: no wake-up within %v", what, waitTimeout)
	}
}

// drain discards a pending wake-up, if any.
func drain(wakes <-chan struct{}) {
	select {
	case <-wakes:
	default:
	}
}

// NamedLog is a log and the name of its implementation.
type NamedLog struct {
	Name string
	Log  eventlog.Log
}

// Each returns a running Memory and a running Postgres (on a fresh schema
// of the test database, see pgtest.Schema; it logs nothing), both with opts,
// for tests that must behave alike on both. They stop when tb ends.
func Each(tb testing.TB, opts eventlog.Options) []NamedLog {
	tb.Helper()
	pool, schema := pgtest.Schema(tb)
	return []NamedLog{
		{"memory", Start(tb, eventlog.NewMemory(opts))},
		{"postgres", Start(tb, eventlog.OpenPostgres(pool, eventlog.PostgresOptions{
			Options:       opts,
			NotifyChannel: schema,
			Logger:        slog.New(slog.DiscardHandler),
		}))},
	}
}
