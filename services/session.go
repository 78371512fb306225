package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
)

// Limits of one bidirectional session. The configurable ones (publish rate,
// subscriptions, channels per command) are the EventService's; see
// WithConnectionLimits.
const (
	// publishQueue bounds publishes received but not yet acknowledged;
	// when full, the session stops reading commands (backpressure).
	publishQueue = 256
	// publishBatch is how many queued publishes go to the log in one call.
	publishBatch = 128
	// drainTimeout bounds how long a closing session keeps committing the
	// publishes it already received.
	drainTimeout = 5 * time.Second
)

// Session runs the commands of one bidirectional connection: the Connect
// RPC here, and the WebSocket gateway with the same messages. Commands are
// handled in arrival order; publishes are appended in that order and
// acknowledged after commit; each subscription streams on its own
// goroutine through the subscription core.
//
// Handle is called by one goroutine. Send is called by the session's
// goroutines one at a time.
type Session struct {
	svc  *EventService
	send func(*heraldv1.ConnectResponse) error
	// rate is the connection's publish bucket (PublishPerConnection);
	// nil: not limited (see connectionRate).
	rate *limits.Bucket

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	subsWG sync.WaitGroup

	// Publishes outlive ctx: once received, a publish is committed (or
	// answered with an error) even while the session closes, within
	// drainTimeout.
	pubCtx    context.Context
	pubCancel context.CancelFunc
	pubMu     sync.Mutex // guards pubClosed, pubs and sending on pubs
	pubClosed bool
	pubs      chan pubCmd // made, with its publisher, on the first publish

	sendMu     sync.Mutex // serialises send; guards sub.closed and sendClosed
	sendClosed bool       // set by Close: the stream may be gone
	mu         sync.Mutex // guards subs, closed
	subs       map[string]*sessionSub
	closed     bool

	failOnce sync.Once
	failed   chan struct{} // closed when a send fails
	failErr  error

	// The caller's identity, replaced by refresh; authOn is false when the
	// server does not authenticate.
	idMu     sync.Mutex // guards id, expTimer
	id       auth.Identity
	authOn   bool
	expTimer *time.Timer   // fires expire at the identity's expiry; nil: none
	expired  chan struct{} // closed when the credential expired unrefreshed
	expOnce  sync.Once
}

type sessionSub struct {
	sub    *fanout.Subscription
	closed bool // guarded by Session.sendMu: no frame for it after Unsubscribed
}

type pubCmd struct {
	id  string
	req *heraldv1.PublishRequest
}

// StartSession starts a session whose responses go to send. It runs until
// ctx ends or Close is called.
func (s *EventService) StartSession(ctx context.Context, send func(*heraldv1.ConnectResponse) error) *Session {
	pubCtx, pubCancel := context.WithCancel(context.WithoutCancel(ctx))
	ctx, cancel := context.WithCancel(ctx)
	sess := &Session{
		svc:       s,
		send:      send,
		rate:      s.connectionRate(ctx),
		ctx:       ctx,
		cancel:    cancel,
		pubCtx:    pubCtx,
		pubCancel: pubCancel,
		subs:      make(map[string]*sessionSub),
		failed:    make(chan struct{}),
		expired:   make(chan struct{}),
	}
	sess.id, sess.authOn = auth.FromContext(ctx)
	if exp := sess.id.Expires(); sess.authOn && !exp.IsZero() {
		sess.expTimer = time.AfterFunc(time.Until(exp), sess.expire)
	}
	return sess
}

// connectionRate returns the publish bucket of a new connection. As with
// the per-user rate, API keys (backend services, which publish in bulk over
// these streams) and servers without authentication are not limited; end
// users and anonymous clients are.
func (s *EventService) connectionRate(ctx context.Context) *limits.Bucket {
	if id, on := auth.FromContext(ctx); !on || id.Kind() == auth.APIKey {
		return nil
	}
	return s.conn.NewConnectionBucket()
}

// Expired is closed when the session's credential expired without being
// refreshed. The transport then ends the connection (RPC unauthenticated,
// WebSocket 1008); Close stops the clock.
func (ss *Session) Expired() <-chan struct{} { return ss.expired }

func (ss *Session) expire() { ss.expOnce.Do(func() { close(ss.expired) }) }

func (ss *Session) isExpired() bool {
	select {
	case <-ss.expired:
		return true
	default:
		return false
	}
}

// identity returns the session's current identity.
func (ss *Session) identity() auth.Identity {
	ss.idMu.Lock()
	defer ss.idMu.Unlock()
	return ss.id
}

