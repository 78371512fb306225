package services

import (
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/ephemeral"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/metrics"
)

// App is Herald's application: what every transport calls. Its methods are
// safe for concurrent use.
//
//   - Open admits and opens a subscription (SSE, Subscribe, long-poll).
//   - NewSession admits a bidirectional connection (WebSocket, Connect)
//     and Session.Serve runs it.
//   - Publish, ListEvents, GetEvent, UpdateEvent, DeleteEvent, Poll and the
//     channel methods are the unary API, one method per RPC, taking and
//     returning the API's messages (REST calls them; Register mounts them
//     as connect-go handlers).
//
// Requests must satisfy their protovalidate rules (Validate): the RPCs
// check them in an interceptor, REST before calling.
type App struct {
	cfg    Config
	lim    limits.Limits
	log    eventlog.Log
	hub    *fanout.Hub
	logger *slog.Logger
	met    *metrics.Metrics

	conns     *limits.Conns // open requests and streams, every transport
	userRates *limits.Keyed // end users' and anonymous addresses' publish rate; nil: unlimited
	creator   *channelCreator
	registry  connRegistry // long-lived connections, for the admin API

	eph         Ephemeral     // signals and presence
	signalRates *limits.Keyed // each user's signal rate
	abandoned   atomic.Bool   // Abandon: presence is left to other instances

	leavesMu     sync.Mutex
	failedLeaves []failedLeave // presence leaves to retry (RetryLeaves)
}

// New returns the application over log and hub. It starts no goroutines;
// the hub must be running for subscriptions and the log for publishes.
func New(log eventlog.Log, hub *fanout.Hub, cfg Config) (*App, error) {
	cfg, lim, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	a := &App{
		cfg:       cfg,
		lim:       lim,
		log:       log,
		hub:       hub,
		logger:    cfg.Logger,
		met:       cfg.Metrics,
		conns:     lim.NewConns(),
		userRates: lim.NewUserBuckets(),
		eph:       cfg.Ephemeral,
	}
	a.signalRates = limits.NewKeyed(cfg.SignalRate, 100_000)
	if a.eph == nil {
		a.eph = ephemeral.NewMemory(a.Deliver)
	}
	if !cfg.NoAutoCreate {
		a.creator = &channelCreator{log: log, known: make(map[string]struct{})}
	}
	return a, nil
}

// MaxMessageBytes is the largest request message any transport accepts.
func (a *App) MaxMessageBytes() int { return a.cfg.MaxMessageBytes }

// Ready is closed once the application can serve subscriptions (the hub
// has read the log's head).
func (a *App) Ready() <-chan struct{} { return a.hub.Ready() }

// Stopping is closed once the application stops serving subscriptions
// (shutdown): every open one has been ended with a resumable status.
func (a *App) Stopping() <-chan struct{} { return a.hub.Stopped() }

// OpenConnections returns how many requests (Admit) and streams are open.
func (a *App) OpenConnections() int { return a.conns.Total() }

// compressMinBytes: messages smaller than this are sent uncompressed
// (gzip setup dominated stream throughput when every event was compressed;
// see docs/benchmarks.md).
const compressMinBytes = 4 << 10

// ServiceNames are the RPC services Register mounts.
var ServiceNames = []string{
	heraldv1connect.EventServiceName,
	heraldv1connect.HistoryServiceName,
	heraldv1connect.ChannelServiceName,
	heraldv1connect.PresenceServiceName,
}

// Register mounts the RPC services (gRPC, gRPC-Web and Connect) on mux,
// with the request validation, the message size limit and the codecs that
// write pre-encoded events; opts add to those, their interceptors outside
// the validation (tracing sees the whole call).
func (a *App) Register(mux *http.ServeMux, opts ...connect.HandlerOption) {
	// Defaults first, so that opts may override them; the validation
	// interceptor last, so that opts' interceptors (tracing) wrap it.
	all := []connect.HandlerOption{
		connect.WithReadMaxBytes(a.cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithCodec(binaryCodec{}),
		connect.WithCodec(jsonCodec{"json"}),
		connect.WithCodec(jsonCodec{"json; charset=utf-8"}),
	}
	all = append(all, opts...)
	all = append(all, connect.WithInterceptors(Interceptor{}))
	mux.Handle(heraldv1connect.NewEventServiceHandler(eventService{a}, all...))
	mux.Handle(heraldv1connect.NewHistoryServiceHandler(historyService{a}, all...))
	mux.Handle(heraldv1connect.NewChannelServiceHandler(channelService{a}, all...))
	mux.Handle(heraldv1connect.NewPresenceServiceHandler(presenceService{a}, all...))
}
