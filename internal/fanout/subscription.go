package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/wire"
)

// EndReason says why the server ended a subscription.
type EndReason int

const (
	// ReasonSlowConsumer: the live queue filled because the consumer did
	// not keep up.
	ReasonSlowConsumer EndReason = iota + 1
	// ReasonShutdown: the hub stopped (server shutting down).
	ReasonShutdown
	// ReasonUnavailable: the log failed while replaying.
	ReasonUnavailable
	// ReasonStopped: the owner stopped it (Stop), e.g. its credential
	// expired; EndError.Err says why.
	ReasonStopped
)

func (r EndReason) String() string {
	switch r {
	case ReasonSlowConsumer:
		return "slow consumer"
	case ReasonShutdown:
		return "server shutting down"
	case ReasonUnavailable:
		return "event log unavailable"
	case ReasonStopped:
		return "stopped"
	}
	return "unknown"
}

// metricsReason is the end's reason as a metrics label; a Stop cause may
// name its own (services' expired token does).
func (e *EndError) metricsReason() string {
	switch e.Reason {
	case ReasonSlowConsumer:
		return metrics.EndSlowConsumer
	case ReasonShutdown:
		return metrics.EndShutdown
	case ReasonUnavailable:
		return metrics.EndUnavailable
	}
	var named interface{ MetricsReason() string }
	if errors.As(e.Err, &named) {
		return named.MetricsReason()
	}
	return metrics.EndStopped
}

// Sentinels matched by errors.Is on an *EndError.
var (
	ErrSlowConsumer = errors.New("slow consumer")
	ErrShutdown     = errors.New("server shutting down")
	// ErrClosed is returned by Next after Close.
	ErrClosed = errors.New("subscription closed")
	// ErrNoChannels: Subscribe needs at least one channel.
	ErrNoChannels = errors.New("subscribe needs at least one channel")
	// ErrNotReady: the hub has not read the log's head yet (the log is
	// unreachable since start); retry later.
	ErrNotReady = errors.New("server is starting: the event log is not reachable yet; retry")
	// ErrCursorAhead matches *CursorAheadError.
	ErrCursorAhead = errors.New("cursor is ahead of the log")
)

// readyWait bounds how long Subscribe waits for a starting hub.
const readyWait = 5 * time.Second

// CursorAheadError: a cursor beyond every position the log has assigned,
// e.g. kept across a reset of the embedded log or from another deployment.
// Delivering "after" it would silently skip new events, so it is refused.
type CursorAheadError struct {
	Cursor, Head int64
}

func (e *CursorAheadError) Error() string {
	return fmt.Sprintf("cursor %d is ahead of the log's last position %d (was the log reset?): subscribe from 0 or without a cursor, and reload state", e.Cursor, e.Head)
}

func (e *CursorAheadError) Is(target error) bool { return target == ErrCursorAhead }

// EndError ends a subscription. Resume by subscribing again with
// LastPosition as the cursor: nothing is lost.
type EndError struct {
	Reason       EndReason
	LastPosition int64
	Err          error // the log's error for ReasonUnavailable
}

