package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
)

// Options tune a Hub. Zero values take the defaults.
type Options struct {
	// PollInterval is the safety poll: the hub reads the log this often
	// even without a wake-up (a lost NOTIFY costs at most this much latency).
	// Default 500ms.
	PollInterval time.Duration
	// ReadBatch is how many entries the hub reads per query. Default 1000.
	ReadBatch int
	// ReplayPage is how many entries a subscription replays per query.
	// Default 500.
	ReplayPage int
	// QueueSize bounds each subscription's live queue. Default 4096.
	QueueSize int
	// Logger receives read errors. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.PollInterval <= 0 {
		o.PollInterval = 500 * time.Millisecond
	}
	if o.ReadBatch <= 0 {
		o.ReadBatch = 1000
	}
	if o.ReplayPage <= 0 {
		o.ReplayPage = 500
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// ErrStopped is returned by Subscribe once the hub has stopped.
var ErrStopped = errors.New("hub stopped")

// Hub fans log entries out to subscriptions. Create it with NewHub and start
// it with Run; Subscribe waits until Run has read the log's head.
type Hub struct {
	log  eventlog.Log
	opts Options

	wake    chan struct{} // cap 1: coalesced wake-ups
	ready   chan struct{} // closed once head is known
	stopped chan struct{} // closed when Run ends

	mu      sync.Mutex
	head    int64 // highest dispatched position
	subs    map[string]map[*Subscription]struct{}
	closing bool

	// Drains started and finished, for CatchUp.
	drainMu       sync.Mutex
	drainsStarted uint64
	drainsDone    uint64
	drained       chan struct{} // closed and replaced when a drain finishes
}

// NewHub returns a hub reading from log. It starts no goroutines.
func NewHub(log eventlog.Log, opts Options) *Hub {
	opts.defaults()
	return &Hub{
		log:     log,
		opts:    opts,
		wake:    make(chan struct{}, 1),
		ready:   make(chan struct{}),
		stopped: make(chan struct{}),
		subs:    make(map[string]map[*Subscription]struct{}),
		drained: make(chan struct{}),
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
		select {
		case <-ctx.Done():
			return nil
		case <-h.wake:
		case <-poll.C:
		}
		h.drainMu.Lock()
		h.drainsStarted++
		h.drainMu.Unlock()
		err := h.drain(ctx)
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

// drain reads and dispatches every entry after head.
func (h *Hub) drain(ctx context.Context) error {
	for {
		after := h.Head()
		evs, err := h.log.Read(ctx, eventlog.Query{After: after, Limit: h.opts.ReadBatch})
		if err != nil {
			return fmt.Errorf("read after %d: %w", after, err)
		}
		if len(evs) > 0 {
			h.dispatch(evs)
		}
		if len(evs) < h.opts.ReadBatch {
			return nil
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
		subs := h.subs[evs[i].Channel]
		if len(subs) == 0 {
			h.head = evs[i].Position
			continue
		}
		// Each queued event is its own allocation, so a stalled subscriber
		// pins only its own events, not whole read batches.
		ev := new(eventlog.Event)
		*ev = evs[i]
		for s := range subs {
			if !s.push(ev) {
				h.removeLocked(s)
			}
		}
		h.head = ev.Position
	}
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
