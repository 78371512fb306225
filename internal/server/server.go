// Package server assembles one Herald instance: the event log (PostgreSQL or
// the embedded memory log), the fan-out hub, the retention job and the HTTP
// server that carries gRPC, gRPC-Web and Connect (h2c and HTTP/1.1) and the
// browser gateway (WebSocket, SSE, REST, long-poll) on one
// port. cmd/herald and the end-to-end tests both start instances through it.
//
// # Concurrency and shutdown
//
// New opens the database, applies migrations and listens, but starts no
// goroutines. Run starts the log's writer, the hub, the retention job and
// the HTTP server and waits for them. When Run's context ends it shuts
// down in order: stop accepting and send GOAWAY, end every subscription
// with a resumable "shutting down" status, drain requests until
// ShutdownTimeout, stop the retention job, flush the writer, close the
// pool. Kill instead drops every connection at once, like a crash, for
// failure tests.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldrt/herald/gateway"
	"github.com/heraldrt/herald/internal/ephemeral"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/services"
)

// Config configures an instance: its own settings, and each part's
// configuration, owned (with its defaults) by that part's package. Zero
// values take the defaults.
type Config struct {
	// Addr to listen on. Default "127.0.0.1:8080"; ":0" picks a free port.
	Addr string
	// DatabaseURL selects PostgreSQL; empty runs the embedded memory log.
	DatabaseURL string
	// ListenDatabaseURL, when set, is a direct connection to the same
	// database for what needs a session: the LISTEN connection and the
	// migrations' lock. Set it when DatabaseURL goes through a pooler in
	// transaction mode (PgBouncer), where LISTEN does not work: without it
	// the hub sees new events only at its safety poll.
	ListenDatabaseURL string
	// DatabaseWait is how long New waits for PostgreSQL to accept
	// connections, retrying while it is down or starting (see Connect).
	// Zero: one attempt.
	DatabaseWait time.Duration
	// RetentionInterval is how often retention runs. Default 1m.
	RetentionInterval time.Duration
	// ShutdownTimeout bounds the graceful drain. Default 10s.
	ShutdownTimeout time.Duration

	// AdminAddr is the admin listener's address: metrics, pprof, health
	// and the admin console, which must not face the internet. Empty: no
	// admin listener.
	AdminAddr string
	// Metrics, when set, is where every part records its metrics (served
	// at /metrics on the admin listener). Nil: no metrics.
	Metrics *metrics.Metrics
	// ShutdownDelay is how long a graceful shutdown keeps serving, not
	// ready (/readyz 503), before it stops accepting: the time load
	// balancers need to notice and send new clients elsewhere. Default 0.
	ShutdownDelay time.Duration
	// TracerProvider, when set, traces the RPCs (otelconnect), the
	// application's steps and the database's queries (otelpgx). Nil: no
	// tracing.
	TracerProvider trace.TracerProvider
	// Version is the running version, shown by the admin API.
	Version string
	// HeartbeatInterval is how often the instance announces itself in the
	// database for the admin console. Default DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// ProbeInterval is how often readiness is probed (/readyz, gRPC
	// health). Default 1s.
	ProbeInterval time.Duration

	// Postgres configures the PostgreSQL event log (its NOTIFY channel,
	// batching); its Options.AutoCreate is set from Services.NoAutoCreate.
	Postgres eventlog.PostgresOptions
	// Hub configures fan-out: the safety poll, subscriber queues, the
	// window of recent entries.
	Hub fanout.Options
	// Services configures the application: limits, page sizes,
	// authentication and namespaces.
	Services services.Config
	// Gateway configures the browser transports: origins, SSE and
	// WebSocket timings and queues.
	Gateway gateway.Config

	// Logger is every part's logger. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Config's own settings.
const (
	DefaultAddr              = "127.0.0.1:8080"
	DefaultRetentionInterval = time.Minute
	DefaultShutdownTimeout   = 10 * time.Second
)

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = DefaultRetentionInterval
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Postgres.Metrics = c.Metrics
	c.Hub.Metrics = c.Metrics
	c.Services.Metrics = c.Metrics
	c.Postgres.Logger = c.Logger
	c.Postgres.ListenURL = c.ListenDatabaseURL
	c.Postgres.AutoCreate = !c.Services.NoAutoCreate
	c.Hub.Logger = c.Logger
	c.Services.Logger = c.Logger
	c.Gateway.Logger = c.Logger
	// The guard applies the gateway's timeouts to every request.
	if c.Gateway.ReadTimeout <= 0 {
		c.Gateway.ReadTimeout = gateway.DefaultReadTimeout
	}
	if c.Gateway.WriteTimeout <= 0 {
		c.Gateway.WriteTimeout = gateway.DefaultWriteTimeout
	}
	c.Gateway.AllowedHosts = allowedHosts(c.Gateway.AllowedHosts, c.Addr)
}