func (e *EndError) Error() string {
	msg := fmt.Sprintf("subscription ended (%s); resume from position %d", e.Reason, e.LastPosition)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is matches ErrSlowConsumer, ErrShutdown and eventlog.ErrUnavailable.
func (e *EndError) Is(target error) bool {
	switch e.Reason {
	case ReasonSlowConsumer:
		return target == ErrSlowConsumer
	case ReasonShutdown:
		return target == ErrShutdown
	case ReasonUnavailable:
		return target == eventlog.ErrUnavailable
	}
	return false
}

func (e *EndError) Unwrap() error { return e.Err }

// Start describes where a subscription starts.
type Start struct {
	// Cursor is the position replay starts after.
	Cursor int64
	// Truncated is set when entries after Cursor in a subscribed channel
	// were removed (retention or channel deletion) up to TruncatedThrough.
	Truncated        bool
	TruncatedThrough int64
}

// Message is what Next returns: an entry, or a notice that entries being
// replayed were removed meanwhile (Truncation).
type Message struct {
	Entry *wire.Entry // shared by every subscription that delivers it
	// Truncation, when non-nil, reports that a retention run removed entries
	// up to this position while they were being replayed.
	Truncation *Start
	// Checkpoint, when non-zero, is the position a filtered subscription
	// has advanced to past entries its filter dropped: a client resumes
	// from it as from an entry's position.
	Checkpoint int64
	// Ephemeral, when non-nil, is what Hub.Broadcast was given (a signal or
	// a presence change): not an entry, no position, LastPosition unmoved.
	Ephemeral any
}

// Subscription delivers the entries of its channels after a cursor, each
// exactly once and in position order. One goroutine calls Next; Close is
// safe from any goroutine.
type Subscription struct {
	hub      *Hub
	channels []string
	start    Start
	filter   *Filter // nil: every entry

	closedFlag atomic.Bool // Close was called; checked per entry by Next

	// Owned by the goroutine calling Next.
	lastSent  int64
	upTo      int64 // replay bound H
	replaying bool
	page      []*wire.Entry
	// fromWindow: page is the whole replay, (cursor, upTo], taken from
	// the hub's window; once it is delivered, replay is done.
	fromWindow bool
	truncSeen  int64
	endErr     error
	dropped    int       // entries dropped by the filter since the last delivery or checkpoint
	dropStart  time.Time // when the first of them was dropped

	mu         sync.Mutex // guards the fields below; taken after Hub.mu
	queue      []*wire.Entry
	queued     int64 // the queue's bytes (wire.Entry.Cost)
	live       bool  // replay finished: a full queue now ends the subscription
	overflowed bool  // the queue filled during replay: re-register afterwards
	ended      EndReason
	endCause   error // with ReasonStopped: Stop's cause
	closed     bool
	signal     chan struct{} // cap 1: queue or state changed
	eph        []any         // ephemeral messages (Broadcast), delivered before entries

	presence atomic.Bool // receives presence broadcasts (WantPresence)

	untrack  func() // counts the subscription closed in the metrics
	replayed bool   // the replay was counted
}

// Subscribe registers a subscription to channels. With cursor nil it
// delivers live entries only; otherwise it first replays entries after
// *cursor. The subscription must be closed.
func (h *Hub) Subscribe(ctx context.Context, channels []string, cursor *int64) (*Subscription, error) {
	return h.SubscribeFilter(ctx, channels, cursor, nil)
}

// SubscribeFilter is Subscribe delivering only the entries f matches (nil:
// all). Its position still advances past the entries f drops, and Next
// reports it with Checkpoint messages (see CheckpointEvery).
func (h *Hub) SubscribeFilter(ctx context.Context, channels []string, cursor *int64, f *Filter) (*Subscription, error) {
	if len(channels) == 0 {
		return nil, ErrNoChannels
	}
	select {
	case <-h.ready:
	case <-h.stopped:
		return nil, ErrStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(readyWait):
		return nil, ErrNotReady
	}
	s := &Subscription{
		hub:      h,
		channels: slices.Compact(slices.Sorted(slices.Values(channels))),
		signal:   make(chan struct{}, 1),
		filter:   f,
	}
	head, err := h.register(s, cursor)
	if err != nil {
		return nil, err
	}
	if cursor == nil {
		s.start.Cursor = head
		s.lastSent = head
		s.untrack = h.opts.Metrics.SubOpened(ctx)
		return s, nil
	}
	s.start.Cursor = *cursor
	s.lastSent = *cursor
	if *cursor > head {
		// This hub may lag the database by a moment (another instance
		// served the cursor); only the log can tell a reset.
		logHead, err := h.log.Head(ctx)
		if err != nil {
			h.remove(s)
			return nil, fmt.Errorf("read the log head: %w", err)
		}
		if *cursor > logHead {
			h.remove(s)
			return nil, &CursorAheadError{Cursor: *cursor, Head: logHead}
		}
	}
	var t int64
	if s.fromWindow {
		// One round trip instead of three (this, the replay's page and
		// truncated_through after it).
		var last int64
		t, last, err = h.log.ReplayState(ctx, s.channels)
		if err != nil {
			h.remove(s)
			return nil, fmt.Errorf("read channel state: %w", err)
		}
		if h.replayFromWindow(ctx, *cursor, t, last) {
			h.opts.Metrics.Replay(metrics.ReplayWindow, true, len(s.page))
			s.replayed = true
		} else {
			clear(s.page)
			s.page, s.fromWindow = nil, false
		}
	} else if t, err = s.truncatedThrough(ctx); err != nil {
		h.remove(s)
		return nil, err
	}
	s.truncSeen = t
	if t > *cursor {
		s.start.Truncated = true
		s.start.TruncatedThrough = t
		h.opts.Metrics.Truncated()
	}
	s.untrack = h.opts.Metrics.SubOpened(ctx)
	return s, nil
}

// Start reports where the subscription starts and whether history was
// truncated. Send it to the client before the first entry.
func (s *Subscription) Start() Start { return s.start }

// Channels returns the subscribed channels, sorted.
func (s *Subscription) Channels() []string { return s.channels }

// LastPosition returns the position of the last entry Next returned, or the
// start cursor. Call it from the goroutine that calls Next.
func (s *Subscription) LastPosition() int64 { return s.lastSent }

// Close ends the subscription. Safe to call more than once and from any
// goroutine; Next returns ErrClosed from then on.
func (s *Subscription) Close() {
	if !s.closedFlag.Swap(true) && s.untrack != nil {
		s.untrack()
	}
	s.hub.remove(s)
	s.mu.Lock()
	s.closed = true
	s.queue = nil
	s.queued = 0
	s.mu.Unlock()
	s.notify()
}

// Stop ends the subscription on its owner's behalf, for example when the
// credential it was opened with expires: Next returns an *EndError with
// ReasonStopped and cause as its Err, after what is already queued is
// dropped, so the owner learns the position to resume from. Safe from any
// goroutine; the first end wins.
func (s *Subscription) Stop(cause error) {
	s.hub.remove(s)
	s.mu.Lock()
	if s.ended == 0 {
		s.ended = ReasonStopped
		s.endCause = cause
		s.queue = nil
		s.queued = 0
	}
	s.mu.Unlock()
	s.notify()
}

// endError is the error of an ended subscription, at its last position.
func (s *Subscription) endError(r EndReason) error {
	e := &EndError{Reason: r, LastPosition: s.lastSent}
	if r == ReasonStopped {
		s.mu.Lock()
		e.Err = s.endCause
		s.mu.Unlock()
	}
	return e
}

// Next returns the next message, blocking until there is one, ctx ends or
// the subscription ends (*EndError, or ErrClosed after Close).
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	return s.next(ctx, true)
}

