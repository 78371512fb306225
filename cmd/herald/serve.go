package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/heraldrt/herald/gateway"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/internal/telemetry"
	"github.com/heraldrt/herald/migrations"
	"github.com/heraldrt/herald/services"
)

var dbKeys = []string{"DATABASE_URL", "HERALD_DATABASE_URL"}

// serveSettings are the values of herald serve's flags.
type serveSettings struct {
	cfg                 server.Config
	autoCreate          bool
	logFormat, logLevel string
	origins, hosts      string
	authConfig          string
	namespaces          string
	configFile          string
}

// serveFlags defines herald serve's flags on o: the command line, the
// environment and the configuration file (config.go) all set these.
func serveFlags(o *serveSettings, stdout io.Writer) *envFlags {
	cfg := &o.cfg
	fs := newFlags("serve", "", "Run the server: gRPC, gRPC-Web, Connect, WebSocket, SSE and REST on one port\n(h2c and HTTP/1.1). Without a database it runs on an embedded in-memory log.\nEvery flag can also be set in the configuration file (--config; see 'herald config defaults')\nand by its environment variable: a flag wins over the environment, which wins over the file.", stdout)
	fs.String(&o.configFile, "config", []string{"HERALD_CONFIG"}, "", "YAML configuration file: any of these flags by name (herald config defaults prints a complete one; herald config check FILE checks one)")
	fs.String(&cfg.Addr, "addr", []string{"HERALD_ADDR"}, server.DefaultAddr, "address to listen on (gRPC, gRPC-Web, Connect, WebSocket, SSE, REST; h2c and HTTP/1.1)")
	fs.String(&cfg.DatabaseURL, "database-url", dbKeys, "", "PostgreSQL URL; empty runs the embedded in-memory log")
	databaseWait(fs, &cfg.DatabaseWait)
	fs.String(&cfg.ListenDatabaseURL, "listen-database-url", []string{"HERALD_LISTEN_DATABASE_URL"}, "", "direct PostgreSQL URL for LISTEN and migrations, when --database-url goes through a pooler in transaction mode (PgBouncer), where LISTEN does not work; without it new events reach subscribers only at each --poll-interval")
	fs.Bool(&o.autoCreate, "auto-create-channels", []string{"HERALD_AUTO_CREATE_CHANNELS"}, true, "publishing to an unknown channel creates it; false makes it fail with not_found")
	fs.String(&cfg.Postgres.NotifyChannel, "notify-channel", []string{"HERALD_NOTIFY_CHANNEL"}, eventlog.DefaultNotifyChannel, "PostgreSQL LISTEN/NOTIFY channel shared by the instances")
	fs.Duration(&cfg.Hub.PollInterval, "poll-interval", []string{"HERALD_POLL_INTERVAL"}, fanout.DefaultPollInterval, "safety poll of the log when no notification arrives")
	fs.Int(&cfg.Hub.QueueSize, "queue-size", []string{"HERALD_QUEUE_SIZE"}, fanout.DefaultQueueSize, "events buffered per subscriber before it is ended as a slow consumer")
	fs.Int(&cfg.Hub.QueueBytes, "queue-bytes", []string{"HERALD_QUEUE_BYTES"}, fanout.DefaultQueueBytes, "bytes buffered per subscriber (events counted at about 4x their data: their encodings) before it is ended as a slow consumer")
	fs.Int(&cfg.Hub.WindowSize, "window-size", []string{"HERALD_WINDOW_SIZE"}, fanout.DefaultWindowSize, "recent events each instance keeps for resuming subscribers to share: a resume from a cursor within them reads no events from the log (herald_replays_total{source=\"window\"})")
	fs.Int(&cfg.Hub.WindowBytes, "window-bytes", []string{"HERALD_WINDOW_BYTES"}, fanout.DefaultWindowBytes, "bytes of recent events (counted as for --queue-bytes) each instance keeps for resuming subscribers to share")
	fs.Duration(&cfg.RetentionInterval, "retention-interval", []string{"HERALD_RETENTION_INTERVAL"}, server.DefaultRetentionInterval, "how often retention trims channels")
	fs.Duration(&cfg.ShutdownTimeout, "shutdown-timeout", []string{"HERALD_SHUTDOWN_TIMEOUT"}, server.DefaultShutdownTimeout, "how long a graceful shutdown drains")
	fs.Int(&cfg.Services.MaxMessageBytes, "max-message-bytes", []string{"HERALD_MAX_MESSAGE_BYTES"}, services.DefaultMaxMessageBytes, "largest request message accepted")
	fs.Int(&cfg.Services.PageSize, "page-size", []string{"HERALD_PAGE_SIZE"}, services.DefaultPageSize, "events (or channels) in a history page, long-poll or channel list when the request gives no limit")
	fs.Int(&cfg.Services.MaxPageSize, "max-page-size", []string{"HERALD_MAX_PAGE_SIZE"}, services.MaxPageSize, "largest page a request may ask for (at most 1000); larger limits are lowered to it")
	fs.Int(&cfg.Services.MaxConnections, "max-connections", []string{"HERALD_MAX_CONNECTIONS"}, limits.Defaults().MaxConnectionsPerInstance, "open requests one instance holds: streams, WebSockets, SSE, long-polls and unary calls (RPC, REST) alike; beyond it new ones get resource_exhausted / 429; -1: unlimited")
	fs.Int(&cfg.Services.MaxConnectionsPerUser, "max-connections-per-user", []string{"HERALD_MAX_CONNECTIONS_PER_USER"}, limits.Defaults().MaxConnectionsPerUser, "open requests (streams and unary calls) one end user (JWT) holds on the instance; beyond it new ones get resource_exhausted / 429; API keys and anonymous clients are not counted per user; -1: unlimited")
	fs.String(&o.authConfig, "auth-config", []string{"HERALD_AUTH_CONFIG"}, "", "JSON file of API keys and JWT settings; empty: no authentication (every client may do everything)")
	fs.String(&o.namespaces, "namespaces", []string{"HERALD_NAMESPACES"}, "", "JSON file of channel namespace policies (anonymous or authenticated access, who may publish and edit, event size, retention); empty: every channel follows the credential's permissions")
	fs.Float64(&cfg.Services.UserPublishRate.PerSecond, "user-publish-rate", []string{"HERALD_USER_PUBLISH_RATE"}, limits.Defaults().PublishPerUser.PerSecond, "events per second each end user (JWT) may publish, across connections (anonymous publishers: per network address); API keys are not limited")
	fs.Int(&cfg.Services.UserPublishRate.Burst, "user-publish-burst", []string{"HERALD_USER_PUBLISH_BURST"}, limits.Defaults().PublishPerUser.Burst, "burst above --user-publish-rate")
	fs.Float64(&cfg.Services.ConnectionPublishRate.PerSecond, "publish-rate-per-connection", []string{"HERALD_PUBLISH_RATE_PER_CONNECTION"}, limits.Defaults().PublishPerConnection.PerSecond, "events per second one WebSocket or Connect stream of an end user (JWT) may publish; API keys are not limited; 0: unlimited")
	fs.Int(&cfg.Services.ConnectionPublishRate.Burst, "publish-burst-per-connection", []string{"HERALD_PUBLISH_BURST_PER_CONNECTION"}, limits.Defaults().PublishPerConnection.Burst, "burst above --publish-rate-per-connection")
	fs.Int(&cfg.Services.MaxSubscriptionsPerConnection, "max-subscriptions-per-connection", []string{"HERALD_MAX_SUBSCRIPTIONS_PER_CONNECTION"}, limits.Defaults().MaxSubscriptionsPerConnection, "channels one WebSocket or Connect stream may be subscribed to, over all its subscriptions; -1: unlimited")
	fs.Int(&cfg.Services.MaxChannelsPerRequest, "max-channels-per-request", []string{"HERALD_MAX_CHANNELS_PER_REQUEST"}, limits.Defaults().MaxChannelsPerRequest, "channels one subscribe, SSE or poll request may name (at most 100); -1: 100")
	fs.String(&o.origins, "allowed-origins", []string{"HERALD_ALLOWED_ORIGINS"}, "", "comma-separated browser origins allowed cross-origin (CORS, WebSocket Origin), e.g. https://app.example.com,https://*.example.com or *; empty allows same-origin pages only")
	fs.String(&o.hosts, "allowed-hosts", []string{"HERALD_ALLOWED_HOSTS"}, "", "comma-separated host names requests may use (Host header); empty: loopback names on a loopback --addr (against DNS rebinding), any otherwise")
	fs.Duration(&cfg.Gateway.SSEKeepAlive, "sse-keepalive", []string{"HERALD_SSE_KEEPALIVE"}, gateway.DefaultSSEKeepAlive, "interval of SSE keep-alive comments")
	fs.Duration(&cfg.Gateway.WSPingInterval, "ws-ping-interval", []string{"HERALD_WS_PING_INTERVAL"}, gateway.DefaultWSPingInterval, "WebSocket ping interval (dead-peer detection)")
	fs.Duration(&cfg.Gateway.WriteTimeout, "write-timeout", []string{"HERALD_WRITE_TIMEOUT"}, gateway.DefaultWriteTimeout, "how long a write to any client (WebSocket, SSE, gRPC/Connect stream, response) may stall before the client is dropped as a slow consumer")
	fs.Duration(&cfg.Gateway.ReadTimeout, "read-timeout", []string{"HERALD_READ_TIMEOUT"}, gateway.DefaultReadTimeout, "how long a request body may take to arrive (for a Connect stream or WebSocket: each message, once begun)")
	fs.Int(&cfg.Gateway.WSWriteQueue, "ws-write-queue", []string{"HERALD_WS_WRITE_QUEUE"}, gateway.DefaultWSWriteQueue, "frames queued per WebSocket")
	fs.Int(&cfg.Gateway.WSWriteBytes, "ws-write-bytes", []string{"HERALD_WS_WRITE_BYTES"}, gateway.DefaultWSWriteBytes, "bytes queued per WebSocket")
	fs.String(&cfg.AdminAddr, "admin-addr", []string{"HERALD_ADMIN_ADDR"}, defaultAdminAddr, "admin listener: /metrics, /debug/pprof/, /livez, /readyz and the admin console; keep it off the internet; empty: off")
	fs.Duration(&cfg.ShutdownDelay, "shutdown-delay", []string{"HERALD_SHUTDOWN_DELAY"}, 0, "on SIGTERM, how long to keep serving with /readyz answering 503 before draining, so load balancers move new clients away first")
	logFlags(fs, &o.logFormat, &o.logLevel)
	return fs
}