// authCtx is the session's context carrying its current identity, for
// authorization and rate limits.
func (ss *Session) authCtx() context.Context {
	if !ss.authOn {
		return ss.ctx
	}
	return auth.NewContext(ss.ctx, ss.identity())
}

// Failed is closed when sending to the peer failed; Err tells why.
func (ss *Session) Failed() <-chan struct{} { return ss.failed }

// Err returns the send error after Failed is closed.
func (ss *Session) Err() error {
	select {
	case <-ss.failed:
		return ss.failErr
	default:
		return nil
	}
}

func (ss *Session) emit(msg *heraldv1.ConnectResponse) {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	ss.emitLocked(msg)
}

func (ss *Session) emitLocked(msg *heraldv1.ConnectResponse) {
	if ss.sendClosed || ss.Err() != nil {
		return
	}
	if err := ss.send(msg); err != nil {
		ss.failOnce.Do(func() {
			ss.failErr = err
			close(ss.failed)
			ss.cancel()
		})
	}
}

// Handle runs one command. It blocks only while the publish queue is full.
func (ss *Session) Handle(req *heraldv1.ConnectRequest) {
	// Until the transport has closed an expired session, commands are
	// refused: nothing is done on an expired token.
	if ss.isExpired() {
		ss.emit(ss.svc.errorFrame(req.GetId(), "connect", errSessionExpired))
		return
	}
	if err := validateMsg(req); err != nil {
		ss.emit(ss.svc.errorFrame(req.GetId(), "connect", err))
		return
	}
	switch c := req.Command.(type) {
	case *heraldv1.ConnectRequest_Subscribe:
		if isServerID(req.Id) {
			ss.emit(ss.svc.errorFrame(req.Id, "subscribe", connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("subscription ids starting with %q are the server's: choose another id", serverPrefix))))
			return
		}
		if err := ss.svc.CheckChannels(len(c.Subscribe.Channels)); err != nil {
			ss.emit(ss.svc.errorFrame(req.Id, "subscribe", err))
			return
		}
		if err := authorize(ss.authCtx(), ss.svc.ns, actSubscribe, c.Subscribe.Channels...); err != nil {
			ss.emit(ss.svc.errorFrame(req.Id, "subscribe", err))
			return
		}
		ss.subscribe(req.Id, c.Subscribe)
	case *heraldv1.ConnectRequest_Unsubscribe:
		ss.unsubscribe(req.Id, c.Unsubscribe.SubscriptionId)
	case *heraldv1.ConnectRequest_Publish:
		actx := ss.authCtx()
		if err := authorize(actx, ss.svc.ns, actPublish, c.Publish.Channel); err != nil {
			ss.emit(ss.svc.errorFrame(req.Id, "publish", err))
			return
		}
		// The connection's bucket first: a connection over its own rate
		// then spends none of its user's, which the user's other
		// connections share.
		if err := limits.CheckPublish(time.Now(), ss.rate, nil, "", 1); err != nil {
			ss.emit(ss.svc.errorFrame(req.Id, "publish", connect.NewError(connect.CodeResourceExhausted, err)))
			return
		}
		if err := ss.svc.checkUserRate(actx); err != nil {
			ss.emit(ss.svc.errorFrame(req.Id, "publish", err))
			return
		}
		ss.enqueue(pubCmd{id: req.Id, req: c.Publish})
	case *heraldv1.ConnectRequest_Ping:
		ss.emit(&heraldv1.ConnectResponse{Id: req.Id, Message: &heraldv1.ConnectResponse_Pong{Pong: &heraldv1.Pong{}}})
	case *heraldv1.ConnectRequest_Refresh:
		ss.refresh(req.Id, c.Refresh.Token)
	}
}

func (ss *Session) subscribe(id string, req *heraldv1.SubscribeRequest) {
	if id == "" {
		ss.emit(ss.svc.errorFrame(id, "connect", connect.NewError(connect.CodeInvalidArgument,
			errors.New("subscribe needs an id: it names the subscription"))))
		return
	}
	// The cap counts channels: each costs a hub entry and fan-out work.
	// Handle runs one command at a time, so none is added between this
	// count and the subscription's; ending ones only lower it.
	ss.mu.Lock()
	_, dup := ss.subs[id]
	have := 0
	for _, e := range ss.subs {
		have += len(e.sub.Channels())
	}
	closed := ss.closed
	ss.mu.Unlock()
	switch {
	case closed:
		return
	case dup:
		ss.emit(ss.svc.errorFrame(id, "connect", connect.NewError(connect.CodeAlreadyExists,
			fmt.Errorf("subscription %q is already open; unsubscribe first or use another id", id))))
		return
	}
	if err := ss.svc.conn.CheckSubscriptions(have, len(req.Channels)); err != nil {
		ss.emit(ss.svc.errorFrame(id, "connect", connect.NewError(connect.CodeResourceExhausted, err)))
		return
	}
	sub, err := ss.svc.hub.Subscribe(ss.ctx, req.Channels, req.Cursor)
	if err != nil {
		ss.emit(ss.svc.errorFrame(id, "subscribe", err))
		return
	}
	entry := &sessionSub{sub: sub}
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		sub.Close()
		return
	}
	ss.subs[id] = entry
	ss.subsWG.Add(1)
	ss.mu.Unlock()
	ss.emit(&heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Subscribed{
		Subscribed: SubscribedProto(sub.Channels(), sub.Start()),
	}})
	go ss.stream(id, entry)
}

