package services

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/metrics"
)

// catchUpTimeout bounds how long a poll lets the hub catch up with the log.
const catchUpTimeout = time.Second

// Poll answers a long-poll: the events of the channels after the cursor at
// once when there are some, else the first that arrives within wait. It is
// a short-lived stream of the subscription core, so replay, dedupe and the
// truncation notice are the same as for every stream.
func (a *App) Poll(ctx context.Context, req *heraldv1.PollRequest) (*heraldv1.PollResponse, error) {
	channels, err := a.channelsOf(ctx, req.Channels)
	if err != nil {
		return nil, err
	}
	if err := a.admit(ctx, channels); err != nil {
		return nil, err
	}
	wait := req.Wait.AsDuration()
	// Waiting or not, what is committed now is answered at once: a poll
	// right after the client's own publish has it.
	a.catchUp(ctx)
	st, err := a.openAdmitted(ctx, channels, req.Cursor, req.Filter)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return a.poll(ctx, st, wait, a.cfg.pageSize(req.Limit))
}

// catchUp lets the hub dispatch what is already committed (it runs a moment
// behind the log) before a poll, or a poll right after a publish would
// miss it. Bounded: at worst the next poll has it.
func (a *App) catchUp(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	_ = a.hub.CatchUp(cctx)
}

// poll waits up to wait for the first event of st, then takes what else is
// ready without waiting, up to limit events.
func (a *App) poll(ctx context.Context, st *Stream, wait time.Duration, limit int) (*heraldv1.PollResponse, error) {
	resp := &heraldv1.PollResponse{Subscribed: st.Subscribed()}
	take := func(it Item) {
		if it.Checkpoint() != 0 {
			// The returned cursor covers the dropped events: keep waiting
			// for one that matches.
			return
		}
		if n := it.Notice(); n != nil {
			resp.Subscribed.HistoryTruncated = true
			resp.Subscribed.TruncatedThrough = max(resp.Subscribed.TruncatedThrough, n.TruncatedThrough)
			return
		}
		resp.Events = append(resp.Events, it.Event())
	}

	// The first event: wait for it (a truncation notice does not count).
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var err error
	for len(resp.Events) == 0 {
		var it Item
		if wait > 0 {
			it, err = st.Next(waitCtx)
		} else {
			it, err = st.TryNext(ctx)
		}
		if err != nil {
			break
		}
		take(it)
	}
	// Then what is ready.
	for err == nil && len(resp.Events) < limit {
		var it Item
		if it, err = st.TryNext(ctx); err == nil {
			take(it)
		}
	}
	resp.Cursor = st.LastPosition()
	var end *End
	switch {
	case err == nil:
		// Stopped at limit: more may be ready.
		_, perr := st.TryNext(ctx)
		resp.HasMore = !errors.Is(perr, ErrWouldBlock)
	case errors.Is(err, ErrWouldBlock):
	case waitCtx.Err() != nil && ctx.Err() == nil && !errors.As(err, &end):
		// The wait ended with nothing new: an empty page. (Checked on our
		// own context: an outage's error can wrap DeadlineExceeded too.)
	case len(resp.Events) > 0 && ctx.Err() == nil:
		// The stream ended (shutdown, outage) after some events: return
		// them; the next poll reports the problem.
	case errors.As(err, &end):
		return nil, end.ConnectError()
	default:
		return nil, toConnect(a.logger, "poll", err)
	}
	return resp, nil
}

// openAdmitted opens a stream the caller was already admitted to (channel
// count and permission checked): it takes a connection slot and ends the
// stream when the caller's credential expires.
func (a *App) openAdmitted(ctx context.Context, channels []string, cursor *int64, filter *heraldv1.EventFilter) (*Stream, error) {
	release, err := a.acquire(ctx)
	if err != nil {
		return nil, err
	}
	sub, err := a.hub.SubscribeFilter(ctx, channels, cursor, filterOf(filter))
	if err != nil {
		release()
		return nil, toConnect(a.logger, "subscribe", err)
	}
	n := len(sub.Channels())
	remove := a.registry.add(ctx, func() (int, int) { return 1, n }, func() { sub.Stop(errDisconnected) })
	st := newStream(ctx, sub, func() { remove(); release() }, a.logger)
	st.lag = a.met.Lag(metrics.TransportOf(ctx))
	return st, nil
}

// errPollWait refuses a long-poll of history in a shape it cannot have.
var errPollWait = connect.NewError(connect.CodeInvalidArgument,
	errors.New("invalid request: wait: long-poll needs the FORWARD direction and the LOG view"))
