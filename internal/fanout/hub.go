package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/wire"
)

// Defaults of Options.
const (
	DefaultPollInterval = 500 * time.Millisecond
	DefaultReadBatch    = 1000
	DefaultReplayPage   = 500
	DefaultReadBytes    = 8 << 20
	DefaultReplayBytes  = 4 << 20
	DefaultQueueSize    = 4096
	DefaultQueueBytes   = 8 << 20
	DefaultWindowSize   = 4096
	DefaultWindowBytes  = 32 << 20
	// DefaultEphemeralQueue bounds each subscription's queue of signals
	// and presence changes.
	DefaultEphemeralQueue = 1024
)

// Options tune a Hub. Zero values take the defaults.
type Options struct {
	// PollInterval is the safety poll: the hub reads the log this often
	// even without a wake-up (a lost NOTIFY costs at most this much latency).
	// Default DefaultPollInterval.
	PollInterval time.Duration
	// ReadBatch is how many entries the hub reads per query. Default
	// DefaultReadBatch.
	ReadBatch int
	// ReplayPage is how many entries a subscription replays per query.
	// Default DefaultReplayPage.
	ReplayPage int
	// ReadBytes and ReplayBytes bound the same reads in data bytes: a
	// read stops after the entry that reaches them (large events make
	// short pages). Defaults DefaultReadBytes and DefaultReplayBytes.
	ReadBytes, ReplayBytes int
	// QueueSize and QueueBytes bound each subscription's live queue, in
	// entries and in the entries' wire.Entry.Cost; a live subscription whose
	// queue is full is ended as a slow consumer. Defaults DefaultQueueSize
	// and DefaultQueueBytes. (Entries are shared: the bytes are an upper
	// bound of what one stalled subscriber can pin.)
	QueueSize  int
	QueueBytes int
	// WindowSize and WindowBytes bound the window of recent entries the hub
	// keeps, so that subscriptions replaying recent positions share the
	// entries (and their encodings) live subscribers got. Defaults
	// DefaultWindowSize and DefaultWindowBytes.
	WindowSize  int
	WindowBytes int
	// EphemeralQueue bounds each subscription's queue of signals and
	// presence changes (Broadcast); a full one ends the subscription as a
	// slow consumer. Default DefaultEphemeralQueue.
	EphemeralQueue int
	// Logger receives read errors. Default slog.Default().
	Logger *slog.Logger
	// Metrics receives the hub's reads, subscriptions and replays; nil
	// records nothing.
	Metrics *metrics.Metrics
}

