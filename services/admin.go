package services

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
)

// AdminSource is what the admin API needs from the instance around the
// application: its figures and the deployment's instances (the server
// wiring has them).
type AdminSource interface {
	Stats(ctx context.Context) (*heraldv1.GetStatsResponse, error)
	Instances(ctx context.Context) ([]*heraldv1.Instance, error)
}

// channelStatser is the log's optional ChannelStats (both logs have it).
type channelStatser interface {
	ChannelStats(ctx context.Context, names []string) (map[string]eventlog.ChannelStats, error)
}

// RegisterAdmin mounts the AdminService on mux (the admin listener's), with
// the request validation; opts add to it as for Register. With
// authentication on, every call needs the admin scope.
func (a *App) RegisterAdmin(mux *http.ServeMux, src AdminSource, opts ...connect.HandlerOption) {
	all := append(opts, connect.WithInterceptors(Interceptor{}), connect.WithReadMaxBytes(a.cfg.MaxMessageBytes))
	mux.Handle(heraldv1connect.NewAdminServiceHandler(adminService{a, src}, all...))
}

type adminService struct {
	a   *App
	src AdminSource
}

var _ heraldv1connect.AdminServiceHandler = adminService{}

func (s adminService) GetStats(ctx context.Context, _ *connect.Request[heraldv1.GetStatsRequest]) (*connect.Response[heraldv1.GetStatsResponse], error) {
	if err := authorizeAdmin(ctx, "see the instance's figures"); err != nil {
		return nil, err
	}
	return respond(s.src.Stats(ctx))
}

func (s adminService) ListInstances(ctx context.Context, _ *connect.Request[heraldv1.ListInstancesRequest]) (*connect.Response[heraldv1.ListInstancesResponse], error) {
	if err := authorizeAdmin(ctx, "list instances"); err != nil {
		return nil, err
	}
	ins, err := s.src.Instances(ctx)
	if err != nil {
		return nil, toConnect(s.a.logger, "list instances", err)
	}
	return connect.NewResponse(&heraldv1.ListInstancesResponse{Instances: ins}), nil
}

func (s adminService) ListChannelStats(ctx context.Context, req *connect.Request[heraldv1.ListChannelStatsRequest]) (*connect.Response[heraldv1.ListChannelStatsResponse], error) {
	if err := authorizeAdmin(ctx, "list channels"); err != nil {
		return nil, err
	}
	a, m := s.a, req.Msg
	page, err := a.log.ListChannels(ctx, m.PageToken, m.Prefix, a.cfg.pageSize(m.PageSize))
	if err != nil {
		return nil, toConnect(a.logger, "list channels", err)
	}
	names := make([]string, len(page.Channels))
	for i, c := range page.Channels {
		names[i] = c.Name
	}
	var stats map[string]eventlog.ChannelStats
	if cs, ok := a.log.(channelStatser); ok {
		if stats, err = cs.ChannelStats(ctx, names); err != nil {
			return nil, toConnect(a.logger, "channel stats", err)
		}
	}
	resp := &heraldv1.ListChannelStatsResponse{NextPageToken: page.Next}
	for _, c := range page.Channels {
		st := stats[c.Name]
		cs := &heraldv1.ChannelStats{Channel: channelProto(c), Events: st.Events, Head: st.Head}
		if !st.LastActivity.IsZero() {
			cs.LastActivityTime = timestamppb.New(st.LastActivity)
		}
		resp.Channels = append(resp.Channels, cs)
	}
	return connect.NewResponse(resp), nil
}

func (s adminService) ListConnections(ctx context.Context, _ *connect.Request[heraldv1.ListConnectionsRequest]) (*connect.Response[heraldv1.ListConnectionsResponse], error) {
	if err := authorizeAdmin(ctx, "list connections"); err != nil {
		return nil, err
	}
	resp := &heraldv1.ListConnectionsResponse{}
	for _, e := range s.a.registry.list() {
		subs, chs := e.counts()
		resp.Connections = append(resp.Connections, &heraldv1.Connection{
			Id: e.id, Transport: e.transport, User: e.user, Subscriptions: int32(subs), Channels: int32(chs),
			StartTime: timestamppb.New(e.start), RemoteAddr: e.remote,
		})
	}
	return connect.NewResponse(resp), nil
}

func (s adminService) Disconnect(ctx context.Context, req *connect.Request[heraldv1.DisconnectRequest]) (*connect.Response[heraldv1.DisconnectResponse], error) {
	if err := authorizeAdmin(ctx, "disconnect clients"); err != nil {
		return nil, err
	}
	e := s.a.registry.get(req.Msg.Id)
	if e == nil {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such connection on this instance: it has ended, or it is on another instance (list this instance's with ListConnections)"))
	}
	e.stop()
	s.a.logger.Info("connection disconnected by an operator", "id", e.id, "transport", e.transport, "user", e.user)
	return connect.NewResponse(&heraldv1.DisconnectResponse{}), nil
}
