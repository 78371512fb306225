package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/services"
)

// Defaults of Config.
const (
	DefaultSSEKeepAlive   = 15 * time.Second
	DefaultSSERetry       = 2 * time.Second
	DefaultWSPingInterval = 30 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	DefaultReadTimeout    = 10 * time.Second
	DefaultWSWriteQueue   = 256
	DefaultWSWriteBytes   = 1 << 20
)

// Config configures the gateway. Zero values take the defaults.
type Config struct {
	// AllowedOrigins lists the browser origins allowed to call cross-origin
	// (CORS for REST, SSE, Connect and gRPC-Web; the Origin check of
	// WebSocket). Entries are origins ("https://app.example.com"), host
	// patterns with a wildcard ("https://*.example.com") or "*" for any.
	// Empty (the default) allows same-origin requests only.
	AllowedOrigins []string
	// AllowedHosts, when set, lists the host names (without port) that
	// requests may name in their Host header; others get 403. It defends a
	// server on a loopback address against DNS rebinding: a page whose name
	// resolves to 127.0.0.1 would otherwise count as same-origin. Empty
	// allows any host.
	AllowedHosts []string
	// SSEKeepAlive is the interval of SSE keep-alive comments. Default
	// DefaultSSEKeepAlive.
	SSEKeepAlive time.Duration
	// SSERetry is the reconnect delay SSE tells browsers. Default
	// DefaultSSERetry.
	SSERetry time.Duration
	// WSPingInterval is how often the server pings each WebSocket; a peer
	// that does not answer within WriteTimeout is dropped. Default
	// DefaultWSPingInterval.
	WSPingInterval time.Duration
	// WriteTimeout bounds how long a write to a WebSocket or SSE client
	// may stall before the connection is dropped, and how long a WebSocket
	// close may take; a WebSocket write queue that stays full for half of
	// it closes the connection as a slow consumer (4008). Default
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ReadTimeout bounds how long one WebSocket message may take to arrive
	// once its first byte has (between messages a client may stay silent
	// as long as it answers pings). Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// WSWriteQueue bounds the frames queued for one WebSocket. Default
	// DefaultWSWriteQueue.
	WSWriteQueue int
	// WSWriteBytes bounds the bytes of the frames queued for one WebSocket,
	// so that large events cannot make a stalled connection hold
	// WSWriteQueue of them. Default DefaultWSWriteBytes.
	WSWriteBytes int
	Logger       *slog.Logger
}

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SSEKeepAlive <= 0 {
		c.SSEKeepAlive = DefaultSSEKeepAlive
	}
	if c.SSERetry <= 0 {
		c.SSERetry = DefaultSSERetry
	}
	if c.WSPingInterval <= 0 {
		c.WSPingInterval = DefaultWSPingInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WSWriteQueue <= 0 {
		c.WSWriteQueue = DefaultWSWriteQueue
	}
	if c.WSWriteBytes <= 0 {
		c.WSWriteBytes = DefaultWSWriteBytes
	}
}

// Gateway serves the browser transports. Create it with New, add its routes
// with Register and wrap the server's handler with CORS.
type Gateway struct {
	app     *services.App
	cfg     Config
	origins originMatcher
	rpcErr  *connect.ErrorWriter

	mu      sync.Mutex
	conns   map[hijacked]struct{} // open WebSockets and HTTP/1 SSE streams (hijacked: the HTTP server does not track them)
	closing bool                  // Drain or Kill was called: no new ones
	connsWG sync.WaitGroup
}

// hijacked is a connection the gateway serves after taking it from
// net/http: a WebSocket, or an SSE stream over HTTP/1.
type hijacked interface {
	kill() // drop it at once, like a crash
}

// New returns a gateway over app.
func New(app *services.App, cfg Config) *Gateway {
	cfg.defaults()
	return &Gateway{
		app:     app,
		cfg:     cfg,
		origins: newOriginMatcher(cfg.AllowedOrigins),
		rpcErr:  connect.NewErrorWriter(),
		conns:   make(map[hijacked]struct{}),
	}
}

