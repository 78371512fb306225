package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/semaphore"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/metrics"
)

// Limits of one bidirectional session. The configurable ones (publish rate,
// subscriptions, channels per command) are Config's.
const (
	// publishQueue bounds publishes received but not yet acknowledged;
	// when full, the session stops reading commands (backpressure).
	publishQueue = 256
	// publishQueueBytes bounds the data of those publishes, so that large
	// events cannot make publishQueue of them a memory problem; when it is
	// full the session stops reading commands too.
	publishQueueBytes = 4 << 20
	// publishBatch is how many queued publishes go to the log in one call.
	publishBatch = 128
	// drainTimeout bounds how long a closing session keeps committing the
	// publishes it already received.
	drainTimeout = 5 * time.Second
	// readyWait bounds how long a new session waits for a starting server.
	readyWait = 5 * time.Second
)

// Errors Session.Serve ends with, besides the transport's own. The RPC
// returns them as they are; the WebSocket maps them to close codes.
var (
	// ErrSessionExpired: the credential expired without a refresh.
	ErrSessionExpired = connect.NewError(connect.CodeUnauthenticated,
		errors.New("token expired: refresh it before it expires, or reconnect with a fresh token and resume from your last positions"))
	// ErrShuttingDown: the server is stopping; every subscription has
	// sent its shutdown end first.
	ErrShuttingDown = connect.NewError(connect.CodeUnavailable,
		errors.New("server shutting down; reconnect (to any instance) and resume from your last positions"))
	// ErrNotReady: the server has not reached its event log since it
	// started.
	ErrNotReady = connect.NewError(connect.CodeUnavailable,
		errors.New("server starting: the event log is not reachable yet; reconnect in a moment"))
)

// Session runs one bidirectional connection: the Connect RPC, and the
// WebSocket with the same messages. Commands are handled in arrival order;
// publishes are appended in that order and acknowledged after commit; each
// subscription streams on its own goroutine through the subscription core.
//
// # Concurrency
//
// Serve runs the session on the caller's goroutine and starts: a reader
// (calls recv and handles each command), a publisher (started with the
// first publish; appends in order, acknowledges), and one goroutine per
// subscription. Frames reach send one at a time (sendMu). Serve returns
// after every goroutine it started has ended, except the reader, which may
// stay blocked in recv until the transport closes: once Serve has returned
// it handles nothing more. Locks: mu (subscriptions, identity) and sendMu
// are never held together; publisher.mu may be held while taking sendMu
// (an answer to a refused publish), never the other way round.
type Session struct {
	app     *App
	parent  context.Context // the request's
	ctx     context.Context // the session's; its cause says why it ended
	cancel  context.CancelCauseFunc
	release func() // the connection slot
	cursor  *int64 // where the server subscription resumes; nil: live
	rate    *limits.Bucket
	lag     metrics.Observer // delivery lag of this session's transport

	send     func(*Frame) error
	sendMu   sync.Mutex // serialises send; guards sendDone and sessionSub.closed
	sendDone bool       // closed: the transport may be gone
	sendErr  error      // the first failed send

	mu       sync.Mutex // guards subs, closing, id, expTimer
	subs     map[string]*sessionSub
	closing  bool
	id       auth.Identity
	authOn   bool
	expTimer *time.Timer
	expired  atomic.Bool

	subsWG    sync.WaitGroup
	pub       publisher
	closeOnce sync.Once
}

type sessionSub struct {
	sub    *fanout.Subscription
	closed bool // guarded by Session.sendMu: no frame for it after Unsubscribed
}

// NewSession admits a bidirectional connection for the caller in ctx: it
// takes a connection slot (refused with resource_exhausted) that Serve
// frees. serverCursor is where the subscription to the token's channels
// resumes (nil: live). Serve must be called.
func (a *App) NewSession(ctx context.Context, serverCursor *int64) (*Session, error) {
	release, err := a.acquire(ctx)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	ss := &Session{
		app:     a,
		parent:  ctx,
		ctx:     sctx,
		cancel:  cancel,
		release: release,
		cursor:  serverCursor,
		rate:    a.connectionRate(ctx),
		lag:     a.met.Lag(metrics.TransportOf(ctx)),
		subs:    make(map[string]*sessionSub),
	}
	ss.id, ss.authOn = auth.FromContext(ctx)
	ss.pub.init(ss)
	remove := a.registry.add(ctx, ss.counts, func() { cancel(ErrDisconnected) })
	ss.release = sync.OnceFunc(func() { remove(); release() })
	return ss, nil
}

