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
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/gateway"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/migrations"
	"github.com/heraldrt/herald/services"
)

// Config configures an instance. Zero values take the defaults noted.
type Config struct {
	// Addr to listen on. Default "127.0.0.1:8080"; ":0" picks a free port.
	Addr string
	// DatabaseURL selects PostgreSQL; empty runs the embedded memory log.
	DatabaseURL string
	// DatabaseWait is how long New waits for PostgreSQL to accept
	// connections, retrying while it is down or starting (see Connect).
	// Zero: one attempt.
	DatabaseWait time.Duration
	// NoAutoCreate makes publishing to an unknown channel fail with
	// not_found instead of creating it.
	NoAutoCreate bool
	// NotifyChannel is the LISTEN/NOTIFY channel. Default "herald_events".
	NotifyChannel string
	// PollInterval is the hub's safety poll. Default 500ms.
	PollInterval time.Duration
	// QueueSize bounds each subscriber's live queue. Default 4096.
	QueueSize int
	// RetentionInterval is how often retention runs. Default 1m.
	RetentionInterval time.Duration
	// ShutdownTimeout bounds the graceful drain. Default 10s.
	ShutdownTimeout time.Duration
	// MaxMessageBytes bounds one request message (RPC, WebSocket frame,
	// REST body). Default 2 MiB.
	MaxMessageBytes int
	// MaxConnections bounds the long-lived requests of the instance across
	// transports (Subscribe and Connect streams, WebSockets, SSE streams,
	// long-polls). Default 20000; negative: unlimited.
	MaxConnections int
	// MaxConnectionsPerUser bounds one end user's (JWT identity's)
	// long-lived requests on the instance, counted like MaxConnections.
	// API keys and anonymous callers are not counted per user.
	// Default 50; negative: unlimited.
	MaxConnectionsPerUser int
	// Auth, when set, authenticates every request and the services
	// authorize each action by the caller's identity (API keys and JWTs,
	// see internal/auth). Nil: no authentication, everything allowed.
	Auth *auth.Authenticator
	// Namespaces are the channel namespace policies (who may subscribe,
	// read history, publish and edit; event size; new channels'
	// retention). Nil: every channel has the default policy.
	Namespaces *namespace.Set
	// UserPublishRate bounds how fast each end user (JWT identity) may
	// publish, across connections and transports. Default 20/s with a
	// burst of 40 (limits.Defaults); API keys are not limited.
	UserPublishRate limits.Rate
	// ConnectionPublishRate bounds how fast one bidirectional connection
	// (Connect stream, WebSocket) of an end user (JWT identity) or an
	// anonymous client may publish. Default 10/s with a burst of 20
	// (limits.Defaults); a zero PerSecond with a Burst set: unlimited. As
	// with UserPublishRate, API keys and a server without Auth are not
	// limited.
	ConnectionPublishRate limits.Rate
	// MaxSubscriptionsPerConnection bounds the channels one bidirectional
	// connection's subscriptions hold together. Default 128; negative:
	// unlimited.
	MaxSubscriptionsPerConnection int
	// MaxChannelsPerRequest bounds the channels one Subscribe, Poll, SSE
	// request or subscribe command names. Default 32; at most
	// services.MaxChannelsCeiling (100, the proto's rule); negative: only
	// that ceiling.
	MaxChannelsPerRequest int
	// PageSize is the size of a history page, long-poll or channel list
	// when the request leaves it 0 (default 100); MaxPageSize caps what a
	// request may ask for, larger limits are lowered to it (default and
	// at most 1000).
	PageSize, MaxPageSize int
	// AllowedOrigins lists the browser origins allowed cross-origin (CORS,
	// WebSocket Origin); empty allows same-origin only. See
	// gateway.Config.AllowedOrigins.
	AllowedOrigins []string
	// AllowedHosts lists the host names requests may name in their Host
	// header. Empty: on a loopback address, only loopback names (localhost,
	// 127.0.0.1, ::1), against DNS rebinding; elsewhere any.
	AllowedHosts []string
	// SSEKeepAlive is the SSE keep-alive comment interval. Default 15s.
	SSEKeepAlive time.Duration
	// WSPingInterval is the WebSocket ping interval. Default 30s.
	WSPingInterval time.Duration
	// WSWriteQueue bounds the frames queued for one WebSocket. Default 256.
	WSWriteQueue int
	// WSWriteBytes bounds the bytes queued for one WebSocket. Default 1 MiB.
	WSWriteBytes int
	// WriteTimeout bounds a stalled write to a WebSocket or SSE client.
	// Default 10s.
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.NotifyChannel == "" {
		c.NotifyChannel = "herald_events"
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = time.Minute
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.UserPublishRate == (limits.Rate{}) {
		c.UserPublishRate = limits.Defaults().PublishPerUser
	}
	if c.ConnectionPublishRate == (limits.Rate{}) {
		c.ConnectionPublishRate = limits.Defaults().PublishPerConnection
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = limits.Defaults().MaxConnectionsPerInstance
	}
	if c.MaxConnectionsPerUser == 0 {
		c.MaxConnectionsPerUser = limits.Defaults().MaxConnectionsPerUser
	}
	if c.MaxSubscriptionsPerConnection == 0 {
		c.MaxSubscriptionsPerConnection = limits.Defaults().MaxSubscriptionsPerConnection
	}
	if c.MaxChannelsPerRequest == 0 {
		c.MaxChannelsPerRequest = limits.Defaults().MaxChannelsPerRequest
	}
	if c.PageSize == 0 {
		c.PageSize = services.DefaultPageSize
	}
	if c.MaxPageSize == 0 {
		c.MaxPageSize = max(services.MaxPageSize, c.PageSize)
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 2 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// limits returns the configured limits (after defaults), negative values
// turned into 0 (no limit), and checks them.
func (c *Config) limits() (limits.Limits, error) {
	unlimited := func(n int) int { return max(n, 0) }
	l := limits.Defaults()
	l.MaxConnectionsPerInstance = unlimited(c.MaxConnections)
	l.MaxConnectionsPerUser = unlimited(c.MaxConnectionsPerUser)
	l.PublishPerConnection = c.ConnectionPublishRate
	l.PublishPerUser = c.UserPublishRate
	l.MaxSubscriptionsPerConnection = unlimited(c.MaxSubscriptionsPerConnection)
	l.MaxChannelsPerRequest = unlimited(c.MaxChannelsPerRequest)
	err := l.Validate()
	if l.MaxChannelsPerRequest > services.MaxChannelsCeiling {
		err = errors.Join(err, fmt.Errorf("MaxChannelsPerRequest is %d; want at most %d (the API's own limit)",
			l.MaxChannelsPerRequest, services.MaxChannelsCeiling))
	}
	err = errors.Join(err, c.pages().Validate())
	if err != nil {
		return l, fmt.Errorf("invalid limits: %w", err)
	}
	return l, nil
}

func (c *Config) pages() services.PageSizes {
	return services.PageSizes{Default: c.PageSize, Max: c.MaxPageSize}
}

// Server is one Herald instance.
type Server struct {
	cfg    Config
	pool   *pgxpool.Pool // nil with the memory log
	log    eventlog.Log
	hub    *fanout.Hub
	ln     net.Listener
	mux    *http.ServeMux
	gw     *gateway.Gateway
	http   *http.Server
	health *grpchealth.StaticChecker

	killOnce sync.Once
	kill     chan struct{}
}

// compressMinBytes: messages smaller than this are sent uncompressed.
const compressMinBytes = 4 << 10

// serviceNames are Herald's own services, reported by health checks.
var serviceNames = []string{
	heraldv1connect.EventServiceName,
	heraldv1connect.HistoryServiceName,
	heraldv1connect.ChannelServiceName,
}

// reflectedNames are every service the server answers, listed by
// reflection (grpcurl list) and described by it.
var reflectedNames = append(slices.Clone(serviceNames),
	grpchealth.HealthV1ServiceName,
	grpcreflect.ReflectV1ServiceName,
	grpcreflect.ReflectV1AlphaServiceName,
)

// New builds an instance: it connects to PostgreSQL and migrates when
// DatabaseURL is set, and listens on Addr.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.defaults()
	lim, err := cfg.limits()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, kill: make(chan struct{})}
	opts := eventlog.Options{AutoCreate: !cfg.NoAutoCreate}
	if cfg.DatabaseURL != "" {
		pool, err := Connect(ctx, cfg.DatabaseURL, cfg.DatabaseWait, cfg.Logger)
		if err != nil {
			return nil, err
		}
		if err := migrations.Up(ctx, pool); err != nil {
			pool.Close()
			return nil, fmt.Errorf("apply migrations: %w", err)
		}
		s.pool = pool
		s.log = eventlog.OpenPostgres(pool, eventlog.PostgresOptions{Options: opts, NotifyChannel: cfg.NotifyChannel})
		cfg.Logger.Info("event log: PostgreSQL", "database", redactURL(cfg.DatabaseURL))
	} else {
		s.log = eventlog.NewMemory(opts)
		cfg.Logger.Warn("event log: embedded in-memory (no DATABASE_URL): single instance, events are lost when it stops")
	}
	s.hub = fanout.NewHub(s.log, fanout.Options{
		PollInterval: cfg.PollInterval,
		QueueSize:    cfg.QueueSize,
		Logger:       cfg.Logger,
	})

	s.health = grpchealth.NewStaticChecker(serviceNames...)
	s.mux = http.NewServeMux()
	handlerOpts := []connect.HandlerOption{
		connect.WithInterceptors(services.Interceptor{}),
		connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		// Compressing small messages costs more CPU than it saves bytes
		// (gzip setup dominated stream throughput when every event was
		// compressed: 7k -> see docs/benchmarks.md).
		connect.WithCompressMinBytes(compressMinBytes),
	}
	streams := services.NewStreams(lim.MaxConnectionsPerInstance, lim.MaxConnectionsPerUser)
	events := services.NewEventService(s.log, s.hub, cfg.Logger).WithStreams(streams).
		WithUserPublishRate(lim.NewUserBuckets()).
		WithConnectionLimits(lim).
		WithNamespaces(cfg.Namespaces, !cfg.NoAutoCreate).WithAuthenticator(cfg.Auth).WithPageSizes(cfg.pages())
	history := services.NewHistoryService(s.log, s.hub, cfg.Logger).WithStreams(streams).
		WithNamespaces(cfg.Namespaces).WithPageSizes(cfg.pages())
	channels := services.NewChannelService(s.log, cfg.Logger).WithNamespaces(cfg.Namespaces).WithPageSizes(cfg.pages()).
		OnDelete(events.ForgetChannel)
	s.mux.Handle(heraldv1connect.NewEventServiceHandler(events, handlerOpts...))
	s.mux.Handle(heraldv1connect.NewHistoryServiceHandler(history, handlerOpts...))
	s.mux.Handle(heraldv1connect.NewChannelServiceHandler(channels, handlerOpts...))
	s.gw = gateway.New(gateway.Config{
		Events:          events,
		History:         history,
		Channels:        channels,
		Hub:             s.hub,
		Logger:          cfg.Logger,
		Auth:            cfg.Auth,
		AllowedOrigins:  cfg.AllowedOrigins,
		AllowedHosts:    allowedHosts(cfg.AllowedHosts, cfg.Addr),
		MaxMessageBytes: cfg.MaxMessageBytes,
		SSEKeepAlive:    cfg.SSEKeepAlive,
		WSPingInterval:  cfg.WSPingInterval,
		WSWriteQueue:    cfg.WSWriteQueue,
		WSWriteBytes:    cfg.WSWriteBytes,
		WriteTimeout:    cfg.WriteTimeout,
	})
	s.gw.Register(s.mux)
	s.mux.Handle(grpchealth.NewHandler(s.health))
	reflector := grpcreflect.NewStaticReflector(reflectedNames...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	s.mux.HandleFunc("GET /healthz", s.healthz)

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.http = &http.Server{
		Handler:           s.gw.Handler(s.mux),
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
	return s, nil
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
	s.killOnce.Do(func() { close(s.kill) })
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
	wg.Go(func() { // reloads JWKS keys; returns at once without them
		if err := s.cfg.Auth.Run(retCtx); err != nil {
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
		s.health.SetStatus("", grpchealth.StatusNotServing)
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
	stopHub()
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
