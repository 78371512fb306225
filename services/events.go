package services

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
)

// EventService implements heraldv1connect.EventServiceHandler.
type EventService struct {
	log     eventlog.Log
	hub     *fanout.Hub
	logger  *slog.Logger
	streams *Streams // nil: unlimited
	// userRates bounds end users' publish rate; nil: unlimited.
	userRates *limits.Keyed
	// conn holds the per-connection and per-request limits (see
	// WithConnectionLimits).
	conn    limits.Limits
	ns      *namespace.Set      // nil: the default policy everywhere
	creator *channelCreator     // creates channels with namespace settings; nil: off
	authn   *auth.Authenticator // verifies refresh tokens; nil: no refresh
	pages   PageSizes           // of Poll
}

// WithPageSizes sets the default and largest number of events one Poll
// returns.
func (s *EventService) WithPageSizes(p PageSizes) *EventService {
	s.pages = p
	return s
}

var _ heraldv1connect.EventServiceHandler = (*EventService)(nil)

// NewEventService returns the event service over log and hub.
func NewEventService(log eventlog.Log, hub *fanout.Hub, logger *slog.Logger) *EventService {
	if logger == nil {
		logger = slog.Default()
	}
	return &EventService{log: log, hub: hub, logger: logger, conn: limits.Defaults(), pages: DefaultPageSizes()}
}

// WithStreams bounds the service's streams (Subscribe, Connect, Poll)
// with st, which the gateway shares for WebSockets and SSE.
func (s *EventService) WithStreams(st *Streams) *EventService {
	s.streams = st
	return s
}

// Streams returns the stream limiter (nil when unlimited).
func (s *EventService) Streams() *Streams { return s.streams }

// Publish appends one event.
func (s *EventService) Publish(ctx context.Context, req *connect.Request[heraldv1.PublishRequest]) (*connect.Response[heraldv1.PublishResponse], error) {
	if err := authorize(ctx, s.ns, actPublish, req.Msg.Channel); err != nil {
		return nil, err
	}
	if err := s.checkUserRate(ctx); err != nil {
		return nil, err
	}
	res, err := s.publish(ctx, []*heraldv1.PublishRequest{req.Msg})
	if err != nil {
		return nil, toConnect(s.logger, "publish", err)
	}
	if res[0].err != nil {
		return nil, toConnect(s.logger, "publish", res[0].err)
	}
	return connect.NewResponse(res[0].resp), nil
}

type publishResult struct {
	resp *heraldv1.PublishResponse
	err  error
}

// publish appends reqs in order, in one call to the log. A publish the
// namespace rules refuse gets its own error; the others go ahead.
func (s *EventService) publish(ctx context.Context, reqs []*heraldv1.PublishRequest) ([]publishResult, error) {
	out := make([]publishResult, len(reqs))
	ps := make([]eventlog.Publish, 0, len(reqs))
	idx := make([]int, 0, len(reqs)) // ps[j] is reqs[idx[j]]
	for i, r := range reqs {
		p := eventlog.Publish{Channel: r.Channel, Type: r.Type, Data: r.Data, IdempotencyKey: r.IdempotencyKey, Author: authorOf(ctx)}
		if err := s.prepare(ctx, &p); err != nil {
			if !errors.Is(err, eventlog.ErrTooLarge) && !isNamespaceError(err) {
				return nil, err // the log failed: nothing is written
			}
			out[i].err = err
			continue
		}
		ps = append(ps, p)
		idx = append(idx, i)
	}
	if len(ps) == 0 {
		return out, nil
	}
	res, errs, err := s.log.Append(ctx, ps)
	if err != nil {
		return nil, err
	}
	for j, i := range idx {
		if errs != nil && errs[j] != nil {
			out[i].err = errs[j]
			continue
		}
		out[i].resp = &heraldv1.PublishResponse{Event: EventProto(&res[j].Event), Duplicate: res[j].Duplicate}
	}
	return out, nil
}

// Subscribe streams replay then live events of the requested channels.
func (s *EventService) Subscribe(ctx context.Context, req *connect.Request[heraldv1.SubscribeRequest], stream *connect.ServerStream[heraldv1.SubscribeResponse]) error {
	if err := s.CheckChannels(len(req.Msg.Channels)); err != nil {
		return err
	}
	if err := authorize(ctx, s.ns, actSubscribe, req.Msg.Channels...); err != nil {
		return err
	}
	release, err := s.streams.Acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := WithExpiry(ctx)
	defer cancel()
	sub, err := s.hub.Subscribe(ctx, req.Msg.Channels, req.Msg.Cursor)
	if err != nil {
		return toConnect(s.logger, "subscribe", err)
	}
	defer sub.Close()
	if err := stream.Send(&heraldv1.SubscribeResponse{Message: &heraldv1.SubscribeResponse_Subscribed{
		Subscribed: SubscribedProto(sub.Channels(), sub.Start()),
	}}); err != nil {
		return err
	}
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			if TokenExpired(ctx) {
				return expiredError(sub.LastPosition())
			}
			return toConnect(s.logger, "subscribe", err)
		}
		if err := stream.Send(subscribeResponse(sub, msg)); err != nil {
			return err
		}
	}
}

func subscribeResponse(sub *fanout.Subscription, msg fanout.Message) *heraldv1.SubscribeResponse {
	if msg.Truncation != nil {
		return &heraldv1.SubscribeResponse{Message: &heraldv1.SubscribeResponse_Subscribed{
			Subscribed: SubscribedProto(sub.Channels(), *msg.Truncation),
		}}
	}
	return &heraldv1.SubscribeResponse{Message: &heraldv1.SubscribeResponse_Event{Event: EventProto(msg.Event)}}
}

// errorFrame turns err into a Connect stream Error message.
func (s *EventService) errorFrame(id, op string, err error) *heraldv1.ConnectResponse {
	return &heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Error{Error: ErrorProto(s.logger, op, err)}}
}
