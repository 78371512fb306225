package herald

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// Session is one bidirectional Connect stream carrying subscriptions and
// publishes. It reconnects by itself (to the next server of WithServers
// after a failure): its subscriptions resume after their last event, and
// publishes not yet acknowledged are sent again with their idempotency
// keys. Methods are safe for concurrent use.
//
// Publishes sent on one session commit in the order they are sent; a
// publish sent again after a reconnect may commit after ones sent later.
type Session struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned

	sendMu sync.Mutex // one Send at a time

	mu      sync.Mutex
	stream  *connect.BidiStreamForClient[heraldv1.ConnectRequest, heraldv1.ConnectResponse] // nil while disconnected
	subs    map[*sessionSub]struct{}
	wire    map[string]*sessionSub // id on the current stream -> subscription
	pending map[string]*pendingPublish
	seq     int
	closed  bool
	fail    error // why the server refused the session (set by run before it returns)
}

// sessionSub is a Session's subscription. Its fields are guarded by
// Session.mu.
type sessionSub struct {
	sub      *Subscription
	channels []string
	cursor   *int64 // position of the last event handed to sub
	wireID   string // "" while not subscribed on the current stream
	backoff  *backoff
}

type pendingPublish struct {
	seq  int
	id   string
	req  *heraldv1.PublishRequest
	done chan publishResult // buffered
	// retry: resend after a backoff on the same stream (the server said
	// unavailable).
	backoff *backoff
}

type publishResult struct {
	resp *heraldv1.PublishResponse
	err  error
}

// Connect opens a session. It returns at once; the stream is opened (and
// reopened) in the background until Close or the end of ctx.
func (c *Client) Connect(ctx context.Context) *Session {
	sctx, cancel := context.WithCancel(ctx)
	s := &Session{
		c: c, ctx: sctx, cancel: cancel, done: make(chan struct{}),
		subs: make(map[*sessionSub]struct{}), wire: make(map[string]*sessionSub),
		pending: make(map[string]*pendingPublish),
	}
	go s.run()
	return s
}

// Close ends the session: its subscriptions end (Next returns ErrClosed)
// and publishes waiting for an acknowledgement fail with ErrClosed (they
// may have been stored). A session the server refuses (an invalid token,
// a protocol without bidirectional streams) ends by itself the same way,
// with the server's error instead of ErrClosed.
func (s *Session) Close() {
	s.cancel()
	<-s.done
}

func (s *Session) run() {
	defer close(s.done)
	defer s.shutdown()
	b := s.c.backoff()
	for {
		i := s.c.server()
		err := s.connectOnce(i, b)
		if s.ctx.Err() != nil {
			return
		}
		if !retryable(err) {
			// Refused (unauthenticated, unimplemented): opening it again
			// is refused again.
			s.fail = err
			return
		}
		s.c.failed(i)
		wait := b.next()
		s.c.opts.logger.Info("herald: session lost its stream; reconnecting", "retry_in", wait, "err", err)
		if sleep(s.ctx, wait) != nil {
			return
		}
	}
}

// closedErr is why a closed session refuses calls.
func (s *Session) closedErr() error {
	if s.fail != nil {
		return s.fail
	}
	return ErrClosed
}

// shutdown ends every subscription and pending publish.
func (s *Session) shutdown() {
	err := s.fail
	if err == nil {
		err = ErrClosed
	}
	s.mu.Lock()
	s.closed = true
	subs := make([]*sessionSub, 0, len(s.subs))
	for ss := range s.subs {
		subs = append(subs, ss)
	}
	pending := s.pending
	s.pending = map[string]*pendingPublish{}
	s.mu.Unlock()
	for _, ss := range subs {
		ss.sub.finish(err)
	}
	for _, p := range pending {
		p.done <- publishResult{err: err}
	}
}