// defaultAdminAddr is the admin listener's default: loopback only.
const defaultAdminAddr = "127.0.0.1:9090"

func serve(ctx context.Context, args []string, stdout io.Writer) error {
	o := &serveSettings{}
	fs := serveFlags(o, stdout)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.usage("takes no arguments, got %q", fs.Args())
	}
	if err := fs.applyConfigFile(o.configFile); err != nil {
		return err
	}
	cfg := o.cfg
	// The hub treats 0 as "the default"; a negative size is a mistake, not
	// a default.
	for _, f := range []struct {
		name string
		v    int
	}{{"queue-size", cfg.Hub.QueueSize}, {"queue-bytes", cfg.Hub.QueueBytes}, {"window-size", cfg.Hub.WindowSize}, {"window-bytes", cfg.Hub.WindowBytes}} {
		if f.v < 0 {
			return fs.usage("--%s is %d: want a positive number (0: the default)", f.name, f.v)
		}
	}
	autoCreate, authConfig, namespaces, origins, hosts := o.autoCreate, o.authConfig, o.namespaces, o.origins, o.hosts
	logger, err := newLogger(o.logFormat, o.logLevel, os.Stderr)
	if err != nil {
		return fs.usage("%v", err)
	}
	cfg.Services.NoAutoCreate = !autoCreate
	if authConfig != "" {
		if cfg.Services.Auth, err = auth.LoadConfig(ctx, authConfig, logger); err != nil {
			return err
		}
	} else {
		logger.Warn("authentication off (no --auth-config): every client may publish, subscribe and manage channels")
	}
	if namespaces != "" {
		if cfg.Services.Namespaces, err = namespace.Load(namespaces); err != nil {
			return err
		}
		for _, p := range cfg.Services.Namespaces.Policies() {
			if cfg.Services.Auth == nil && p.Restricts() {
				logger.Warn("namespace access rules need --auth-config: without authentication every client may do everything", "namespace", p.Name)
			}
		}
	}
	cfg.Gateway.AllowedOrigins = splitList(origins)
	cfg.Gateway.AllowedHosts = splitList(hosts)
	cfg.Logger = logger
	if cfg.AdminAddr != "" {
		cfg.Metrics = metrics.New()
		cfg.Metrics.SetBuildInfo(buildVersion())
	}
	ver, _ := buildVersion()
	cfg.Version = ver
	tp, stopTracing, err := telemetry.Setup(ctx, ver)
	if err != nil {
		return err
	}
	if tp != nil {
		cfg.TracerProvider = tp
		logger.Info("tracing on: exporting spans over OTLP as the OTEL_* environment says")
		defer func() { // flush what is left
			flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := stopTracing(flushCtx); err != nil {
				logger.Warn("tracing: flushing spans at exit", "err", err)
			}
		}()
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	logEndpoints(logger, srv.Addr())
	if a := srv.AdminAddr(); a != "" {
		logger.Info("admin (keep it off the internet)", "metrics", "http://"+a+"/metrics", "pprof", "http://"+a+"/debug/pprof/",
			"ready", "http://"+a+"/readyz")
	}
	return srv.Run(ctx)
}

