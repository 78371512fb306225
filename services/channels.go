package services

import (
	"context"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// CreateChannel creates a channel; unset settings take the defaults.
func (a *App) CreateChannel(ctx context.Context, m *heraldv1.CreateChannelRequest) (*heraldv1.CreateChannelResponse, error) {
	if err := authorizeAdmin(ctx, "create channels"); err != nil {
		return nil, err
	}
	pol, err := a.cfg.Namespaces.For(m.Name)
	if err != nil {
		return nil, toConnect(a.logger, "create channel", err)
	}
	settings := settingsPatch(m.Settings).Apply(namespaceSettings(pol))
	ch, err := a.log.CreateChannel(ctx, m.Name, settings)
	if err != nil {
		return nil, toConnect(a.logger, "create channel", err)
	}
	return &heraldv1.CreateChannelResponse{Channel: channelProto(ch)}, nil
}

// GetChannel returns a channel.
func (a *App) GetChannel(ctx context.Context, m *heraldv1.GetChannelRequest) (*heraldv1.GetChannelResponse, error) {
	if err := a.authorize(ctx, actHistory, m.Name); err != nil {
		return nil, err
	}
	ch, err := a.log.GetChannel(ctx, m.Name)
	if err != nil {
		return nil, toConnect(a.logger, "get channel", err)
	}
	return &heraldv1.GetChannelResponse{Channel: channelProto(ch)}, nil
}

// ListChannels lists channels by name. The page token is the last name of
// the previous page.
func (a *App) ListChannels(ctx context.Context, m *heraldv1.ListChannelsRequest) (*heraldv1.ListChannelsResponse, error) {
	if err := authorizeAdmin(ctx, "list channels"); err != nil {
		return nil, err
	}
	size := a.cfg.pageSize(m.PageSize)
	page, err := a.log.ListChannels(ctx, m.PageToken, m.Prefix, size)
	if err != nil {
		return nil, toConnect(a.logger, "list channels", err)
	}
	resp := &heraldv1.ListChannelsResponse{NextPageToken: page.Next}
	for _, c := range page.Channels {
		resp.Channels = append(resp.Channels, channelProto(c))
	}
	return resp, nil
}

// UpdateChannel changes the settings set in the request.
func (a *App) UpdateChannel(ctx context.Context, m *heraldv1.UpdateChannelRequest) (*heraldv1.UpdateChannelResponse, error) {
	if err := authorizeAdmin(ctx, "change channel settings"); err != nil {
		return nil, err
	}
	ch, err := a.log.UpdateChannel(ctx, m.Name, settingsPatch(m.Settings))
	if err != nil {
		return nil, toConnect(a.logger, "update channel", err)
	}
	return &heraldv1.UpdateChannelResponse{Channel: channelProto(ch)}, nil
}

// DeleteChannel deletes a channel and its events.
func (a *App) DeleteChannel(ctx context.Context, m *heraldv1.DeleteChannelRequest) (*heraldv1.DeleteChannelResponse, error) {
	if err := authorizeAdmin(ctx, "delete channels"); err != nil {
		return nil, err
	}
	if err := a.log.DeleteChannel(ctx, m.Name); err != nil {
		return nil, toConnect(a.logger, "delete channel", err)
	}
	a.creator.forget(m.Name)
	return &heraldv1.DeleteChannelResponse{}, nil
}