// counts returns the session's subscriptions and their channels together.
func (ss *Session) counts() (subs, channels int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, e := range ss.subs {
		subs++
		channels += len(e.sub.Channels())
	}
	return subs, channels
}

// Discard gives up a session that will not be served (the transport
// failed to open): it frees the connection slot.
func (ss *Session) Discard() {
	ss.close()
	ss.release()
}

// connectionRate returns the publish bucket of a new connection. As with
// the per-user rate, API keys (backend services, which publish in bulk over
// these streams) and servers without authentication are not limited; end
// users and anonymous clients are.
func (a *App) connectionRate(ctx context.Context) *limits.Bucket {
	if id, on := auth.FromContext(ctx); !on || id.Kind() == auth.APIKey {
		return nil
	}
	return a.lim.NewConnectionBucket()
}

// Serve runs the session: it subscribes the token's channels (before any
// command), then reads commands with recv and answers through send until
// the peer leaves, the server shuts down or the credential expires.
//
// recv returning io.EOF is a half-close: publishes already received are
// acknowledged and subscriptions keep streaming until they end or ctx
// does. Any other recv error ends the session (publishes already received
// are still committed and answered first). A frame that did not decode is
// reported by recv as an error wrapping ErrBadFrame: it is answered with an
// error frame and the session goes on.
//
// Serve returns nil when the peer left after a half-close and everything
// ended; ErrSessionExpired, ErrShuttingDown or ErrNotReady; the failed
// send's error; recv's error; or the request context's error.
func (ss *Session) Serve(recv func() (*heraldv1.ConnectRequest, error), send func(*Frame) error) error {
	defer ss.release()
	ss.send = send
	select {
	case <-ss.app.Ready():
	case <-ss.ctx.Done():
		ss.close()
		return ss.parent.Err()
	case <-time.After(readyWait):
		ss.close()
		return ErrNotReady
	}
	ss.startExpiry()
	// Before any command is read: the server subscription answers first.
	ss.subscribeServerChannels()

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				if errors.Is(err, ErrBadFrame) && ss.ctx.Err() == nil {
					ss.emit(msgFrame(errorMsg(ss.app.logger, "", "connect", err)))
					continue
				}
				recvErr <- err
				return
			}
			if ss.ctx.Err() != nil {
				return
			}
			ss.handle(req)
		}
	}()

	stopping := ss.app.Stopping()
	select {
	case err := <-recvErr:
		if !errors.Is(err, io.EOF) {
			ss.close()
			if ss.parent.Err() != nil {
				return ss.parent.Err() // the client went away
			}
			return err
		}
		// Half-close: acknowledge what was published (however long the
		// commits take: the client is waiting for them), then keep
		// streaming until the subscriptions end or the client cancels.
		ss.pub.finish()
		done := make(chan struct{})
		go func() { ss.subsWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-ss.ctx.Done():
		case <-stopping:
			<-done // each subscription sends its shutdown end first
		}
		ss.close()
		return ss.endError(nil)
	case <-ss.ctx.Done():
		ss.close()
		return ss.endError(nil)
	case <-stopping:
		ss.subsWG.Wait() // each subscription sends its shutdown end first
		ss.close()
		return ErrShuttingDown
	}
}

// ErrBadFrame marks a recv error for a frame that did not decode: the
// session answers it with an invalid_argument error frame and goes on.
var ErrBadFrame = errors.New("invalid frame")

