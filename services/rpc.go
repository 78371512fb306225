package services

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
)

// The connect-go handlers: each RPC calls the App method of the same name.

type eventService struct{ a *App }

var _ heraldv1connect.EventServiceHandler = eventService{}

func (s eventService) Publish(ctx context.Context, req *connect.Request[heraldv1.PublishRequest]) (*connect.Response[heraldv1.PublishResponse], error) {
	return respond(s.a.Publish(ctx, req.Msg))
}

func (s eventService) Poll(ctx context.Context, req *connect.Request[heraldv1.PollRequest]) (*connect.Response[heraldv1.PollResponse], error) {
	return respond(s.a.Poll(ctx, req.Msg))
}

// Subscribe streams replay then live events: a loop over Open.
func (s eventService) Subscribe(ctx context.Context, req *connect.Request[heraldv1.SubscribeRequest], stream *connect.ServerStream[heraldv1.SubscribeResponse]) error {
	st, err := s.a.Open(ctx, OpenRequest{Channels: req.Msg.Channels, Cursor: req.Msg.Cursor, Filter: req.Msg.Filter})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := stream.Send(&heraldv1.SubscribeResponse{Message: &heraldv1.SubscribeResponse_Subscribed{Subscribed: st.Subscribed()}}); err != nil {
		return err
	}
	// Events go through the stream's codec as subscribeFrame, written from
	// the shared encodings.
	conn := stream.Conn()
	for {
		it, err := st.Next(ctx)
		if err != nil {
			var end *End
			if errors.As(err, &end) {
				return end.ConnectError()
			}
			return toConnect(s.a.logger, "subscribe", err)
		}
		if err := conn.Send(subscribeFrame{it}); err != nil {
			return err
		}
		st.Written()
	}
}

// Connect serves the bidirectional stream with a Session.
func (s eventService) Connect(ctx context.Context, stream *connect.BidiStream[heraldv1.ConnectRequest, heraldv1.ConnectResponse]) error {
	cursor, err := ParseServerCursor(stream.RequestHeader().Get(ServerCursorHeader))
	if err != nil {
		return err
	}
	sess, err := s.a.NewSession(ctx, cursor)
	if err != nil {
		return err
	}
	conn := stream.Conn()
	return sess.Serve(stream.Receive, func(f *Frame) error { return conn.Send(f) })
}

type historyService struct{ a *App }

var _ heraldv1connect.HistoryServiceHandler = historyService{}

func (s historyService) ListEvents(ctx context.Context, req *connect.Request[heraldv1.ListEventsRequest]) (*connect.Response[heraldv1.ListEventsResponse], error) {
	return respond(s.a.ListEvents(ctx, req.Msg))
}

func (s historyService) GetEvent(ctx context.Context, req *connect.Request[heraldv1.GetEventRequest]) (*connect.Response[heraldv1.GetEventResponse], error) {
	return respond(s.a.GetEvent(ctx, req.Msg))
}

func (s historyService) UpdateEvent(ctx context.Context, req *connect.Request[heraldv1.UpdateEventRequest]) (*connect.Response[heraldv1.UpdateEventResponse], error) {
	return respond(s.a.UpdateEvent(ctx, req.Msg))
}

func (s historyService) DeleteEvent(ctx context.Context, req *connect.Request[heraldv1.DeleteEventRequest]) (*connect.Response[heraldv1.DeleteEventResponse], error) {
	return respond(s.a.DeleteEvent(ctx, req.Msg))
}

type channelService struct{ a *App }

var _ heraldv1connect.ChannelServiceHandler = channelService{}

func (s channelService) CreateChannel(ctx context.Context, req *connect.Request[heraldv1.CreateChannelRequest]) (*connect.Response[heraldv1.CreateChannelResponse], error) {
	return respond(s.a.CreateChannel(ctx, req.Msg))
}

func (s channelService) GetChannel(ctx context.Context, req *connect.Request[heraldv1.GetChannelRequest]) (*connect.Response[heraldv1.GetChannelResponse], error) {
	return respond(s.a.GetChannel(ctx, req.Msg))
}

func (s channelService) ListChannels(ctx context.Context, req *connect.Request[heraldv1.ListChannelsRequest]) (*connect.Response[heraldv1.ListChannelsResponse], error) {
	return respond(s.a.ListChannels(ctx, req.Msg))
}

func (s channelService) UpdateChannel(ctx context.Context, req *connect.Request[heraldv1.UpdateChannelRequest]) (*connect.Response[heraldv1.UpdateChannelResponse], error) {
	return respond(s.a.UpdateChannel(ctx, req.Msg))
}

func (s channelService) DeleteChannel(ctx context.Context, req *connect.Request[heraldv1.DeleteChannelRequest]) (*connect.Response[heraldv1.DeleteChannelResponse], error) {
	return respond(s.a.DeleteChannel(ctx, req.Msg))
}

func respond[T any](msg *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(msg), nil
}
