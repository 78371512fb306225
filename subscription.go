package herald

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// ErrClosed is returned by a Subscription or Session used after Close.
var ErrClosed = errors.New("herald: closed")

// ErrHistoryTruncated: events the subscription would have delivered were
// removed by retention (or a channel deletion) first. A *TruncatedError
// says which.
var ErrHistoryTruncated = errors.New("herald: history truncated")

// TruncatedError reports events a subscription can no longer deliver:
// those after position After up to Through were removed before it could
// replay them. The subscription goes on with the events after Through;
// reload whatever state you built from the lost ones.
// errors.Is(err, ErrHistoryTruncated).
type TruncatedError struct {
	Channels []string
	After    int64
	Through  int64
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("herald: history truncated: events of %v after position %d up to %d were removed before they could be delivered; reload your state",
		e.Channels, e.After, e.Through)
}

func (e *TruncatedError) Unwrap() error { return ErrHistoryTruncated }

// SubscribeOption configures a subscription.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct {
	cursor      *int64
	onReconnect func(err error, wait time.Duration, cursor *int64)
}

// After replays the events after position cursor (the position of the last
// event already seen) before the live ones. Without it a subscription
// starts with the events published after it is made; After(0) starts with
// the oldest event retained.
func After(cursor int64) SubscribeOption {
	return func(o *subscribeOptions) { o.cursor = &cursor }
}

// OnReconnect calls fn (from the subscription's goroutine) each time the
// subscription lost its stream and will open another after wait, resuming
// after cursor (nil: live, nothing received yet).
func OnReconnect(fn func(err error, wait time.Duration, cursor *int64)) SubscribeOption {
	return func(o *subscribeOptions) { o.onReconnect = fn }
}

func subscribeOpts(opts []SubscribeOption) subscribeOptions {
	var o subscribeOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.cursor != nil {
		c := *o.cursor
		o.cursor = &c
	}
	if o.onReconnect == nil {
		o.onReconnect = func(error, time.Duration, *int64) {}
	}
	return o
}

// subscriptionBuffer is how many received items a Subscription holds for
// Next; when it is full the stream waits.
const subscriptionBuffer = 256

// Subscription delivers the events of its channels, in position order,
// each once, across reconnects. Next is for one goroutine; Cursor and
// Close may be called from any.
type Subscription struct {
	items     chan item
	done      chan struct{} // closed when nothing more will be pushed
	finOnce   sync.Once
	closeOnce sync.Once
	stop      func() // stops the producer and waits for it

	mu     sync.Mutex
	cursor *int64 // position of the last event Next returned, or where it started
	err    error  // sticky: the terminal error, or ErrClosed
	fin    error  // why done was closed
}

// item is what a producer hands to Next.
type item struct {
	subscribed *heraldv1.Subscribed
	ev         *heraldv1.Event
	truncated  *TruncatedError
	err        error // terminal
}

func newSubscription(cursor *int64) *Subscription {
	return &Subscription{items: make(chan item, subscriptionBuffer), done: make(chan struct{}), cursor: cursor}
}

// push hands it to Next; false when the subscription or ctx ended first.
func (s *Subscription) push(ctx context.Context, it item) bool {
	select {
	case s.items <- it:
		return true
	case <-s.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// finish says nothing more will be pushed, and why.
func (s *Subscription) finish(err error) {
	s.finOnce.Do(func() {
		s.mu.Lock()
		s.fin = err
		s.mu.Unlock()
		close(s.done)
	})
}

// Next returns the next event, waiting for it until ctx ends. It returns a
// *TruncatedError (errors.Is ErrHistoryTruncated) when events were removed
// before they could be delivered; the subscription goes on, and the next
// call returns the events after them. Any other error ends the
// subscription: the server refused it (a *connect.Error: invalid
// channels, permission denied, a cursor ahead of the log), the context
// given to Subscribe ended, or it was closed (ErrClosed).
func (s *Subscription) Next(ctx context.Context) (*heraldv1.Event, error) {
	for {
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		var it item
		select {
		case it = <-s.items:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			select {
			case it = <-s.items: // what was pushed before the end comes first
			default:
				s.mu.Lock()
				if s.err == nil {
					s.err = s.fin
				}
				err := s.err
				s.mu.Unlock()
				return nil, err
			}
		}
		if ev, err := s.take(it); ev != nil || err != nil {
			return ev, err
		}
	}
}

// take applies it to the subscription's state and returns what Next
// returns for it (nothing for a subscribed notice).
func (s *Subscription) take(it item) (*heraldv1.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case it.err != nil:
		if s.err == nil {
			s.err = it.err
		}
		return nil, s.err
	case it.subscribed != nil:
		if s.cursor == nil {
			c := it.subscribed.Cursor
			s.cursor = &c
		}
	case it.truncated != nil:
		t := it.truncated.Through
		if s.cursor == nil || *s.cursor < t {
			s.cursor = &t
		}
		return nil, it.truncated
	case it.ev != nil:
		p := it.ev.Position
		s.cursor = &p
		return it.ev, nil
	}
	return nil, nil
}

// Cursor returns the position of the last event Next returned: pass it to
// After to resume there later (in another process, on another instance).
// Before the first event it is where the subscription started; nil only
// for a live subscription not confirmed yet.
func (s *Subscription) Cursor() *int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cursor == nil {
		return nil
	}
	c := *s.cursor
	return &c
}

