package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/metrics"
)

// OpenRequest says what to subscribe to.
type OpenRequest struct {
	// Channels to subscribe to; none: the channels the caller's token
	// lists (its "channels" claim).
	Channels []string
	// Cursor is the position to replay after; nil: live only.
	Cursor *int64
	// Filter selects the events delivered (nil: all); the stream then
	// also delivers checkpoints.
	Filter *heraldv1.EventFilter
}

// ErrWouldBlock is returned by Stream.TryNext when nothing is ready.
var ErrWouldBlock = fanout.ErrWouldBlock

// Stream is an open subscription: replay after the cursor, then live, each
// event exactly once and in position order (the fanout subscription core).
// One goroutine calls Next/TryNext; Close may be called from any.
type Stream struct {
	sub     *fanout.Subscription
	lag     metrics.Observer
	written []time.Time // creation times of the events handed out since Written
	release func()
	expiry  *time.Timer
	logger  *slog.Logger
	closed  bool
}

// Open admits and opens a subscription for the caller in ctx: it checks the
// channel count, authorizes every channel, takes a connection slot (the
// stream counts against MaxConnections), and ends the stream when the
// caller's credential expires. Refusals are connect errors with a stable
// code. The stream must be closed.
func (a *App) Open(ctx context.Context, req OpenRequest) (*Stream, error) {
	channels, err := a.channelsOf(ctx, req.Channels)
	if err != nil {
		return nil, err
	}
	if err := a.admit(ctx, channels); err != nil {
		a.met.ConnRefused(ctx, connect.CodeOf(err).String())
		return nil, err
	}
	return a.openAdmitted(ctx, channels, req.Cursor, req.Filter)
}

// filterOf is the subscription core's form of an API filter: nil when it
// selects every event.
func filterOf(f *heraldv1.EventFilter) *fanout.Filter {
	if len(f.GetTypes()) == 0 && len(f.GetTags()) == 0 {
		return nil
	}
	return &fanout.Filter{Types: f.GetTypes(), Tags: f.GetTags()}
}

// newStream wraps sub, which holds a connection slot (release), and stops
// it when the caller's credential in ctx expires.
func newStream(ctx context.Context, sub *fanout.Subscription, release func(), logger *slog.Logger) *Stream {
	st := &Stream{sub: sub, release: release, logger: logger}
	if id, on := auth.FromContext(ctx); on && !id.Expires().IsZero() {
		st.expiry = time.AfterFunc(time.Until(id.Expires()), func() { sub.Stop(errTokenExpired) })
	}
	return st
}

// channelsOf returns the channels a request names, or, when it names none,
// those of the caller's token ("channels" claim).
func (a *App) channelsOf(ctx context.Context, channels []string) ([]string, error) {
	if len(channels) > 0 {
		return channels, nil
	}
	id, _ := auth.FromContext(ctx)
	if chs := id.Channels(); len(chs) > 0 {
		return chs, nil
	}
	return nil, connect.NewError(connect.CodeInvalidArgument,
		errors.New("channels: give at least one channel, or a token whose channels claim lists some"))
}

// admit is the check every subscription passes, whatever its transport:
// the number of channels, then the caller's permission on each.
func (a *App) admit(ctx context.Context, channels []string) error {
	if err := a.lim.CheckChannels(len(channels)); err != nil {
		// The request's shape is at fault, as for the proto's own ceiling:
		// retrying it unchanged never succeeds.
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid request: channels: %w", err))
	}
	return a.authorize(ctx, actSubscribe, channels...)
}

// Admit counts a request toward the connection limits (MaxConnections,
// and MaxConnectionsPerUser for end users) as it arrives, before its body
// is read, or refuses it with resource_exhausted naming the limit. Every
// request counts, unary and streaming alike, while it is open. It returns
// ctx carrying the request's slot: a stream opened in that request (Open,
// NewSession, a long-poll) takes the slot over rather than counting again,
// and holds it until the stream ends, even past the request's handler (a
// WebSocket). done releases the slot unless a stream took it over; call
// it when the request ends. Safe for concurrent use.
func (a *App) Admit(ctx context.Context) (_ context.Context, done func(), _ error) {
	release, err := a.count(ctx)
	if err != nil {
		return ctx, nil, err
	}
	s := &slot{release: release}
	return context.WithValue(ctx, slotKey{}, s), s.take, nil
}