// stream delivers one subscription until it ends.
func (ss *Session) stream(id string, entry *sessionSub) {
	defer ss.subsWG.Done()
	defer entry.sub.Close()
	for {
		msg, err := entry.sub.Next(ss.ctx)
		if err != nil {
			ss.mu.Lock()
			if ss.subs[id] == entry {
				delete(ss.subs, id)
			}
			ss.mu.Unlock()
			if errors.Is(err, fanout.ErrClosed) || ss.ctx.Err() != nil {
				return // unsubscribed or session over
			}
			ss.sendMu.Lock()
			if !entry.closed {
				ss.emitLocked(ss.svc.errorFrame(id, "subscribe", err))
			}
			ss.sendMu.Unlock()
			return
		}
		var out *heraldv1.ConnectResponse
		if msg.Truncation != nil {
			out = &heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Subscribed{
				Subscribed: SubscribedProto(entry.sub.Channels(), *msg.Truncation),
			}}
		} else {
			out = &heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Event{Event: EventProto(msg.Event)}}
		}
		ss.sendMu.Lock()
		if entry.closed {
			ss.sendMu.Unlock()
			return
		}
		ss.emitLocked(out)
		ss.sendMu.Unlock()
	}
}

func (ss *Session) unsubscribe(id, subID string) {
	ss.mu.Lock()
	entry := ss.subs[subID]
	delete(ss.subs, subID)
	ss.mu.Unlock()
	if entry == nil {
		ss.emit(ss.svc.errorFrame(id, "connect", connect.NewError(connect.CodeNotFound,
			fmt.Errorf("no open subscription %q", subID))))
		return
	}
	entry.sub.Close()
	ss.sendMu.Lock()
	entry.closed = true
	ss.emitLocked(&heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Unsubscribed{Unsubscribed: &heraldv1.Unsubscribed{}}})
	ss.sendMu.Unlock()
}

// enqueue hands a publish to the publisher, or answers it at once when
// the session no longer takes publishes. Every publish gets an answer.
func (ss *Session) enqueue(c pubCmd) {
	ss.pubMu.Lock()
	defer ss.pubMu.Unlock()
	if !ss.pubClosed {
		if ss.pubs == nil {
			// Many connections only subscribe: their queue and publisher
			// goroutine would be idle memory.
			ss.pubs = make(chan pubCmd, publishQueue)
			ss.wg.Go(ss.publisher)
		}
		// Closing (Close cancels ctx before taking pubMu), or the token
		// expired: checked first, as select picks among ready cases at
		// random.
		if ss.ctx.Err() == nil && !ss.isExpired() {
			select {
			case ss.pubs <- c:
				return
			case <-ss.ctx.Done():
			}
		}
	}
	ss.emit(ss.svc.errorFrame(c.id, "publish", errShuttingDown))
}

// publisher appends queued publishes in arrival order, a batch at a time,
// and acknowledges each after commit. It ends when pubs is closed and
// drained.
func (ss *Session) publisher() {
	batch := make([]pubCmd, 0, publishBatch)
	for first := range ss.pubs {
		batch = append(batch[:0], first)
	fill:
		for len(batch) < publishBatch {
			select {
			case c, ok := <-ss.pubs:
				if !ok {
					break fill
				}
				batch = append(batch, c)
			default:
				break fill
			}
		}
		reqs := make([]*heraldv1.PublishRequest, len(batch))
		for i, c := range batch {
			reqs[i] = c.req
		}
		res, err := ss.svc.publish(ss.pubCtx, reqs)
		if err != nil && ss.pubCtx.Err() != nil {
			err = errShuttingDown // the drain deadline passed, not the client's doing
		}
		for i, c := range batch {
			switch {
			case err != nil:
				ss.emit(ss.svc.errorFrame(c.id, "publish", err))
			case res[i].err != nil:
				ss.emit(ss.svc.errorFrame(c.id, "publish", res[i].err))
			default:
				ss.emit(&heraldv1.ConnectResponse{Id: c.id, Message: &heraldv1.ConnectResponse_Published{Published: res[i].resp}})
			}
		}
		if err != nil {
			// Keep the stream's order: what was queued behind a failed
			// batch fails too, so a client retrying in order cannot have
			// later events committed before earlier ones.
			ss.failQueued(err)
		}
	}
}