// Server is one Herald instance.
type Server struct {
	cfg    Config
	pool   *pgxpool.Pool // nil with the memory log
	log    eventlog.Log
	hub    *fanout.Hub
	app    *services.App
	ln     net.Listener
	mux    *http.ServeMux
	gw     *gateway.Gateway
	http   *http.Server
	health *grpchealth.StaticChecker

	adminLn   net.Listener // nil without AdminAddr
	adminMux  *http.ServeMux
	adminHTTP *http.Server
	ready     readyState  // the last readiness probe's findings
	draining  atomic.Bool // graceful shutdown began: not ready
	inst      instance    // this instance, for the instance registry
	// lastLogHead is the log's head at the previous readiness probe (-1:
	// none yet).
	lastLogHead atomic.Int64

	killOnce sync.Once
	kill     chan struct{}

	// eph carries signals and presence between instances (nil with the
	// memory log: the application keeps them in process).
	eph    *ephemeral.Postgres
	appRef atomic.Pointer[services.App]
}

// reflectedNames are every service the server answers, listed by
// reflection (grpcurl list) and described by it.
var reflectedNames = append(slices.Clone(services.ServiceNames),
	grpchealth.HealthV1ServiceName,
	grpcreflect.ReflectV1ServiceName,
	grpcreflect.ReflectV1AlphaServiceName,
)

