package services

import (
	"context"
	"log/slog"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/namespace"
)

// ChannelService implements heraldv1connect.ChannelServiceHandler.
type ChannelService struct {
	log    eventlog.Log
	logger *slog.Logger
	ns     *namespace.Set
	pages  PageSizes
	// onDelete is told of each deleted channel (EventService.ForgetChannel).
	onDelete func(name string)
}

// OnDelete calls f with the name of each channel this service deletes.
func (s *ChannelService) OnDelete(f func(name string)) *ChannelService {
	s.onDelete = f
	return s
}

// WithPageSizes sets the default and largest page of ListChannels.
func (s *ChannelService) WithPageSizes(p PageSizes) *ChannelService {
	s.pages = p
	return s
}

var _ heraldv1connect.ChannelServiceHandler = (*ChannelService)(nil)

// NewChannelService returns the channel service over log.
func NewChannelService(log eventlog.Log, logger *slog.Logger) *ChannelService {
	if logger == nil {
		logger = slog.Default()
	}
	return &ChannelService{log: log, logger: logger, pages: DefaultPageSizes()}
}

// CreateChannel creates a channel; unset settings take the defaults.
func (s *ChannelService) CreateChannel(ctx context.Context, req *connect.Request[heraldv1.CreateChannelRequest]) (*connect.Response[heraldv1.CreateChannelResponse], error) {
	if err := authorizeAdmin(ctx, "create channels"); err != nil {
		return nil, err
	}
	pol, err := s.ns.For(req.Msg.Name)
	if err != nil {
		return nil, toConnect(s.logger, "create channel", err)
	}
	settings := settingsPatch(req.Msg.Settings).Apply(namespaceSettings(pol))
	ch, err := s.log.CreateChannel(ctx, req.Msg.Name, settings)
	if err != nil {
		return nil, toConnect(s.logger, "create channel", err)
	}
	return connect.NewResponse(&heraldv1.CreateChannelResponse{Channel: channelProto(ch)}), nil
}

// GetChannel returns a channel.
func (s *ChannelService) GetChannel(ctx context.Context, req *connect.Request[heraldv1.GetChannelRequest]) (*connect.Response[heraldv1.GetChannelResponse], error) {
	if err := authorize(ctx, s.ns, actHistory, req.Msg.Name); err != nil {
		return nil, err
	}
	ch, err := s.log.GetChannel(ctx, req.Msg.Name)
	if err != nil {
		return nil, toConnect(s.logger, "get channel", err)
	}
	return connect.NewResponse(&heraldv1.GetChannelResponse{Channel: channelProto(ch)}), nil
}

// ListChannels lists channels by name. The page token is the last name of
// the previous page.
func (s *ChannelService) ListChannels(ctx context.Context, req *connect.Request[heraldv1.ListChannelsRequest]) (*connect.Response[heraldv1.ListChannelsResponse], error) {
	if err := authorizeAdmin(ctx, "list channels"); err != nil {
		return nil, err
	}
	size := s.pages.size(req.Msg.PageSize)
	page, err := s.log.ListChannels(ctx, req.Msg.PageToken, req.Msg.Prefix, size)
	if err != nil {
		return nil, toConnect(s.logger, "list channels", err)
	}
	resp := &heraldv1.ListChannelsResponse{NextPageToken: page.Next}
	for _, c := range page.Channels {
		resp.Channels = append(resp.Channels, channelProto(c))
	}
	return connect.NewResponse(resp), nil
}

// UpdateChannel changes the settings set in the request.
func (s *ChannelService) UpdateChannel(ctx context.Context, req *connect.Request[heraldv1.UpdateChannelRequest]) (*connect.Response[heraldv1.UpdateChannelResponse], error) {
	if err := authorizeAdmin(ctx, "change channel settings"); err != nil {
		return nil, err
	}
	ch, err := s.log.UpdateChannel(ctx, req.Msg.Name, settingsPatch(req.Msg.Settings))
	if err != nil {
		return nil, toConnect(s.logger, "update channel", err)
	}
	return connect.NewResponse(&heraldv1.UpdateChannelResponse{Channel: channelProto(ch)}), nil
}

// DeleteChannel deletes a channel and its events.
func (s *ChannelService) DeleteChannel(ctx context.Context, req *connect.Request[heraldv1.DeleteChannelRequest]) (*connect.Response[heraldv1.DeleteChannelResponse], error) {
	if err := authorizeAdmin(ctx, "delete channels"); err != nil {
		return nil, err
	}
	if err := s.log.DeleteChannel(ctx, req.Msg.Name); err != nil {
		return nil, toConnect(s.logger, "delete channel", err)
	}
	if s.onDelete != nil {
		s.onDelete(req.Msg.Name)
	}
	return connect.NewResponse(&heraldv1.DeleteChannelResponse{}), nil
}
