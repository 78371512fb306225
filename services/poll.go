package services

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/fanout"
)

// catchUpTimeout bounds how long a poll without wait lets the hub catch up
// with the log.
const catchUpTimeout = time.Second

// Poll answers a long-poll through the subscription core.
func (s *EventService) Poll(ctx context.Context, req *connect.Request[heraldv1.PollRequest]) (*connect.Response[heraldv1.PollResponse], error) {
	if len(req.Msg.Channels) == 0 {
		id, _ := auth.FromContext(ctx)
		req.Msg.Channels = id.Channels()
		if len(req.Msg.Channels) == 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("channels: give at least one channel, or a token whose channels claim lists some"))
		}
	}
	if err := s.CheckChannels(len(req.Msg.Channels)); err != nil {
		return nil, err
	}
	if err := authorize(ctx, s.ns, actSubscribe, req.Msg.Channels...); err != nil {
		return nil, err
	}
	release, err := s.streams.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	m := req.Msg
	resp, err := poll(ctx, s.hub, m.Channels, m.Cursor, m.Wait.AsDuration(), s.pages.size(m.Limit))
	if err != nil {
		return nil, toConnect(s.logger, "poll", err)
	}
	return connect.NewResponse(resp), nil
}

// poll is long-polling as a short-lived subscription: it subscribes at
// cursor, waits up to wait for the first message, then takes what else is
// ready without waiting, up to limit events. Replay, dedupe and the
// truncated signal are the subscription core's, as for every stream.
func poll(ctx context.Context, hub *fanout.Hub, channels []string, cursor *int64, wait time.Duration, limit int) (*heraldv1.PollResponse, error) {
	if wait == 0 {
		// Not waiting: first let the hub dispatch what is already
		// committed (a moment behind the log), or a poll right after a
		// publish would miss it. Bounded: at worst the next poll has it.
		cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
		_ = hub.CatchUp(cctx)
		cancel()
	}
	sub, err := hub.Subscribe(ctx, channels, cursor)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	resp := &heraldv1.PollResponse{Subscribed: SubscribedProto(sub.Channels(), sub.Start())}
	take := func(msg fanout.Message) {
		if t := msg.Truncation; t != nil {
			resp.Subscribed.HistoryTruncated = true
			resp.Subscribed.TruncatedThrough = max(resp.Subscribed.TruncatedThrough, t.TruncatedThrough)
			return
		}
		resp.Events = append(resp.Events, EventProto(msg.Event))
	}

	// The first event: wait for it (a truncation notice does not count).
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for len(resp.Events) == 0 {
		var msg fanout.Message
		if wait > 0 {
			msg, err = sub.Next(waitCtx)
		} else {
			msg, err = sub.TryNext(ctx)
		}
		if err != nil {
			break
		}
		take(msg)
	}
	// Then what is ready.
	for err == nil && len(resp.Events) < limit {
		var msg fanout.Message
		if msg, err = sub.TryNext(ctx); err == nil {
			take(msg)
		}
	}
	resp.Cursor = sub.LastPosition()
	switch {
	case err == nil:
		// Stopped at limit: more may be ready.
		_, perr := sub.TryNext(ctx)
		resp.HasMore = !errors.Is(perr, fanout.ErrWouldBlock)
	case errors.Is(err, fanout.ErrWouldBlock):
	case waitCtx.Err() != nil && ctx.Err() == nil && !errors.As(err, new(*fanout.EndError)):
		// The wait ended with nothing new: an empty page. (Checked on our
		// own context: an outage's error can wrap DeadlineExceeded too.)
	case len(resp.Events) > 0 && ctx.Err() == nil:
		// The subscription ended (shutdown, outage) after some events:
		// return them; the next poll reports the problem.
	default:
		return nil, err
	}
	return resp, nil
}