// slot is a request's place in the connection count.
type slot struct {
	taken   atomic.Bool
	release func()
}

type slotKey struct{}

// take returns the slot's release once: to the stream that takes it over,
// or to the request's end.
func (s *slot) take() {
	if s.taken.CompareAndSwap(false, true) {
		s.release()
	}
}

// acquire gives a long-lived request (stream, WebSocket, SSE, long-poll)
// its connection slot: the one its request was admitted with (Admit), or,
// for a request that was not, a new one. Call release when it ends.
func (a *App) acquire(ctx context.Context) (release func(), err error) {
	if s, ok := ctx.Value(slotKey{}).(*slot); ok && s.taken.CompareAndSwap(false, true) {
		return s.release, nil
	}
	return a.count(ctx)
}

// count counts one more request for the caller in ctx, or refuses it with
// resource_exhausted naming the limit.
//
// End users (JWT identities) are counted under their name. API keys are
// not: one key is typically a whole backend service, whose connections the
// instance limit bounds. Anonymous callers are not either: they have no
// stable name, and the instance limit bounds them.
func (a *App) count(ctx context.Context) (release func(), err error) {
	var user string
	if id, on := auth.FromContext(ctx); on && id.Kind() == auth.User {
		user = id.Name()
	}
	release, err = a.conns.Acquire(user)
	if err != nil {
		var lim *limits.Error
		reason := "limit"
		if errors.As(err, &lim) {
			reason = string(lim.Limit)
		}
		a.met.ConnRefused(ctx, reason)
		if lim != nil && lim.Limit == limits.LimitConnectionsPerUser {
			// Say what counts: a browser user rarely knows.
			err = fmt.Errorf("%w (every tab, device, stream and request of this user on this server counts)", err)
		}
		return nil, connect.NewError(connect.CodeResourceExhausted, err)
	}
	closed, free := a.met.ConnOpened(ctx), release
	return func() { closed(); free() }, nil
}

// Subscribed describes where the stream starts (the cursor, and whether
// history after it was truncated): send it before the first item.
func (st *Stream) Subscribed() *heraldv1.Subscribed {
	return subscribedProto(st.sub.Channels(), st.sub.Start())
}

// Channels returns the subscribed channels, sorted.
func (st *Stream) Channels() []string { return st.sub.Channels() }

// LastPosition is the position of the last event delivered, or the start
// cursor: where a new stream resumes.
func (st *Stream) LastPosition() int64 { return st.sub.LastPosition() }

// Next returns the next item, waiting for one. It fails with an *End when
// the server ended the stream (slow consumer, shutdown, outage, expired
// credential), with ctx's error when ctx ends, or ErrClosed after Close.
func (st *Stream) Next(ctx context.Context) (Item, error) {
	m, err := st.sub.Next(ctx)
	if err != nil {
		return Item{}, st.endOf(err)
	}
	st.handOut(m)
	return itemOf(st.sub.Channels(), m), nil
}

// TryNext is Next without waiting for new events: once nothing is ready it
// returns ErrWouldBlock.
func (st *Stream) TryNext(ctx context.Context) (Item, error) {
	m, err := st.sub.TryNext(ctx)
	if err != nil {
		return Item{}, st.endOf(err)
	}
	st.handOut(m)
	return itemOf(st.sub.Channels(), m), nil
}

// handOut remembers an event handed to the transport, for Written.
func (st *Stream) handOut(m fanout.Message) {
	if st.lag.Enabled() && m.Entry != nil {
		st.written = append(st.written, m.Entry.Event().CreatedAt)
	}
}

// Written tells the stream that the transport has written (and flushed)
// every item Next and TryNext returned so far: their delivery lag is
// measured from their creation to now. Call it from the goroutine that
// calls Next.
func (st *Stream) Written() {
	if len(st.written) == 0 {
		return
	}
	now := time.Now()
	for _, t := range st.written {
		st.lag.DeliveredAt(t, now)
	}
	st.written = st.written[:0]
}