// endError is why the session ended, for Serve's caller.
func (ss *Session) endError(fallback error) error {
	select {
	case <-ss.app.Stopping():
		return ErrShuttingDown
	default:
	}
	ss.sendMu.Lock()
	sendErr := ss.sendErr
	ss.sendMu.Unlock()
	switch {
	case ss.expired.Load():
		return ErrSessionExpired
	case context.Cause(ss.ctx) == ErrDisconnected:
		return ErrDisconnected
	case sendErr != nil:
		// Checked before the request's context: a transport may end that
		// context when a send fails.
		return sendErr
	case ss.parent.Err() != nil:
		return ss.parent.Err()
	}
	return fallback
}

// startExpiry ends the session when its credential expires unrefreshed.
func (ss *Session) startExpiry() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if exp := ss.id.Expires(); ss.authOn && !exp.IsZero() {
		ss.expTimer = time.AfterFunc(time.Until(exp), ss.expire)
	}
}

func (ss *Session) expire() {
	ss.expired.Store(true)
	ss.cancel(ErrSessionExpired)
}

// identity returns the session's current identity.
func (ss *Session) identity() auth.Identity {
	ss.mu.Lock()
	defer ss.mu.Unlock()
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

func (ss *Session) emit(f *Frame) {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	ss.emitLocked(f)
}

func (ss *Session) emitLocked(f *Frame) {
	if ss.sendDone || ss.sendErr != nil {
		return
	}
	if err := ss.send(f); err != nil {
		ss.sendErr = err
		ss.cancel(err)
		return
	}
	if f.entry != nil {
		ss.lag.Delivered(f.entry.Event().CreatedAt)
	}
}

// errorFrame answers command or subscription id with err.
func (ss *Session) errorFrame(id, op string, err error) *Frame {
	return msgFrame(errorMsg(ss.app.logger, id, op, err))
}

// handle runs one command. It blocks only while the publish queue is full.
func (ss *Session) handle(req *heraldv1.ConnectRequest) {
	// Until the transport has closed an expired session, commands are
	// refused: nothing is done on an expired token.
	if ss.expired.Load() {
		ss.emit(ss.errorFrame(req.GetId(), "connect", ErrSessionExpired))
		return
	}
	if err := validateMsg(req); err != nil {
		ss.emit(ss.errorFrame(req.GetId(), "connect", err))
		return
	}
	switch c := req.Command.(type) {
	case *heraldv1.ConnectRequest_Subscribe:
		if isServerID(req.Id) {
			ss.emit(ss.errorFrame(req.Id, "subscribe", connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("subscription ids starting with %q are the server's: choose another id", serverPrefix))))
			return
		}
		if err := ss.app.admit(ss.authCtx(), c.Subscribe.Channels); err != nil {
			ss.emit(ss.errorFrame(req.Id, "subscribe", err))
			return
		}
		ss.subscribe(req.Id, c.Subscribe)
	case *heraldv1.ConnectRequest_Unsubscribe:
		ss.unsubscribe(req.Id, c.Unsubscribe.SubscriptionId)
	case *heraldv1.ConnectRequest_Publish:
		actx := ss.authCtx()
		refuse := func(err error) {
			ss.app.met.Published(metrics.ResultRefused, 1)
			ss.emit(ss.errorFrame(req.Id, "publish", err))
		}
		pol, err := ss.app.policy(actx, actPublish, c.Publish.Channel)
		if err != nil {
			refuse(err)
			return
		}
		// The connection's bucket first: a connection over its own rate
		// then spends none of its user's, which the user's other
		// connections share.
		if err := limits.CheckPublish(time.Now(), ss.rate, nil, "", 1); err != nil {
			refuse(connect.NewError(connect.CodeResourceExhausted, err))
			return
		}
		if err := ss.app.checkUserRate(actx); err != nil {
			refuse(err)
			return
		}
		ss.pub.enqueue(pubCmd{id: req.Id, req: publishReq{req: c.Publish, pol: pol}})
	case *heraldv1.ConnectRequest_Ping:
		ss.emit(msgFrame(&heraldv1.ConnectResponse{Id: req.Id, Message: &heraldv1.ConnectResponse_Pong{Pong: &heraldv1.Pong{}}}))
	case *heraldv1.ConnectRequest_Refresh:
		ss.refresh(req.Id, c.Refresh.Token)
	}
}