// New builds an instance: it connects to PostgreSQL and migrates when
// DatabaseURL is set, and listens on Addr.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.defaults()
	if err := cfg.Services.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, kill: make(chan struct{}), inst: newInstance()}
	s.lastLogHead.Store(-1)
	if cfg.DatabaseURL != "" {
		pool, err := connectPool(ctx, cfg.DatabaseURL, cfg.DatabaseWait, cfg.Logger, s.tracePool)
		if err != nil {
			return nil, err
		}
		if err := s.migrate(ctx, pool); err != nil {
			pool.Close()
			return nil, err
		}
		s.pool = pool
		s.log = eventlog.OpenPostgres(pool, cfg.Postgres)
		cfg.Logger.Info("event log: PostgreSQL", "database", redactURL(cfg.DatabaseURL))
	} else {
		s.log = eventlog.NewMemory(cfg.Postgres.Options)
		cfg.Logger.Warn("event log: embedded in-memory (no DATABASE_URL): single instance, events are lost when it stops")
	}
	s.hub = fanout.NewHub(s.log, cfg.Hub)
	if s.pool != nil {
		nc := cfg.Postgres.NotifyChannel
		if nc == "" {
			nc = eventlog.DefaultNotifyChannel
		}
		eph, err := ephemeral.NewPostgres(s.pool, ephemeral.PostgresOptions{
			NotifyChannel: nc + ephemeral.ChannelSuffix, Instance: s.inst.id,
			ListenURL: cfg.ListenDatabaseURL, Logger: cfg.Logger,
			Relistened: func() {
				if app := s.appRef.Load(); app != nil {
					app.PresenceMissed()
				}
			},
		}, func(m ephemeral.Message) {
			if app := s.appRef.Load(); app != nil {
				app.Deliver(m)
			}
		})
		if err != nil {
			s.closePool()
			return nil, err
		}
		s.eph = eph
		cfg.Services.Ephemeral = eph
	}
	app, err := services.New(s.log, s.hub, cfg.Services)
	if err != nil {
		s.closePool()
		return nil, err
	}
	s.app = app
	s.appRef.Store(app)

	s.health = grpchealth.NewStaticChecker(services.ServiceNames...)
	s.health.SetStatus("", grpchealth.StatusNotServing) // until the first readiness probe
	for _, name := range services.ServiceNames {
		s.health.SetStatus(name, grpchealth.StatusNotServing)
	}
	s.mux = http.NewServeMux()
	rpcOpts, err := s.rpcOptions()
	if err != nil {
		s.closePool()
		return nil, err
	}
	app.Register(s.mux, rpcOpts...)
	s.gw = gateway.New(app, cfg.Gateway)
	s.gw.Register(s.mux)
	s.mux.Handle(grpchealth.NewHandler(s.health))
	reflector := grpcreflect.NewStaticReflector(reflectedNames...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /livez", s.livez)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.registerMetrics()

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.http = &http.Server{
		Handler:           s.gw.CORS(s.instrument(s.authenticate(s.guard(s.mux)))),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		s.closePool()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	if cfg.AdminAddr != "" {
		if s.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			_ = ln.Close()
			s.closePool()
			return nil, fmt.Errorf("listen on %s (admin): %w", cfg.AdminAddr, err)
		}
		s.adminMux = s.adminRoutes()
		if err := s.mountAdmin(s.adminMux); err != nil {
			_ = ln.Close()
			_ = s.adminLn.Close()
			s.closePool()
			return nil, err
		}
		s.adminHTTP = &http.Server{
			Handler:           s.adminMux,
			Protocols:         &protocols,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		}
	}
	return s, nil
}

// AdminAddr returns the address of the admin listener, "" without one.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Mux returns the server's mux, for adding handlers before Run.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// Log returns the instance's event log.
func (s *Server) Log() eventlog.Log { return s.log }

// Gateway returns the instance's browser gateway.
func (s *Server) Gateway() *gateway.Gateway { return s.gw }

// Hub returns the instance's hub.
func (s *Server) Hub() *fanout.Hub { return s.hub }

// App returns the instance's application.
func (s *Server) App() *services.App { return s.app }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-s.hub.Ready():
	default:
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	select {
	case <-s.hub.Stopped():
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	default:
		_, _ = w.Write([]byte("ok\n"))
	}
}

// Kill stops the instance abruptly: every connection is dropped without a
// goodbye, as if the process died. Run then returns.
func (s *Server) Kill() {
	s.killOnce.Do(func() {
		s.app.Abandon() // a dead process sends no leaves
		close(s.kill)
	})
}