// TryNext is Next without waiting for new entries: once replay is done and
// nothing is queued it returns ErrWouldBlock at once. Long-poll uses it to
// take what is ready after the first entry.
func (s *Subscription) TryNext(ctx context.Context) (Message, error) {
	return s.next(ctx, false)
}

// ErrWouldBlock is returned by TryNext when no entry is ready.
var ErrWouldBlock = errors.New("no entry ready")

func (s *Subscription) next(ctx context.Context, block bool) (Message, error) {
	if s.endErr != nil {
		return Message{}, s.endErr
	}
	for {
		if s.closedFlag.Load() {
			return Message{}, s.fail(ErrClosed)
		}
		if v, ok := s.popEphemeral(); ok {
			return Message{Ephemeral: v}, nil
		}
		if len(s.page) > 0 {
			e := s.page[0]
			s.page[0] = nil
			s.page = s.page[1:]
			if e.Position() <= s.lastSent {
				continue
			}
			s.lastSent = e.Position()
			if m, ok := s.deliver(e); ok {
				return m, nil
			}
			continue
		}
		if s.replaying && s.fromWindow {
			s.fromWindow = false
			s.finishReplay()
			continue
		}
		if s.replaying {
			msg, ok, err := s.replayPage(ctx)
			if err != nil {
				return Message{}, s.fail(err)
			}
			if ok {
				return msg, nil
			}
			continue
		}
		var (
			due   <-chan time.Time
			timer *time.Timer
		)
		if s.dropped > 0 && block {
			timer = time.NewTimer(time.Until(s.dropStart.Add(CheckpointAfter)))
			due = timer.C
		}
		e, err := s.nextLive(ctx, block, due)
		if timer != nil {
			timer.Stop()
		}
		if err == errEphemeral {
			continue
		}
		if err == ErrWouldBlock {
			return Message{}, err
		}
		if err == errCheckpointDue {
			s.dropped = 0
			return Message{Checkpoint: s.lastSent}, nil
		}
		if err != nil {
			return Message{}, s.fail(err)
		}
		if e.Position() <= s.lastSent {
			continue
		}
		s.lastSent = e.Position()
		if m, ok := s.deliver(e); ok {
			return m, nil
		}
	}
}