func (ss *Session) failQueued(err error) {
	for {
		select {
		case c, ok := <-ss.pubs:
			if !ok {
				return
			}
			ss.emit(ss.svc.errorFrame(c.id, "publish", err))
		default:
			return
		}
	}
}

// closePublishes stops taking publishes and waits until every queued one
// is answered, committing them for at most drainTimeout.
func (ss *Session) closePublishes() {
	ss.pubMu.Lock()
	if !ss.pubClosed {
		ss.pubClosed = true
		if ss.pubs != nil {
			close(ss.pubs)
		}
	}
	ss.pubMu.Unlock()
	t := time.AfterFunc(drainTimeout, ss.pubCancel)
	defer t.Stop()
	ss.wg.Wait()
}

// Subscriptions returns how many subscriptions are open.
func (ss *Session) Subscriptions() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.subs)
}

// FinishPublishes stops taking publishes and waits until every queued one
// is answered (after the client half-closed its side).
func (ss *Session) FinishPublishes() { ss.closePublishes() }

// WaitSubscriptions waits until every subscription has ended on its own
// (after the hub stopped, each sends its end frame first).
func (ss *Session) WaitSubscriptions() { ss.subsWG.Wait() }

// Close ends the session: subscriptions end, publishes already received
// are still committed and answered (within drainTimeout), later commands
// are refused. It waits for the session's goroutines. Handle may still be
// called concurrently from a receiver that has not noticed yet.
func (ss *Session) Close() {
	ss.idMu.Lock()
	if ss.expTimer != nil {
		ss.expTimer.Stop()
	}
	ss.idMu.Unlock()
	ss.mu.Lock()
	ss.closed = true
	subs := ss.subs
	ss.subs = map[string]*sessionSub{}
	ss.mu.Unlock()
	ss.cancel()
	for _, e := range subs {
		e.sub.Close()
	}
	ss.subsWG.Wait()
	ss.closePublishes()
	ss.pubCancel()
	ss.sendMu.Lock()
	ss.sendClosed = true
	ss.sendMu.Unlock()
}

// Connect serves the bidirectional stream with a Session.
func (s *EventService) Connect(ctx context.Context, stream *connect.BidiStream[heraldv1.ConnectRequest, heraldv1.ConnectResponse]) error {
	release, err := s.streams.Acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	cursor, err := ParseServerCursor(stream.RequestHeader().Get(ServerCursorHeader))
	if err != nil {
		return err
	}
	sess := s.StartSession(ctx, stream.Send)
	sess.SubscribeServerChannels(cursor)
	// The receiving goroutine may stay blocked in Receive until the handler
	// returns and the stream is closed; it touches the session only through
	// Handle, which is a no-op once the session is closed.
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Receive()
			if err != nil {
				recvErr <- err
				return
			}
			if sess.ctx.Err() != nil {
				return
			}
			sess.Handle(req)
		}
	}()

	select {
	case err := <-recvErr:
		if !errors.Is(err, io.EOF) {
			sess.Close()
			if ctx.Err() != nil {
				return ctx.Err() // the client went away
			}
			// Still connected (e.g. a message over the read limit): say why.
			return err
		}
		// Half-close: acknowledge what was published, then keep streaming
		// until the client cancels or the subscriptions end.
		sess.FinishPublishes()
		done := make(chan struct{})
		go func() { sess.WaitSubscriptions(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		case <-sess.Failed():
		case <-sess.Expired():
			sess.Close()
			return errSessionExpired
		case <-s.hub.Stopped():
			<-done
		}
		sess.Close()
		return s.endReason(sess)
	case <-sess.Failed():
		sess.Close()
		return sess.Err()
	case <-s.hub.Stopped():
		sess.WaitSubscriptions() // each sends its shutdown frame
		sess.Close()
		return connect.NewError(connect.CodeUnavailable, errors.New("server shutting down; reconnect and resume from your last positions"))
	case <-sess.Expired():
		sess.Close()
		return errSessionExpired
	case <-ctx.Done():
		sess.Close()
		return ctx.Err()
	}
}

func (s *EventService) endReason(sess *Session) error {
	select {
	case <-s.hub.Stopped():
		return connect.NewError(connect.CodeUnavailable, errors.New("server shutting down; reconnect and resume from your last positions"))
	default:
		return sess.Err()
	}
}
