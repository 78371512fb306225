package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/otelconnect"
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/telemetry"
	"github.com/heraldrt/herald/services"
)

// Defaults of the operations settings.
const (
	DefaultProbeInterval = time.Second
	// probeTimeout bounds one readiness probe (a query of the log's head
	// and a catch-up of the hub).
	probeTimeout = 2 * time.Second
)

// readiness is what the last probe found.
type readiness struct {
	Ready   bool   `json:"ready"`
	Reason  string `json:"reason,omitempty"`
	LogHead int64  `json:"log_head"`
	HubHead int64  `json:"hub_head"`
	Checked string `json:"checked_at,omitempty"`
}

// transport classifies a request for the metrics: the RPC protocol by its
// content type, the browser transports by their paths.
func transport(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc-web"):
		return metrics.TransportGRPCWeb
	case strings.HasPrefix(ct, "application/grpc"):
		return metrics.TransportGRPC
	case strings.HasPrefix(r.URL.Path, "/herald.v1."):
		return metrics.TransportConnect
	case r.URL.Path == "/v1/ws":
		return metrics.TransportWS
	case r.URL.Path == "/v1/sse":
		return metrics.TransportSSE
	case r.URL.Path == "/v1/events" && r.Method == http.MethodGet && r.URL.Query().Has("wait"):
		return metrics.TransportLongPoll
	case strings.HasPrefix(r.URL.Path, "/v1/"):
		return metrics.TransportREST
	}
	return metrics.TransportOther
}

// instrument puts the request's transport in its context for the
// application's metrics hooks. Without metrics it is next itself.
func (s *Server) instrument(next http.Handler) http.Handler {
	if s.cfg.Metrics == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(metrics.WithTransport(r.Context(), transport(r))))
	})
}

// authFailureKind names a refused credential for the metrics.
func authFailureKind(cred string, err error) string {
	token := strings.TrimSpace(cred)
	if _, rest, ok := strings.Cut(token, " "); ok {
		token = strings.TrimSpace(rest)
	}
	var kind string
	switch {
	case strings.HasPrefix(token, auth.KeyPrefix):
		kind = "api_key"
	case strings.Count(token, ".") == 2:
		kind = "jwt"
	default:
		return "malformed"
	}
	switch {
	case errors.Is(err, auth.ErrExpired), errors.Is(err, auth.ErrNotYetValid):
		return kind + "_expired"
	case errors.Is(err, auth.ErrMalformedCredential):
		return "malformed"
	}
	return kind + "_invalid"
}

// registerMetrics adds the gauges read at scrape time: the writer's queue,
// the hub's head, the pool.
func (s *Server) registerMetrics() {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	m.Func("hub_head_position", "Highest position the hub has dispatched.", func() float64 { return float64(s.hub.Head()) })
	if pg, ok := s.log.(*eventlog.Postgres); ok {
		m.Func("writer_queue_depth", "Publishes waiting for the writer.", func() float64 { return float64(pg.QueueDepth()) })
	}
	m.Pool(s.pool)
}

// probe checks whether the instance can serve: the hub has read the head,
// the log answers, and the hub has dispatched everything that was
// committed by the previous probe (one interval ago; at the first probe,
// by now). It forces no read of the log: the hub's own wake-ups and polls
// must keep up, so a hub that stopped hearing the log shows as not ready.
// It returns what it found.
func (s *Server) probe(ctx context.Context) readiness {
	r := readiness{LogHead: -1, HubHead: s.hub.Head(), Checked: time.Now().UTC().Format(time.RFC3339Nano)}
	select {
	case <-s.hub.Ready():
	default:
		r.Reason = "starting: the hub has not read the log's head yet"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	head, err := s.log.Head(ctx)
	if err != nil {
		r.Reason = "database: " + err.Error()
		return r
	}
	r.LogHead = head
	target := s.lastLogHead.Swap(head)
	if target < 0 {
		target = head
	}
	r.HubHead = s.hub.Head()
	if s.eph != nil && !s.eph.Listening() {
		r.Reason = "signals: the listener for signals and presence is not connected"
		return r
	}
	if r.HubHead < target {
		r.Reason = fmt.Sprintf("hub: behind the log (hub at %d; the log was at %d a probe ago and is at %d now)", r.HubHead, target, head)
		return r
	}
	r.Ready = true
	return r
}

// monitor probes readiness every ProbeInterval until ctx ends, and keeps
// the gRPC health status and the metrics in step with it.
func (s *Server) monitor(ctx context.Context) {
	select { // probe as soon as the hub can be ready
	case <-s.hub.Ready():
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		r := s.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		s.setReadiness(r)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) setReadiness(r readiness) {
	if s.draining.Load() {
		return
	}
	prev := s.ready.Swap(&r)
	status := grpchealth.StatusNotServing
	if r.Ready {
		status = grpchealth.StatusServing
	}
	s.health.SetStatus("", status)
	for _, name := range services.ServiceNames {
		s.health.SetStatus(name, status)
	}
	s.cfg.Metrics.Probe(r.LogHead, r.LogHead-r.HubHead, r.Ready)
	if prev != nil && prev.Ready != r.Ready {
		if r.Ready {
			s.cfg.Logger.Info("ready: the instance can serve again", "log_head", r.LogHead)
		} else {
			s.cfg.Logger.Warn("not ready", "reason", r.Reason)
		}
	}
}

// drain marks the instance not ready before it stops accepting: load
// balancers that probe /readyz move traffic away first.
func (s *Server) drain() {
	s.draining.Store(true)
	s.ready.Store(&readiness{Reason: "shutting down", LogHead: -1, HubHead: s.hub.Head()})
	s.health.SetStatus("", grpchealth.StatusNotServing)
	for _, name := range services.ServiceNames {
		s.health.SetStatus(name, grpchealth.StatusNotServing)
	}
	s.cfg.Metrics.Probe(-1, 0, false)
}

// livez answers 200 while the process serves HTTP at all.
func (s *Server) livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz answers 200 when the last probe found the instance able to serve,
// else 503; both with the probe's findings as JSON.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	r := s.ready.Load()
	if r == nil {
		r = &readiness{Reason: "starting: not probed yet", LogHead: -1}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !r.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(r)
}

// adminRoutes serves what must not face the internet: metrics, pprof and
// the health endpoints.
func (s *Server) adminRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics.Handler())
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /livez", s.livez)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

// readyState holds the last readiness.
type readyState = atomic.Pointer[readiness]

// tracePool traces the pool's queries when tracing is on.
func (s *Server) tracePool(cfg *pgxpool.Config) {
	if s.cfg.TracerProvider == nil {
		return
	}
	cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(s.cfg.TracerProvider), otelpgx.WithTrimSQLInSpanName())
}

// rpcOptions are the handler options of the RPCs: tracing when it is on.
func (s *Server) rpcOptions() ([]connect.HandlerOption, error) {
	if s.cfg.TracerProvider == nil {
		return nil, nil
	}
	otel, err := otelconnect.NewInterceptor(otelconnect.WithTracerProvider(s.cfg.TracerProvider),
		otelconnect.WithPropagator(telemetry.Propagator()), otelconnect.WithoutMetrics(), otelconnect.WithTrustRemote())
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	return []connect.HandlerOption{connect.WithInterceptors(otel)}, nil
}