// errCheckpointDue: nextLive waited CheckpointAfter since the first entry
// dropped by the filter and nothing was delivered.
var errCheckpointDue = errors.New("checkpoint due")

// deliver returns the message for e, whose position is now lastSent: e
// itself when the filter passes it, a checkpoint when dropping it ends a
// run of CheckpointEvery drops (or one that began CheckpointAfter ago),
// else nothing.
func (s *Subscription) deliver(e *wire.Entry) (Message, bool) {
	if s.filter.Match(e.Event()) {
		s.dropped = 0
		return Message{Entry: e}, true
	}
	s.dropped++
	if s.dropped == 1 {
		s.dropStart = time.Now()
		return Message{}, false
	}
	if s.dropped >= CheckpointEvery || time.Since(s.dropStart) >= CheckpointAfter {
		s.dropped = 0
		return Message{Checkpoint: s.lastSent}, true
	}
	return Message{}, false
}

// fail records a terminal error so later calls return it too; context
// errors are not terminal.
func (s *Subscription) fail(err error) error {
	var end *EndError
	if errors.As(err, &end) || errors.Is(err, ErrClosed) {
		// Terminal, even when it wraps a database timeout (which matches
		// context.DeadlineExceeded).
		s.endErr = err
		s.hub.remove(s)
		if end != nil {
			s.hub.opts.Metrics.SubEnded(end.metricsReason())
		}
	}
	return err
}

// replayPage reads the next page of (lastSent, upTo] into s.page, or ends
// replay. It returns a Truncation message when retention removed entries
// while they were being replayed.
func (s *Subscription) replayPage(ctx context.Context) (Message, bool, error) {
	s.mu.Lock()
	closed, ended := s.closed, s.ended
	s.mu.Unlock()
	if closed {
		return Message{}, false, ErrClosed
	}
	if ended != 0 {
		return Message{}, false, s.endError(ended)
	}
	from := s.lastSent
	page, err := s.hub.log.Read(ctx, eventlog.Query{
		Channels: s.channels, After: from, UpTo: s.upTo, Limit: s.hub.opts.ReplayPage, MaxBytes: s.hub.opts.ReplayBytes,
	})
	if err != nil {
		if ctx.Err() != nil {
			return Message{}, false, ctx.Err()
		}
		return Message{}, false, &EndError{Reason: ReasonUnavailable, LastPosition: s.lastSent, Err: err}
	}
	// Retention removes entries and raises truncated_through in one
	// transaction, so reading it after the page tells whether the page may
	// lack entries in (from, t].
	t, err := s.truncatedThrough(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Message{}, false, ctx.Err()
		}
		return Message{}, false, &EndError{Reason: ReasonUnavailable, LastPosition: s.lastSent, Err: err}
	}
	s.page = s.hub.intern(page)
	s.hub.opts.Metrics.Replay(metrics.ReplayLog, !s.replayed, len(page))
	s.replayed = true
	if !full(page, s.hub.opts.ReplayPage, s.hub.opts.ReplayBytes) {
		s.finishReplay()
	}
	if t > s.truncSeen {
		s.truncSeen = t
		if t > from {
			s.hub.opts.Metrics.Truncated()
			return Message{Truncation: &Start{Cursor: from, Truncated: true, TruncatedThrough: t}}, true, nil
		}
	}
	return Message{}, false, nil
}

// finishReplay switches to live delivery, or, when the queue overflowed
// while replaying, re-registers at the current head and keeps replaying.
func (s *Subscription) finishReplay() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overflowed {
		s.overflowed = false
		clear(s.queue)
		s.queue = s.queue[:0] // every dropped or queued entry is <= head: replay covers it
		s.queued = 0
		s.upTo = h.head
		return
	}
	s.replaying = false
	s.live = true
}