// connectOnce runs one stream: it subscribes every subscription again
// from its cursor, sends every unacknowledged publish, and dispatches what
// arrives until the stream fails.
func (s *Session) connectOnce(i int, b *backoff) error {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	st := s.c.events[i].Connect(ctx)
	// Ending ctx alone does not end a call whose request body is still
	// open (the HTTP/2 transport waits in the body's Read): close it.
	stopClose := context.AfterFunc(ctx, func() {
		s.sendMu.Lock()
		defer s.sendMu.Unlock()
		_ = st.CloseRequest()
	})
	defer stopClose()
	s.mu.Lock()
	s.stream = st
	var frames []*heraldv1.ConnectRequest
	for ss := range s.subs {
		frames = append(frames, s.subscribeFrameLocked(ss))
	}
	ps := make([]*pendingPublish, 0, len(s.pending))
	for _, p := range s.pending {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *pendingPublish) int { return a.seq - b.seq })
	for _, p := range ps {
		frames = append(frames, publishFrame(p))
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.stream = nil
		clear(s.wire)
		for ss := range s.subs {
			ss.wireID = ""
		}
		s.mu.Unlock()
		stopClose()
		s.sendMu.Lock()
		_ = st.CloseRequest()
		s.sendMu.Unlock()
		_ = st.CloseResponse()
	}()
	if len(frames) == 0 {
		// Send the request headers now, so that a server that refuses the
		// stream says so before the first command.
		if err := st.Send(nil); err != nil {
			return err
		}
	}
	for _, f := range frames {
		if err := s.send(st, f); err != nil {
			return err
		}
	}
	for {
		msg, err := st.Receive()
		if err != nil {
			return err
		}
		s.dispatch(st, msg, b)
	}
}

func (s *Session) send(st *connect.BidiStreamForClient[heraldv1.ConnectRequest, heraldv1.ConnectResponse], f *heraldv1.ConnectRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return st.Send(f)
}

// sendNow sends f on the current stream, if there is one; a failure is
// left to the reader, which reconnects (and sends again what must be).
func (s *Session) sendNow(f func() *heraldv1.ConnectRequest) {
	s.mu.Lock()
	st := s.stream
	var frame *heraldv1.ConnectRequest
	if st != nil {
		frame = f()
	}
	s.mu.Unlock()
	if frame != nil {
		_ = s.send(st, frame)
	}
}

func (s *Session) subscribeFrameLocked(ss *sessionSub) *heraldv1.ConnectRequest {
	s.seq++
	if ss.wireID != "" {
		delete(s.wire, ss.wireID)
	}
	// Fresh per attempt: late frames of an earlier attempt are ignored.
	ss.wireID = "s" + strconv.Itoa(s.seq)
	s.wire[ss.wireID] = ss
	return &heraldv1.ConnectRequest{Id: ss.wireID, Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: ss.channels, Cursor: ss.cursor}}}
}

func publishFrame(p *pendingPublish) *heraldv1.ConnectRequest {
	return &heraldv1.ConnectRequest{Id: p.id, Command: &heraldv1.ConnectRequest_Publish{Publish: p.req}}
}

// dispatch handles one message from the server. Handing events to a
// subscription may wait (its buffer is full): the whole session waits.
func (s *Session) dispatch(st *connect.BidiStreamForClient[heraldv1.ConnectRequest, heraldv1.ConnectResponse], msg *heraldv1.ConnectResponse, b *backoff) {
	s.mu.Lock()
	ss := s.wire[msg.Id]
	p := s.pending[msg.Id]
	s.mu.Unlock()
	switch m := msg.Message.(type) {
	case *heraldv1.ConnectResponse_Subscribed:
		if ss == nil {
			return
		}
		b.reset()
		s.mu.Lock()
		ss.backoff = nil
		if ss.cursor == nil {
			c := m.Subscribed.Cursor
			ss.cursor = &c
		}
		s.mu.Unlock()
		if !ss.sub.push(s.ctx, item{subscribed: m.Subscribed}) {
			return
		}
		if t := truncation(m.Subscribed, ss.channels); t != nil && ss.sub.push(s.ctx, item{truncated: t}) {
			s.mu.Lock()
			ss.cursor = &t.Through
			s.mu.Unlock()
		}
	case *heraldv1.ConnectResponse_Event:
		if ss == nil || !ss.sub.push(s.ctx, item{ev: m.Event}) {
			return
		}
		s.mu.Lock()
		pos := m.Event.Position
		ss.cursor = &pos
		s.mu.Unlock()
	case *heraldv1.ConnectResponse_Published:
		if p == nil {
			return
		}
		b.reset()
		s.mu.Lock()
		delete(s.pending, msg.Id)
		s.mu.Unlock()
		p.done <- publishResult{resp: m.Published}
	case *heraldv1.ConnectResponse_Error:
		err := errorOf(m.Error)
		switch {
		case ss != nil:
			s.subscriptionError(st, ss, m.Error, err)
		case p != nil && connect.CodeOf(err) == connect.CodeUnavailable:
			// Not stored (the database is away): send again on this stream
			// after a backoff.
			s.mu.Lock()
			if p.backoff == nil {
				p.backoff = s.c.backoff()
			}
			wait := p.backoff.next()
			s.mu.Unlock()
			time.AfterFunc(wait, func() {
				s.mu.Lock()
				again := s.stream == st && s.pending[p.id] == p
				s.mu.Unlock()
				if again {
					_ = s.send(st, publishFrame(p))
				}
			})
		case p != nil:
			s.mu.Lock()
			delete(s.pending, msg.Id)
			s.mu.Unlock()
			p.done <- publishResult{err: err}
		}
	}
}