func (o *Options) defaults() {
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.ReadBytes <= 0 {
		o.ReadBytes = DefaultReadBytes
	}
	if o.ReplayBytes <= 0 {
		o.ReplayBytes = DefaultReplayBytes
	}
	if o.ReadBatch <= 0 {
		o.ReadBatch = DefaultReadBatch
	}
	if o.ReplayPage <= 0 {
		o.ReplayPage = DefaultReplayPage
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.WindowSize <= 0 {
		o.WindowSize = DefaultWindowSize
	}
	if o.WindowBytes <= 0 {
		o.WindowBytes = DefaultWindowBytes
	}
	if o.EphemeralQueue <= 0 {
		o.EphemeralQueue = DefaultEphemeralQueue
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Source is what the hub needs of the event log (eventlog.Log has it).
type Source interface {
	// Head returns the highest committed position.
	Head(ctx context.Context) (int64, error)
	// Read returns entries by position (see eventlog.Query).
	Read(ctx context.Context, q eventlog.Query) ([]eventlog.Event, error)
	// Watch calls wake whenever entries may have been appended, until ctx
	// ends.
	Watch(ctx context.Context, wake func()) error
	// TruncatedThrough returns the highest position removed from any of the
	// channels (retention or deletion).
	TruncatedThrough(ctx context.Context, channels []string) (int64, error)
	// ReplayState returns TruncatedThrough(channels) and the highest
	// committed position, read together.
	ReplayState(ctx context.Context, channels []string) (truncatedThrough, last int64, err error)
}

// ErrStopped is returned by Subscribe once the hub has stopped.
var ErrStopped = errors.New("hub stopped")

// Hub fans log entries out to subscriptions. Create it with NewHub and start
// it with Run; Subscribe waits until Run has read the log's head.
type Hub struct {
	log  Source
	opts Options

	wake chan struct{} // cap 1: coalesced wake-ups
	// catchUp is set by CatchUp before it wakes the hub, so that the
	// wake-up is counted by its cause (otherwise a notification).
	catchUp atomic.Bool
	ready   chan struct{} // closed once head is known
	stopped chan struct{} // closed when Run ends

	mu      sync.Mutex
	head    int64 // highest dispatched position
	subs    map[string]map[*Subscription]struct{}
	closing bool
	window  window // recent entries, for replays to share

	// Drains started and finished, for CatchUp.
	drainMu       sync.Mutex
	drainsStarted uint64
	drainsDone    uint64
	drained       chan struct{} // closed and replaced when a drain finishes
}

// NewHub returns a hub reading from log. It starts no goroutines.
func NewHub(log Source, opts Options) *Hub {
	opts.defaults()
	return &Hub{
		log:     log,
		opts:    opts,
		wake:    make(chan struct{}, 1),
		ready:   make(chan struct{}),
		stopped: make(chan struct{}),
		subs:    make(map[string]map[*Subscription]struct{}),
		drained: make(chan struct{}),
		window:  window{maxLen: opts.WindowSize, maxBytes: int64(opts.WindowBytes)},
	}
}

// Wake asks the hub to read the log soon. Safe to call from any goroutine;
// never blocks.
func (h *Hub) Wake() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Head returns the highest position the hub has dispatched.
func (h *Hub) Head() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head
}

// CatchUp waits until a read of the log that started after the call has
// been dispatched (or ctx ends), so that a reader who does not wait for
// new entries, such as a long-poll with no wait, sees everything committed
// before it asked, including its own writes.
func (h *Hub) CatchUp(ctx context.Context) error {
	h.drainMu.Lock()
	target := h.drainsStarted + 1
	h.drainMu.Unlock()
	h.catchUp.Store(true)
	h.Wake()
	for {
		h.drainMu.Lock()
		done, drained := h.drainsDone, h.drained
		h.drainMu.Unlock()
		if done >= target {
			return nil
		}
		select {
		case <-drained:
		case <-ctx.Done():
			return ctx.Err()
		case <-h.stopped:
			return ErrStopped
		}
	}
}

// Stopped is closed once Run has returned and every subscription has ended.
func (h *Hub) Stopped() <-chan struct{} { return h.stopped }

// Ready is closed once the hub knows the log's head and accepts subscriptions.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Run reads the log and dispatches entries until ctx ends, then ends every
// subscription with Reason Shutdown. It returns nil on ctx end.
func (h *Hub) Run(ctx context.Context) error {
	defer close(h.stopped)
	defer h.shutdown()

	// The head is where live delivery starts; retry until the log answers.
	backoff := 50 * time.Millisecond
	for {
		head, err := h.log.Head(ctx)
		if err == nil {
			h.mu.Lock()
			h.head = head
			h.window.floor = head // it holds nothing dispatched before
			h.mu.Unlock()
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		h.opts.Logger.Warn("fanout: reading log head", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
	close(h.ready)

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := h.log.Watch(ctx, h.Wake); err != nil && ctx.Err() == nil {
			h.opts.Logger.Error("fanout: watching the log failed; relying on the safety poll", "err", err)
		}
	})
	defer wg.Wait()

	poll := time.NewTicker(h.opts.PollInterval)
	defer poll.Stop()
	for {
		cause := metrics.WakePoll
		select {
		case <-ctx.Done():
			return nil
		case <-h.wake:
			cause = metrics.WakeNotify
			if h.catchUp.Swap(false) {
				cause = metrics.WakeCatchUp
			}
		case <-poll.C:
		}
		h.drainMu.Lock()
		h.drainsStarted++
		h.drainMu.Unlock()
		found, err := h.drain(ctx)
		h.opts.Metrics.Wakeup(cause, found)
		h.drainMu.Lock()
		h.drainsDone++
		close(h.drained)
		h.drained = make(chan struct{})
		h.drainMu.Unlock()
		if err != nil && ctx.Err() == nil {
			// Live streams stay open; the next wake-up or poll retries.
			h.opts.Logger.Warn("fanout: reading the log", "err", err)
		}
	}
}

// drain reads and dispatches every entry after head, and returns how many
// it dispatched.
func (h *Hub) drain(ctx context.Context) (int, error) {
	found := 0
	for {
		after := h.Head()
		evs, err := h.log.Read(ctx, eventlog.Query{After: after, Limit: h.opts.ReadBatch, MaxBytes: h.opts.ReadBytes})
		if err != nil {
			return found, fmt.Errorf("read after %d: %w", after, err)
		}
		if len(evs) > 0 {
			h.dispatch(evs)
			found += len(evs)
		}
		if !full(evs, h.opts.ReadBatch, h.opts.ReadBytes) {
			return found, nil
		}
	}
}

func (h *Hub) dispatch(evs []eventlog.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range evs {
		if evs[i].Position <= h.head {
			continue // only Run dispatches, but stay safe against overlap
		}
		// One entry per event, shared by every subscription and kept in
		// the window: the event is converted and encoded at most once per
		// format, whoever delivers it.
		e := wire.New(evs[i])
		h.window.add(e)
		for s := range h.subs[evs[i].Channel] {
			if !s.push(e) {
				h.removeLocked(s)
			}
		}
		h.head = e.Position()
	}
}

// Broadcast hands v (a signal or a presence change: anything but a log
// entry) to the subscriptions of channel now registered: every one, or with
// presence set only those that asked for presence (WantPresence). It has
// no position and is never replayed; it reaches each subscription once,
// before the entries queued for it. Safe from any goroutine; never blocks.
func (h *Hub) Broadcast(channel string, v any, presence bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for s := range h.subs[channel] {
		if presence && !s.presence.Load() {
			continue
		}
		if !s.pushEphemeral(v) {
			h.removeLocked(s)
			continue
		}
		n++
	}
	return n
}

// EndPresence ends every subscription that receives presence
// (WantPresence) with ReasonUnavailable, and returns how many: presence
// changes may have been missed, and resuming gives a fresh snapshot.
func (h *Hub) EndPresence() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[*Subscription]struct{}{}
	for _, set := range h.subs {
		for s := range set {
			if s.presence.Load() {
				seen[s] = struct{}{}
			}
		}
	}
	for s := range seen {
		s.end(ReasonUnavailable)
		h.removeLocked(s)
	}
	return len(seen)
}

// intern returns the window's entry for ev when it holds ev as read now
// (same position and edit state), else a new entry: replays of recent
// positions then share the entries, and encodings, of live delivery.
func (h *Hub) intern(evs []eventlog.Event) []*wire.Entry {
	out := make([]*wire.Entry, len(evs))
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range evs {
		if e := h.window.get(evs[i].Position); e != nil && sameVersion(e.Event(), &evs[i]) {
			out[i] = e
			continue
		}
		out[i] = wire.New(evs[i])
	}
	return out
}

// sameVersion reports whether two reads of one position carry the same
// content: an edit changes UpdatedAt, a deletion Deleted.
func sameVersion(a, b *eventlog.Event) bool {
	return a.Position == b.Position && a.Deleted == b.Deleted && a.UpdatedAt.Equal(b.UpdatedAt) && len(a.Data) == len(b.Data)
}

// register adds s to the hub and returns the head it starts after. The
// subscription's phase is decided under Hub.mu, before any dispatch can
// reach it: live at once when there is nothing to replay (a push that
// overflows a live queue must end it, not mark it for re-replay), otherwise
// replaying (cursor, head].
func (h *Hub) register(s *Subscription, cursor *int64) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return 0, ErrStopped
	}
	s.mu.Lock()
	if cursor == nil || *cursor >= h.head {
		s.live = true
	} else {
		s.replaying = true
		s.upTo = h.head
		if *cursor >= h.window.floor {
			// A candidate replay from memory: SubscribeFilter checks it
			// against the log (replayFromWindow) or drops it.
			s.page = h.window.after(*cursor, s.channels)
			s.fromWindow = true
		}
	}
	s.mu.Unlock()
	for _, ch := range s.channels {
		set := h.subs[ch]
		if set == nil {
			set = make(map[*Subscription]struct{})
			h.subs[ch] = set
		}
		set[s] = struct{}{}
	}
	return h.head, nil
}