func (s *Subscription) nextLive(ctx context.Context, block bool, due <-chan time.Time) (*wire.Entry, error) {
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, ErrClosed
		case s.ended != 0:
			reason := s.ended
			s.mu.Unlock()
			return nil, s.endError(reason)
		case len(s.eph) > 0:
			s.mu.Unlock()
			return nil, errEphemeral
		case len(s.queue) > 0:
			e := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.queued -= e.Cost()
			if len(s.queue) == 0 {
				s.queue = nil // let the backing array go; idle subscriptions hold nothing
			}
			s.mu.Unlock()
			return e, nil
		}
		s.mu.Unlock()
		if !block {
			return nil, ErrWouldBlock
		}
		select {
		case <-s.signal:
		case <-due:
			return nil, errCheckpointDue
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// push queues e; it is called by the hub under Hub.mu and never blocks.
// It returns false when the subscription must be removed from the hub.
func (s *Subscription) push(e *wire.Entry) bool {
	s.mu.Lock()
	if s.closed || s.ended != 0 {
		s.mu.Unlock()
		return false
	}
	c := e.Cost()
	// A queue holds at least one entry, whatever its size.
	if len(s.queue) >= s.hub.opts.QueueSize || len(s.queue) > 0 && s.queued+c > int64(s.hub.opts.QueueBytes) {
		if !s.live {
			// Replaying: the log has the entry; replay picks it up after
			// re-registering (finishReplay).
			s.overflowed = true
			s.mu.Unlock()
			return true
		}
		s.ended = ReasonSlowConsumer
		s.queue = nil
		s.queued = 0
		s.mu.Unlock()
		s.notify()
		return false
	}
	if s.overflowed {
		s.mu.Unlock()
		return true
	}
	s.queue = append(s.queue, e)
	s.queued += c
	s.mu.Unlock()
	s.notify()
	return true
}

// errEphemeral: nextLive found an ephemeral message queued; next takes it.
var errEphemeral = errors.New("ephemeral message queued")

// WantPresence makes the subscription receive presence broadcasts from now
// on. Call it before reading the presence set the client starts from.
func (s *Subscription) WantPresence() { s.presence.Store(true) }

// Prepend queues messages ahead of every ephemeral message queued so far
// (a presence snapshot read after WantPresence: changes that arrived
// meanwhile follow it, and replaying them over it is harmless).
func (s *Subscription) Prepend(vs []any) {
	if len(vs) == 0 {
		return
	}
	s.mu.Lock()
	s.eph = append(append(make([]any, 0, len(vs)+len(s.eph)), vs...), s.eph...)
	s.mu.Unlock()
	s.notify()
}

func (s *Subscription) popEphemeral() (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.eph) == 0 || s.closed || s.ended != 0 {
		return nil, false
	}
	v := s.eph[0]
	s.eph[0] = nil
	s.eph = s.eph[1:]
	if len(s.eph) == 0 {
		s.eph = nil
	}
	return v, true
}

// pushEphemeral queues v; called by the hub under Hub.mu, never blocks. A
// full ephemeral queue ends the subscription as a slow consumer (nothing
// is dropped silently; resuming loses no event). It returns false when the
// subscription must be removed from the hub.
func (s *Subscription) pushEphemeral(v any) bool {
	s.mu.Lock()
	if s.closed || s.ended != 0 {
		s.mu.Unlock()
		return false
	}
	if len(s.eph) >= s.hub.opts.EphemeralQueue {
		s.ended = ReasonSlowConsumer
		s.queue, s.queued, s.eph = nil, 0, nil
		s.mu.Unlock()
		s.notify()
		return false
	}
	s.eph = append(s.eph, v)
	s.mu.Unlock()
	s.notify()
	return true
}

// end is called by the hub under Hub.mu.
func (s *Subscription) end(r EndReason) {
	s.mu.Lock()
	if s.ended == 0 {
		s.ended = r
	}
	s.mu.Unlock()
	s.notify()
}

func (s *Subscription) notify() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *Subscription) truncatedThrough(ctx context.Context) (int64, error) {
	t, err := s.hub.log.TruncatedThrough(ctx, s.channels)
	if err != nil {
		return 0, fmt.Errorf("read channel state: %w", err)
	}
	return t, nil
}
