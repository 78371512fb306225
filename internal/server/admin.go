package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/console"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/services"
)

// DefaultHeartbeatInterval is how often an instance announces itself in
// the database (herald_instances); one that missed three is left out.
const DefaultHeartbeatInterval = 5 * time.Second

// instance describes this instance for the registry.
type instance struct {
	id       string
	hostname string
	started  time.Time
}

func newInstance() instance {
	var b [6]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	return instance{id: hex.EncodeToString(b[:]), hostname: host, started: time.Now()}
}

// mountAdmin adds the admin console, the AdminService and the channel
// tail (the main port's SSE, through its authentication) to the admin mux.
func (s *Server) mountAdmin(mux *http.ServeMux) error {
	opts, err := s.rpcOptions()
	if err != nil {
		return err
	}
	api := http.NewServeMux()
	s.app.RegisterAdmin(api, s, opts...)
	mux.Handle("/herald.v1.AdminService/", s.instrument(s.authenticate(api)))
	mux.Handle("GET /v1/sse", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.http.Handler.ServeHTTP(w, r) }))
	mux.Handle("/admin/", http.StripPrefix("/admin", console.Handler()))
	mux.Handle("GET /{$}", http.RedirectHandler("/admin/", http.StatusFound))
	return nil
}

// Stats are this instance's figures for the admin API.
func (s *Server) Stats(context.Context) (*heraldv1.GetStatsResponse, error) {
	snap, err := s.cfg.Metrics.Snapshot()
	if err != nil {
		return nil, err
	}
	resp := &heraldv1.GetStatsResponse{
		Time: timestamppb.Now(), InstanceId: s.inst.id, Version: s.cfg.Version, StartTime: timestamppb.New(s.inst.started),
		Connections: snap.Connections, Subscriptions: snap.Subscriptions,
		EventsPublished: snap.Published, EventsDelivered: snap.Delivered,
		DeliveryLagSeconds: histProto(snap.Lag), WriterBatchEvents: histProto(snap.Batch),
		WriterQueueDepth: snap.QueueDepth, HubHead: s.hub.Head(),
	}
	if r := s.ready.Load(); r != nil {
		resp.LogHead, resp.HubLag = r.LogHead, max(r.LogHead-r.HubHead, 0)
		resp.Ready, resp.NotReadyReason = r.Ready, r.Reason
	}
	return resp, nil
}

func histProto(h metrics.Hist) *heraldv1.Histogram {
	return &heraldv1.Histogram{Bounds: h.Bounds, Counts: h.Counts, Count: h.Count, Sum: h.Sum}
}

// Instances lists the deployment's live instances: those whose heartbeat
// is recent (three intervals), this one first. With the memory log there
// is only this one.
func (s *Server) Instances(ctx context.Context) ([]*heraldv1.Instance, error) {
	self := &heraldv1.Instance{
		Id: s.inst.id, Hostname: s.inst.hostname, Addr: s.Addr(), AdminAddr: s.AdminAddr(), Version: s.cfg.Version,
		StartTime: timestamppb.New(s.inst.started), HeartbeatTime: timestamppb.Now(),
		Connections: int64(s.app.OpenConnections()), Subscriptions: int64(s.hub.Subscribers()), Self: true,
	}
	if s.pool == nil {
		return []*heraldv1.Instance{self}, nil
	}
	rows, err := s.pool.Query(ctx, `
SELECT id, hostname, addr, admin_addr, version, started_at, heartbeat_at, connections, subscriptions
FROM herald_instances WHERE heartbeat_at > now() - $1::interval AND id <> $2 ORDER BY started_at, id`,
		3*s.cfg.HeartbeatInterval, s.inst.id)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	defer rows.Close()
	out := []*heraldv1.Instance{self}
	for rows.Next() {
		var (
			in         heraldv1.Instance
			start, hbt time.Time
		)
		if err := rows.Scan(&in.Id, &in.Hostname, &in.Addr, &in.AdminAddr, &in.Version, &start, &hbt, &in.Connections, &in.Subscriptions); err != nil {
			return nil, fmt.Errorf("list instances: %w", err)
		}
		in.StartTime, in.HeartbeatTime = timestamppb.New(start), timestamppb.New(hbt)
		out = append(out, &in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return out, nil
}

var _ services.AdminSource = (*Server)(nil)

// heartbeat announces the instance in herald_instances every
// HeartbeatInterval until ctx ends; then, unless the instance was killed,
// it removes its row. Failures are logged (the database may be down: the
// instance then drops out of the list until it is back).
func (s *Server) heartbeat(ctx context.Context) {
	if s.pool == nil {
		return
	}
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	failed := false
	for {
		err := s.beat(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failed:
			s.cfg.Logger.Warn("instance heartbeat failed; the instance drops out of the admin console's list until it succeeds", "err", err)
			failed = true
		case err == nil:
			failed = false
		}
		select {
		case <-ctx.Done():
			select {
			case <-s.kill: // a crash leaves its row to expire
			default:
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				_, _ = s.pool.Exec(dctx, `DELETE FROM herald_instances WHERE id = $1`, s.inst.id)
				cancel()
			}
			return
		case <-t.C:
		}
	}
}

func (s *Server) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatInterval)
	defer cancel()
	_, err := s.pool.Exec(ctx, `
INSERT INTO herald_instances (id, hostname, addr, admin_addr, version, started_at, heartbeat_at, connections, subscriptions)
VALUES ($1, $2, $3, $4, $5, $6, now(), $7, $8)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), connections = $7, subscriptions = $8`,
		s.inst.id, s.inst.hostname, s.Addr(), s.AdminAddr(), s.cfg.Version, s.inst.started,
		s.app.OpenConnections(), s.hub.Subscribers())
	if err != nil {
		return err
	}
	// Presence members of instances that stopped beating (three missed
	// heartbeats): removed, and their leaves sent, by whichever instance
	// gets there first.
	if s.eph != nil {
		s.app.RetryLeaves(ctx)
		if n, err := s.eph.Reap(ctx, 3*s.cfg.HeartbeatInterval); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("presence: removing the members of dead instances failed", "err", err)
		} else if n > 0 {
			s.cfg.Logger.Info("presence: removed the members of dead instances", "count", n)
		}
	}
	// Rows of instances that died long ago; cheap, and any instance may.
	_, err = s.pool.Exec(ctx, `DELETE FROM herald_instances WHERE heartbeat_at < now() - interval '1 hour'`)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