// Register adds the gateway's routes to mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+wsPath, g.serveWS)
	mux.HandleFunc("GET "+ssePath, g.serveSSE)
	g.registerREST(mux)
	registerWeb(mux)
}

// Where credentials may come from besides the Authorization header, for
// clients that cannot set headers (EventSource, the WebSocket constructor).
// The wiring layer's authentication reads them; the API documents describe
// them.
const (
	TokenParam  = "access_token"
	TokenCookie = "herald_token"
)

// Paths of the streaming endpoints.
const (
	wsPath  = "/v1/ws"
	ssePath = "/v1/sse"
)

// WriteError answers r with a refusal made before its handler ran (an
// origin, host or credential refused), in the caller's own protocol: a
// Connect, gRPC or gRPC-Web error for the RPCs, and the one JSON error
// shape with its HTTP status for REST, SSE and the WebSocket handshake
// (which have no stream yet to carry anything else).
func (g *Gateway) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if isRPC(r) && g.rpcErr.IsSupported(r) {
		ce := toConnectError(err)
		if ra := services.RetryAfter(err); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		_ = g.rpcErr.Write(w, r, ce)
		return
	}
	writeError(w, err)
}

// Drain waits until every WebSocket and HTTP/1 SSE stream has ended, or
// ctx ends. Call it after the application stopped: each WebSocket then
// sends its subscriptions' shutdown frames and closes with 1012 (service
// restart), each SSE stream sends its @end event.
func (g *Gateway) Drain(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.connsWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.Kill()
		<-done
		return ctx.Err()
	}
}

// Kill drops every WebSocket and HTTP/1 SSE stream at once, like a crash.
func (g *Gateway) Kill() {
	g.mu.Lock()
	g.closing = true
	conns := make([]hijacked, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}

// track registers a connection so shutdown can wait for it.
func (g *Gateway) track(wc hijacked) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	select {
	case <-g.app.Stopping():
		return false
	default:
	}
	g.conns[wc] = struct{}{}
	g.connsWG.Add(1)
	return true
}

func (g *Gateway) untrack(wc hijacked) {
	g.mu.Lock()
	delete(g.conns, wc)
	g.mu.Unlock()
	g.connsWG.Done()
}

// Connections returns how many WebSockets and HTTP/1 SSE streams are
// open (the connections net/http no longer tracks).
func (g *Gateway) Connections() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// errorBody is the one error shape of every HTTP endpoint: the stable
// snake_case code (the gRPC/Connect code) and a message for humans.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// httpStatus maps connect codes to HTTP statuses as the Connect protocol
// does.
func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeCanceled:
		return 499
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	default:
		return http.StatusInternalServerError
	}
}

// writeError writes err in the one error shape. Errors that are not
// connect errors have already been mapped by the services; anything else
// is internal and its text is not shown.
func writeError(w http.ResponseWriter, err error) {
	writeErrorStatus(w, 0, err)
}

// writeErrorStatus is writeError with an explicit HTTP status (0: from the
// code), for refusals such as 413 that have no connect code of their own.
func writeErrorStatus(w http.ResponseWriter, status int, err error) {
	ce := toConnectError(err)
	if status == 0 {
		status = httpStatus(ce.Code())
		if services.IsTooLarge(err) {
			status = http.StatusRequestEntityTooLarge
		}
	}
	if ra := services.RetryAfter(err); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // messages quote <token> and the like
	_ = enc.Encode(errorBody{Code: ce.Code().String(), Message: ce.Message()})
}

// isRPC reports a request for an RPC: its path is /package.Service/Method
// (Herald's services, health, reflection), never one of the gateway's.
func isRPC(r *http.Request) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return ok && strings.Contains(svc, ".") && method != "" && !strings.Contains(method, "/")
}

// toConnectError returns err's connect error. Errors that are not connect
// errors have already been mapped by the services; anything else is
// internal and its text is not shown.
func toConnectError(err error) *connect.Error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		ce = connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	return ce
}

// invalid returns an invalid_argument error with msg.
func invalid(msg string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
}