// Run serves until ctx ends (graceful shutdown) or Kill is called.
func (s *Server) Run(ctx context.Context) error {
	base := context.WithoutCancel(ctx)
	logCtx, stopLog := context.WithCancel(base)
	hubCtx, stopHub := context.WithCancel(base)
	retCtx, stopRetention := context.WithCancel(base)
	defer stopLog()
	defer stopHub()
	defer stopRetention()

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() {
		if err := s.log.Run(logCtx); err != nil {
			errc <- fmt.Errorf("event log: %w", err)
		}
	})
	wg.Go(func() {
		if err := s.hub.Run(hubCtx); err != nil {
			errc <- fmt.Errorf("hub: %w", err)
		}
	})
	wg.Go(func() { s.retention(retCtx) })
	wg.Go(func() { s.monitor(retCtx) })
	wg.Go(func() { s.heartbeat(retCtx) })
	if s.eph != nil {
		wg.Go(func() { _ = s.eph.Run(retCtx) })
	}
	wg.Go(func() { // reloads JWKS keys; returns at once without them
		if err := s.cfg.Services.Auth.Run(retCtx); err != nil {
			errc <- fmt.Errorf("auth: %w", err)
		}
	})
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	s.cfg.Logger.Info("herald listening", "addr", s.Addr())
	adminDone := make(chan struct{})
	if s.adminHTTP != nil {
		go func() {
			defer close(adminDone)
			if err := s.adminHTTP.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin http: %w", err)
			}
		}()
		s.cfg.Logger.Info("herald admin listening (metrics, pprof, console)", "addr", s.AdminAddr())
	} else {
		close(adminDone)
	}

	var runErr error
	killed := false
	select {
	case <-ctx.Done():
	case <-s.kill:
		killed = true
	case runErr = <-errc:
	}

	if killed {
		_ = s.http.Close()
		killCtx, cancel := context.WithTimeout(base, s.cfg.ShutdownTimeout)
		s.gw.Kill()
		_ = s.gw.Drain(killCtx) // wait until the dropped WebSockets' goroutines are gone
		cancel()
	} else {
		s.drain()
		if d := s.cfg.ShutdownDelay; d > 0 {
			s.cfg.Logger.Info("not ready; serving on until the load balancers notice", "delay", d)
			select {
			case <-time.After(d):
			case <-s.kill:
			}
		}
		shutdownCtx, cancel := context.WithTimeout(base, s.cfg.ShutdownTimeout)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- s.http.Shutdown(shutdownCtx) }()
		stopHub()
		select {
		case <-s.hub.Stopped():
		case <-shutdownCtx.Done():
		}
		// WebSockets are hijacked, so Shutdown does not wait for them: each
		// sends its subscriptions' shutdown frames and closes with 1012.
		if err := s.gw.Drain(shutdownCtx); err != nil {
			s.cfg.Logger.Warn("shutdown deadline passed; dropping remaining WebSockets", "err", err)
		}
		if err := <-shut; err != nil {
			s.cfg.Logger.Warn("shutdown deadline passed; closing remaining connections", "err", err)
			_ = s.http.Close()
		}
	}
	<-serveDone
	if s.adminHTTP != nil {
		_ = s.adminHTTP.Close()
	}
	<-adminDone
	stopHub()
	if s.eph != nil && !killed {
		// Members whose leave did not happen (a subscription still
		// closing): their leaves now, not after the heartbeat expires.
		lctx, cancel := context.WithTimeout(base, 2*time.Second)
		if err := s.eph.LeaveInstance(lctx); err != nil {
			s.cfg.Logger.Warn("presence: leaving on shutdown failed; other instances remove the members after the heartbeat expires", "err", err)
		}
		cancel()
	}
	stopRetention()
	stopLog()
	wg.Wait()
	s.closePool()
	s.cfg.Logger.Info("herald stopped", "addr", s.Addr(), "killed", killed)
	return runErr
}

func (s *Server) retention(ctx context.Context) {
	t := time.NewTicker(s.cfg.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n, err := s.log.Trim(ctx, now)
			if err == nil {
				s.cfg.Metrics.Trim(n)
			}
			switch {
			case err != nil && ctx.Err() == nil:
				s.cfg.Logger.Warn("retention failed", "err", err)
			case n > 0:
				s.cfg.Logger.Info("retention removed events", "count", n)
			}
		}
	}
}

func (s *Server) closePool() {
	if s.pool != nil {
		s.pool.Close()
	}
}

// allowedHosts returns the Host allow-list: the configured one, or for a
// loopback listen address the loopback names, so that a web page whose
// name resolves to 127.0.0.1 (DNS rebinding) cannot call a local server.
func allowedHosts(configured []string, addr string) []string {
	if len(configured) > 0 {
		return configured
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return []string{"localhost", "127.0.0.1", "::1"}
	}
	return nil
}
