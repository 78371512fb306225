package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/fanout"
)

// Limits of one bidirectional session.
const (
	// maxSessionSubscriptions bounds open subscriptions per session.
	maxSessionSubscriptions = 100
	// publishQueue bounds publishes received but not yet acknowledged;
	// when full, the session stops reading commands (backpressure).
	publishQueue = 256
	// publishBatch is how many queued publishes go to the log in one call.
	publishBatch = 128
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

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	pubs   chan pubCmd
	subsWG sync.WaitGroup

	sendMu     sync.Mutex // serialises send; guards sub.closed and sendClosed
	sendClosed bool       // set by Close: the stream may be gone
	mu         sync.Mutex // guards subs, closed
	subs       map[string]*sessionSub
	closed     bool

	failOnce sync.Once
	failed   chan struct{} // closed when a send fails
	failErr  error
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
	ctx, cancel := context.WithCancel(ctx)
	sess := &Session{
		svc:    s,
		send:   send,
		ctx:    ctx,
		cancel: cancel,
		pubs:   make(chan pubCmd, publishQueue),
		subs:   make(map[string]*sessionSub),
		failed: make(chan struct{}),
	}
	sess.wg.Go(sess.publisher)
	return sess
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
	if err := validateMsg(req); err != nil {
		ss.emit(ss.svc.errorFrame(req.GetId(), "connect", err))
		return
	}
	switch c := req.Command.(type) {
	case *heraldv1.ConnectRequest_Subscribe:
		ss.subscribe(req.Id, c.Subscribe)
	case *heraldv1.ConnectRequest_Unsubscribe:
		ss.unsubscribe(req.Id, c.Unsubscribe.SubscriptionId)
	case *heraldv1.ConnectRequest_Publish:
		select {
		case ss.pubs <- pubCmd{id: req.Id, req: c.Publish}:
		case <-ss.ctx.Done():
		}
	case *heraldv1.ConnectRequest_Ping:
		ss.emit(&heraldv1.ConnectResponse{Id: req.Id, Message: &heraldv1.ConnectResponse_Pong{Pong: &heraldv1.Pong{}}})
	}
}

func (ss *Session) subscribe(id string, req *heraldv1.SubscribeRequest) {
	if id == "" {
		ss.emit(ss.svc.errorFrame(id, "connect", connect.NewError(connect.CodeInvalidArgument,
			errors.New("subscribe needs an id: it names the subscription"))))
		return
	}
	ss.mu.Lock()
	_, dup := ss.subs[id]
	n := len(ss.subs)
	closed := ss.closed
	ss.mu.Unlock()
	switch {
	case closed:
		return
	case dup:
		ss.emit(ss.svc.errorFrame(id, "connect", connect.NewError(connect.CodeAlreadyExists,
			fmt.Errorf("subscription %q is already open; unsubscribe first or use another id", id))))
		return
	case n >= maxSessionSubscriptions:
		ss.emit(ss.svc.errorFrame(id, "connect", connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("at most %d subscriptions per connection", maxSessionSubscriptions))))
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

// publisher appends queued publishes in arrival order, a batch at a time,
// and acknowledges each after commit.
func (ss *Session) publisher() {
	batch := make([]pubCmd, 0, publishBatch)
	for {
		batch = batch[:0]
		select {
		case <-ss.ctx.Done():
			return
		case c, ok := <-ss.pubs:
			if !ok {
				return
			}
			batch = append(batch, c)
		}
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
		res, err := ss.svc.publish(ss.ctx, reqs)
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
	}
}

// Subscriptions returns how many subscriptions are open.
func (ss *Session) Subscriptions() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.subs)
}

// FinishPublishes stops taking publishes and waits until every queued one
// is acknowledged. Call it from the goroutine that calls Handle, after the
// last Handle.
func (ss *Session) FinishPublishes() {
	close(ss.pubs)
	ss.wg.Wait()
}

// WaitSubscriptions waits until every subscription has ended on its own
// (after the hub stopped, each sends its end frame first).
func (ss *Session) WaitSubscriptions() { ss.subsWG.Wait() }

// Close ends the session and waits for its goroutines. Safe to call once,
// after the last Handle.
func (ss *Session) Close() {
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
	ss.wg.Wait()
	ss.sendMu.Lock()
	ss.sendClosed = true
	ss.sendMu.Unlock()
}

// Connect serves the bidirectional stream with a Session.
func (s *EventService) Connect(ctx context.Context, stream *connect.BidiStream[heraldv1.ConnectRequest, heraldv1.ConnectResponse]) error {
	sess := s.StartSession(ctx, stream.Send)
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
			return nil // the client went away; nothing to report to it
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