func migrate(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		url                 string
		wait                time.Duration
		logFormat, logLevel string
	)
	fs := newFlags("migrate", "", "Apply the PostgreSQL migrations and exit (herald serve also applies them at start).", stdout)
	fs.String(&url, "database-url", dbKeys, "", "PostgreSQL URL (required)")
	databaseWait(fs, &wait)
	logFlags(fs, &logFormat, &logLevel)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.usage("takes no arguments, got %q", fs.Args())
	}
	if url == "" {
		return fs.usage("needs a database: set DATABASE_URL or --database-url")
	}
	logger, err := newLogger(logFormat, logLevel, os.Stderr)
	if err != nil {
		return fs.usage("%v", err)
	}
	pool, err := server.Connect(ctx, url, wait, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrations.Up(ctx, pool); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	fmt.Fprintln(stdout, "migrations applied")
	return nil
}

func databaseWait(fs *envFlags, p *time.Duration) {
	fs.Duration(p, "database-wait", []string{"HERALD_DATABASE_WAIT"}, 30*time.Second, "how long to wait at start for PostgreSQL to accept connections (retrying with backoff while it is down or starting); 0: fail at once")
}

func logFlags(fs *envFlags, format, level *string) {
	fs.String(format, "log-format", []string{"HERALD_LOG_FORMAT"}, "text", "text or json")
	fs.String(level, "log-level", []string{"HERALD_LOG_LEVEL"}, "info", "debug, info, warn or error")
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