// ErrClosed is returned by a stream's Next after Close.
var ErrClosed = fanout.ErrClosed

func (st *Stream) endOf(err error) error {
	var end *fanout.EndError
	if !errors.As(err, &end) {
		return err
	}
	return endOf(st.logger, end)
}

// Close ends the stream and frees its connection slot. Safe to call more
// than once; call it from the goroutine that calls Next.
func (st *Stream) Close() {
	if st.closed {
		return
	}
	st.closed = true
	if st.expiry != nil {
		st.expiry.Stop()
	}
	st.sub.Close()
	st.release()
}

// End ends a stream or a subscription: why, and where to resume. Every
// transport renders it its own way (an RPC error with a StreamEnd detail,
// an SSE @end event, a WebSocket error frame) from the same fields.
type End struct {
	Code         connect.Code
	Reason       heraldv1.StreamEndReason
	LastPosition int64
	Message      string
}

func (e *End) Error() string { return e.Message }

// Proto is the end as the Error message of the API.
func (e *End) Proto() *heraldv1.Error {
	return &heraldv1.Error{Code: e.Code.String(), Message: e.Message,
		End: &heraldv1.StreamEnd{Reason: e.Reason, LastPosition: e.LastPosition}}
}

// ConnectError is the end as an RPC error carrying the StreamEnd detail.
func (e *End) ConnectError() *connect.Error {
	cerr := connect.NewError(e.Code, errors.New(e.Message))
	if d, err := connect.NewErrorDetail(&heraldv1.StreamEnd{Reason: e.Reason, LastPosition: e.LastPosition}); err == nil {
		cerr.AddDetail(d)
	}
	return cerr
}

// errTokenExpired is why a stream whose credential expired was stopped.
var errTokenExpired error = stopCause{"token expired", metrics.EndTokenExpired}

// stopCause is why the services stopped a subscription; it names its
// metrics label (fanout counts ended subscriptions by reason).
type stopCause struct{ msg, reason string }

func (c stopCause) Error() string         { return c.msg }
func (c stopCause) MetricsReason() string { return c.reason }

// endOf describes how a subscription ended, for the client to resume. The
// log's own error (an outage's) is logged, not shown.
func endOf(logger *slog.Logger, end *fanout.EndError) *End {
	e := &End{LastPosition: end.LastPosition}
	switch end.Reason {
	case fanout.ReasonSlowConsumer:
		e.Code, e.Reason = connect.CodeResourceExhausted, heraldv1.StreamEndReason_STREAM_END_REASON_SLOW_CONSUMER
	case fanout.ReasonShutdown:
		e.Code, e.Reason = connect.CodeUnavailable, heraldv1.StreamEndReason_STREAM_END_REASON_SHUTDOWN
	case fanout.ReasonUnavailable:
		e.Code, e.Reason = connect.CodeUnavailable, heraldv1.StreamEndReason_STREAM_END_REASON_UNAVAILABLE
		logger.Warn("subscription ended", "err", end.Err)
	case fanout.ReasonStopped:
		if errors.Is(end.Err, errTokenExpired) {
			e.Code, e.Reason = connect.CodeUnauthenticated, heraldv1.StreamEndReason_STREAM_END_REASON_TOKEN_EXPIRED
			e.Message = fmt.Sprintf("token expired: reconnect with a fresh token and resume from position %d", end.LastPosition)
			return e
		}
		e.Code = connect.CodeAborted
	}
	e.Message = (&fanout.EndError{Reason: end.Reason, LastPosition: end.LastPosition}).Error()
	return e
}

// subscribedProto describes the start of a subscription.
func subscribedProto(channels []string, st fanout.Start) *heraldv1.Subscribed {
	return &heraldv1.Subscribed{
		Channels:         channels,
		Cursor:           st.Cursor,
		HistoryTruncated: st.Truncated,
		TruncatedThrough: st.TruncatedThrough,
	}
}