// Close ends the subscription and waits until its stream is closed. Next
// then returns ErrClosed.
func (s *Subscription) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		if s.err == nil {
			s.err = ErrClosed
		}
		s.mu.Unlock()
		s.stop()
		s.finish(ErrClosed)
	})
}

// awaitSubscribed waits for the first item a new subscription receives:
// its subscribed notice (applied), or the error that ended it.
func (s *Subscription) awaitSubscribed(ctx context.Context) error {
	select {
	case it := <-s.items:
		if it.err != nil {
			return it.err
		}
		_, err := s.take(it)
		return err
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.fin
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Subscribe subscribes to channels (1 to 100) on one server stream, and
// returns once the server confirmed it, or refused it (a *connect.Error);
// while no server can be reached it keeps trying until ctx ends. The
// subscription lasts until Close or the end of ctx. After a disconnect it
// opens a new stream, on the next server of WithServers when the last
// failed, after the last event received: none is lost or repeated.
func (c *Client) Subscribe(ctx context.Context, channels []string, opts ...SubscribeOption) (*Subscription, error) {
	o := subscribeOpts(opts)
	sctx, cancel := context.WithCancel(ctx)
	s := newSubscription(o.cursor)
	stopped := make(chan struct{})
	s.stop = func() { cancel(); <-stopped }
	go func() {
		defer close(stopped)
		err := c.stream(sctx, s, channels, o)
		fin := context.Cause(sctx)
		if err != nil && sctx.Err() == nil {
			s.push(sctx, item{err: err})
			fin = err
		}
		s.finish(fin)
	}()
	if err := s.awaitSubscribed(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// stream runs a subscription's server streams until ctx ends (nil) or the
// server refuses it (the error).
func (c *Client) stream(ctx context.Context, s *Subscription, channels []string, o subscribeOptions) error {
	cursor := o.cursor
	b := c.backoff()
	for {
		i := c.server()
		err := c.streamOnce(ctx, i, s, channels, &cursor, b)
		if ctx.Err() != nil {
			return nil
		}
		if !retryable(err) {
			return err
		}
		if connect.CodeOf(err) == connect.CodeUnavailable {
			c.failed(i)
		}
		wait := b.next()
		o.onReconnect(err, wait, cursor)
		c.opts.logger.Info("herald: subscription lost its stream; resuming", "channels", channels,
			"cursor", cursorAttr(cursor), "retry_in", wait, "err", err)
		if sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// streamOnce reads one server stream into s, advancing *cursor past every
// event handed over, and returns why it ended.
func (c *Client) streamOnce(ctx context.Context, i int, s *Subscription, channels []string, cursor **int64, b *backoff) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.events[i].Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: channels, Cursor: *cursor}))
	if err != nil {
		return err
	}
	defer st.Close()
	for st.Receive() {
		switch m := st.Msg().Message.(type) {
		case *heraldv1.SubscribeResponse_Subscribed:
			b.reset()
			if !s.push(ctx, item{subscribed: m.Subscribed}) {
				return ctx.Err()
			}
			if *cursor == nil {
				p := m.Subscribed.Cursor
				*cursor = &p
			}
			if t := truncation(m.Subscribed, channels); t != nil {
				if !s.push(ctx, item{truncated: t}) {
					return ctx.Err()
				}
				*cursor = &t.Through
			}
		case *heraldv1.SubscribeResponse_Event:
			if !s.push(ctx, item{ev: m.Event}) {
				return ctx.Err()
			}
			p := m.Event.Position
			*cursor = &p
		}
	}
	if err := st.Err(); err != nil {
		return err
	}
	return connect.NewError(connect.CodeUnavailable, errors.New("the server ended the stream"))
}

func truncation(sub *heraldv1.Subscribed, channels []string) *TruncatedError {
	if !sub.HistoryTruncated {
		return nil
	}
	return &TruncatedError{Channels: channels, After: sub.Cursor, Through: sub.TruncatedThrough}
}

func cursorAttr(c *int64) any {
	if c == nil {
		return "live"
	}
	return *c
}