func (ss *Session) subscribe(id string, req *heraldv1.SubscribeRequest) {
	if id == "" {
		ss.emit(ss.errorFrame(id, "connect", connect.NewError(connect.CodeInvalidArgument,
			errors.New("subscribe needs an id: it names the subscription"))))
		return
	}
	// The cap counts channels: each costs a hub entry and fan-out work.
	// handle runs one command at a time, so none is added between this
	// count and the subscription's; ending ones only lower it.
	ss.mu.Lock()
	_, dup := ss.subs[id]
	have := 0
	for _, e := range ss.subs {
		have += len(e.sub.Channels())
	}
	closing := ss.closing
	ss.mu.Unlock()
	switch {
	case closing:
		return
	case dup:
		ss.emit(ss.errorFrame(id, "connect", connect.NewError(connect.CodeAlreadyExists,
			fmt.Errorf("subscription %q is already open; unsubscribe first or use another id", id))))
		return
	}
	if err := ss.app.lim.CheckSubscriptions(have, len(req.Channels)); err != nil {
		ss.emit(ss.errorFrame(id, "connect", connect.NewError(connect.CodeResourceExhausted, err)))
		return
	}
	sub, err := ss.app.hub.SubscribeFilter(ss.ctx, req.Channels, req.Cursor, filterOf(req.Filter))
	if err != nil {
		ss.emit(ss.errorFrame(id, "subscribe", err))
		return
	}
	entry := &sessionSub{sub: sub}
	ss.mu.Lock()
	if ss.closing {
		ss.mu.Unlock()
		sub.Close()
		return
	}
	ss.subs[id] = entry
	ss.subsWG.Add(1)
	ss.mu.Unlock()
	ss.emit(msgFrame(&heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Subscribed{
		Subscribed: subscribedProto(sub.Channels(), sub.Start()),
	}}))
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
				ss.emitLocked(ss.errorFrame(id, "subscribe", err))
			}
			ss.sendMu.Unlock()
			return
		}
		var f *Frame
		if msg.Checkpoint != 0 {
			f = msgFrame(&heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Checkpoint{
				Checkpoint: &heraldv1.Checkpoint{Position: msg.Checkpoint},
			}})
		} else if msg.Truncation != nil {
			f = msgFrame(&heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Subscribed{
				Subscribed: subscribedProto(entry.sub.Channels(), *msg.Truncation),
			}})
		} else {
			f = eventFrame(id, msg.Entry)
		}
		ss.sendMu.Lock()
		if entry.closed {
			ss.sendMu.Unlock()
			return
		}
		ss.emitLocked(f)
		ss.sendMu.Unlock()
	}
}

func (ss *Session) unsubscribe(id, subID string) {
	ss.mu.Lock()
	entry := ss.subs[subID]
	delete(ss.subs, subID)
	ss.mu.Unlock()
	if entry == nil {
		ss.emit(ss.errorFrame(id, "connect", connect.NewError(connect.CodeNotFound,
			fmt.Errorf("no open subscription %q: it has ended already, or was never opened on this connection", subID))))
		return
	}
	ss.end(entry, msgFrame(&heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Unsubscribed{Unsubscribed: &heraldv1.Unsubscribed{}}}))
}

// end closes a subscription already removed from subs, with last as its
// last frame: no frame of it follows.
func (ss *Session) end(entry *sessionSub, last *Frame) {
	entry.sub.Close()
	ss.sendMu.Lock()
	entry.closed = true
	ss.emitLocked(last)
	ss.sendMu.Unlock()
}

// close ends the session: subscriptions end, publishes already received
// are still committed and answered (within drainTimeout), later commands
// are refused. It waits for the session's goroutines but the reader.
func (ss *Session) close() {
	ss.closeOnce.Do(func() {
		ss.mu.Lock()
		if ss.expTimer != nil {
			ss.expTimer.Stop()
		}
		ss.closing = true
		subs := ss.subs
		ss.subs = map[string]*sessionSub{}
		ss.mu.Unlock()
		ss.cancel(nil)
		for _, e := range subs {
			e.sub.Close()
		}
		ss.subsWG.Wait()
		ss.pub.close()
		ss.sendMu.Lock()
		ss.sendDone = true
		ss.sendMu.Unlock()
	})
}