// windowWait bounds how long a subscription waits for the hub to dispatch
// what the log committed before it falls back to reading its replay from
// the log: the hub hears of new entries within milliseconds (NOTIFY).
const windowWait = 100 * time.Millisecond

// replayFromWindow reports whether the replay register took from the
// window for (cursor, upTo] is what the log holds. The log said, after
// register, that nothing after cursor was removed (truncatedThrough) and
// that its last entry is last. Entries up to upTo were in the window; an
// Updated or Deleted entry in (upTo, last], committed before the check
// but not dispatched at register, may have changed one of them in place:
// wait until the hub has dispatched up to last, and see whether the
// window's floor rose past cursor meanwhile. An eviction raises it too,
// which only makes the replay read the log.
func (h *Hub) replayFromWindow(ctx context.Context, cursor, truncatedThrough, last int64) bool {
	if truncatedThrough > cursor {
		return false
	}
	deadline := time.NewTimer(windowWait)
	defer deadline.Stop()
	for {
		h.drainMu.Lock()
		drained := h.drained
		h.drainMu.Unlock()
		h.mu.Lock()
		head, floor := h.head, h.window.floor
		h.mu.Unlock()
		if floor > cursor {
			return false
		}
		if head >= last {
			return true
		}
		select {
		case <-drained:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		case <-h.stopped:
			return false
		}
	}
}

func (h *Hub) remove(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s)
}

func (h *Hub) removeLocked(s *Subscription) {
	for _, ch := range s.channels {
		if set := h.subs[ch]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(h.subs, ch)
			}
		}
	}
}

func (h *Hub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing = true
	for ch, set := range h.subs {
		for s := range set {
			s.end(ReasonShutdown)
		}
		delete(h.subs, ch)
	}
}

// Subscribers returns how many subscriptions are registered (for metrics
// and tests).
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := make(map[*Subscription]struct{})
	for _, set := range h.subs {
		for s := range set {
			seen[s] = struct{}{}
		}
	}
	return len(seen)
}