// subscriptionError handles the end of a subscription on the stream: the
// server ended it (slow consumer, shutdown: it carries a StreamEnd) or
// could not serve it now (unavailable), and it is made again after a
// backoff; or the server refused it, and it ends with that error.
func (s *Session) subscriptionError(st *connect.BidiStreamForClient[heraldv1.ConnectRequest, heraldv1.ConnectResponse], ss *sessionSub, e *heraldv1.Error, err error) {
	s.mu.Lock()
	delete(s.wire, ss.wireID)
	ss.wireID = ""
	if e.End == nil && connect.CodeOf(err) != connect.CodeUnavailable {
		delete(s.subs, ss)
		s.mu.Unlock()
		if ss.sub.push(s.ctx, item{err: err}) {
			ss.sub.finish(err)
		}
		return
	}
	if ss.cursor == nil && e.End != nil {
		c := e.End.LastPosition
		ss.cursor = &c
	}
	if ss.backoff == nil {
		ss.backoff = s.c.backoff()
	}
	wait := ss.backoff.next()
	s.mu.Unlock()
	time.AfterFunc(wait, func() {
		s.mu.Lock()
		var frame *heraldv1.ConnectRequest
		if _, active := s.subs[ss]; active && s.stream == st && ss.wireID == "" {
			frame = s.subscribeFrameLocked(ss)
		}
		s.mu.Unlock()
		if frame != nil {
			_ = s.send(st, frame)
		}
	})
}

// errorOf turns an error message of the stream into a *connect.Error.
func errorOf(e *heraldv1.Error) error {
	var code connect.Code
	if err := code.UnmarshalText([]byte(e.Code)); err != nil {
		code = connect.CodeUnknown
	}
	return connect.NewError(code, errors.New(e.Message))
}

// Subscribe subscribes the session to channels (1 to 100) and returns once
// the server confirmed it, or refused it (a *connect.Error); while the
// session is disconnected it waits until ctx ends. The subscription lasts
// until its Close or the session's.
func (s *Session) Subscribe(ctx context.Context, channels []string, opts ...SubscribeOption) (*Subscription, error) {
	o := subscribeOpts(opts)
	ss := &sessionSub{sub: newSubscription(o.cursor), channels: slices.Clone(channels), cursor: o.cursor}
	ss.sub.stop = func() {
		s.mu.Lock()
		delete(s.subs, ss)
		id := ss.wireID
		if id != "" {
			delete(s.wire, id)
			ss.wireID = ""
		}
		st := s.stream
		s.mu.Unlock()
		if id != "" && st != nil {
			_ = s.send(st, &heraldv1.ConnectRequest{Id: "u" + id, Command: &heraldv1.ConnectRequest_Unsubscribe{
				Unsubscribe: &heraldv1.UnsubscribeCommand{SubscriptionId: id}}})
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, s.closedErr()
	}
	s.subs[ss] = struct{}{}
	s.mu.Unlock()
	s.sendNow(func() *heraldv1.ConnectRequest { return s.subscribeFrameLocked(ss) })
	if err := ss.sub.awaitSubscribed(ctx); err != nil {
		ss.sub.Close()
		return nil, err
	}
	return ss.sub, nil
}

// Publish stores m and returns the stored event once it is committed. A
// message without an IdempotencyKey gets a random one; until it is
// acknowledged it is sent again after every reconnect (and while the
// server answers unavailable), so it is stored once. It waits until ctx
// ends; then the message may or may not be stored.
func (s *Session) Publish(ctx context.Context, m Message) (*heraldv1.PublishResponse, error) {
	if m.IdempotencyKey == "" {
		m.IdempotencyKey = NewIdempotencyKey()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, s.closedErr()
	}
	s.seq++
	p := &pendingPublish{seq: s.seq, id: "p" + strconv.Itoa(s.seq), req: m.request(), done: make(chan publishResult, 1)}
	s.pending[p.id] = p
	s.mu.Unlock()
	s.sendNow(func() *heraldv1.ConnectRequest { return publishFrame(p) })
	select {
	case r := <-p.done:
		return r.resp, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, p.id)
		s.mu.Unlock()
		return nil, fmt.Errorf("herald: publish to %q: %w", m.Channel, ctx.Err())
	}
}