// publisher appends a session's publishes in arrival order, a batch at a
// time, and acknowledges each after commit. Publishes outlive the
// session's context: once received, a publish is committed (or answered
// with an error) even while the session closes, within drainTimeout.
type publisher struct {
	ss     *Session
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards closed, q and sending on q
	closed bool
	q      chan pubCmd         // made, with its goroutine, on the first publish
	bytes  *semaphore.Weighted // data of the queued publishes, bounded by publishQueueBytes
}

type pubCmd struct {
	id  string
	req publishReq
	n   int64 // its share of publisher.bytes
}

func (p *publisher) init(ss *Session) {
	p.ss = ss
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(ss.parent))
}

// enqueue hands a publish to the publisher, or answers it at once when
// the session no longer takes publishes. Every publish gets an answer.
func (p *publisher) enqueue(c pubCmd) {
	ss := p.ss
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		if p.q == nil {
			// Many connections only subscribe: their queue and publisher
			// goroutine would be idle memory.
			p.q = make(chan pubCmd, publishQueue)
			p.bytes = semaphore.NewWeighted(publishQueueBytes)
			p.wg.Go(p.run)
		}
		c.n = int64(min(len(c.req.req.Data), publishQueueBytes))
		// Closing (close cancels ctx before taking p.mu), or the token
		// expired: checked first, as select picks among ready cases at
		// random.
		if ss.ctx.Err() == nil && p.bytes.Acquire(ss.ctx, c.n) == nil {
			select {
			case p.q <- c:
				return
			case <-ss.ctx.Done():
				p.bytes.Release(c.n)
			}
		}
	}
	ss.emit(ss.errorFrame(c.id, "publish", errShuttingDown))
}

func (p *publisher) run() {
	ss := p.ss
	batch := make([]pubCmd, 0, publishBatch)
	reqs := make([]publishReq, 0, publishBatch)
	for first := range p.q {
		batch = append(batch[:0], first)
	fill:
		for len(batch) < publishBatch {
			select {
			case c, ok := <-p.q:
				if !ok {
					break fill
				}
				batch = append(batch, c)
			default:
				break fill
			}
		}
		reqs = reqs[:0]
		for _, c := range batch {
			reqs = append(reqs, c.req)
		}
		res, err := ss.app.publish(p.ctx, reqs)
		if err != nil && p.ctx.Err() != nil {
			err = errShuttingDown // the drain deadline passed, not the client's doing
		}
		for i, c := range batch {
			switch {
			case err != nil:
				ss.emit(ss.errorFrame(c.id, "publish", err))
			case res[i].err != nil:
				ss.emit(ss.errorFrame(c.id, "publish", res[i].err))
			default:
				ss.emit(msgFrame(&heraldv1.ConnectResponse{Id: c.id, Message: &heraldv1.ConnectResponse_Published{Published: res[i].resp}}))
			}
			p.bytes.Release(c.n)
		}
		if err != nil {
			// Keep the stream's order: what was queued behind a failed
			// batch fails too, so a client retrying in order cannot have
			// later events committed before earlier ones.
			p.failQueued(err)
		}
	}
}

func (p *publisher) failQueued(err error) {
	for {
		select {
		case c, ok := <-p.q:
			if !ok {
				return
			}
			p.ss.emit(p.ss.errorFrame(c.id, "publish", err))
			p.bytes.Release(c.n)
		default:
			return
		}
	}
}

// finish stops taking publishes and waits until every queued one is
// committed and answered (after a half-close).
func (p *publisher) finish() {
	p.stop()
	p.wg.Wait()
}

// close stops taking publishes and waits until every queued one is
// answered, committing them for at most drainTimeout (the session is
// ending).
func (p *publisher) close() {
	p.stop()
	t := time.AfterFunc(drainTimeout, p.cancel)
	defer t.Stop()
	p.wg.Wait()
	p.cancel()
}

func (p *publisher) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		if p.q != nil {
			close(p.q)
		}
	}
}
