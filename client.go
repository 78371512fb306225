package herald

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
)

// Format says how an event's data is to be read (herald.v1.DataFormat).
type Format = heraldv1.DataFormat

// Data formats. The zero value is opaque bytes.
const (
	FormatBytes = heraldv1.DataFormat_DATA_FORMAT_BYTES
	FormatJSON  = heraldv1.DataFormat_DATA_FORMAT_JSON
	FormatText  = heraldv1.DataFormat_DATA_FORMAT_TEXT
)

// Message is an event to publish.
type Message struct {
	// Channel: 1 to 128 characters of [A-Za-z0-9_.:@/=-], starting with a
	// letter or digit.
	Channel string
	// Type: up to 64 characters of [A-Za-z0-9_.:/-]; empty means "message".
	Type   string
	Data   []byte
	Format Format
	// IdempotencyKey makes a retried publish store the event once. Empty:
	// Client.Publish and Session.Publish make one (PublishTx does not: a
	// transaction that is retried publishes again).
	IdempotencyKey string
}

func (m Message) request() *heraldv1.PublishRequest {
	return &heraldv1.PublishRequest{Channel: m.Channel, Type: m.Type, Data: m.Data,
		Format: m.Format, IdempotencyKey: m.IdempotencyKey}
}

// Protocol is the RPC protocol a Client speaks.
type Protocol int

const (
	// GRPC needs HTTP/2 (prior knowledge on http:// URLs). The default.
	GRPC Protocol = iota
	// Connect works over HTTP/1.1 and HTTP/2.
	Connect
	// GRPCWeb works over HTTP/1.1 and HTTP/2.
	GRPCWeb
)

// Default retry delays: the first retry waits about DefaultMinBackoff, each
// next one twice as long, up to DefaultMaxBackoff (with jitter).
const (
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
	DefaultMaxAttempts = 10
)

// Option configures a Client.
type Option func(*options)

type options struct {
	servers     []string
	protocol    Protocol
	token       string
	http        *http.Client
	minBackoff  time.Duration
	maxBackoff  time.Duration
	maxAttempts int
	logger      *slog.Logger
	connect     []connect.ClientOption
}

// WithServers adds more instances of the same Herald deployment. After a
// failure, publishes and reconnecting subscriptions try the next one.
func WithServers(urls ...string) Option {
	return func(o *options) { o.servers = append(o.servers, urls...) }
}

// WithProtocol selects the RPC protocol; default GRPC.
func WithProtocol(p Protocol) Option { return func(o *options) { o.protocol = p } }

// WithToken sends token (an API key or a JWT) as Authorization: Bearer
// with every request.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithHTTPClient sets the HTTP client. Default: one that speaks HTTP/2
// without TLS (prior knowledge) on http:// URLs, as gRPC and Connect
// sessions need, and negotiates HTTP/2 with TLS on https:// ones. Over
// HTTP/1.1 (the Connect and gRPC-Web protocols) only Publish and Subscribe
// work.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.http = c } }

// WithBackoff sets the retry delays (see DefaultMinBackoff).
func WithBackoff(first, largest time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = first, largest }
}

// WithMaxAttempts bounds how many times Publish sends one message while
// the server is unavailable (default DefaultMaxAttempts; the context bounds
// it too).
func WithMaxAttempts(n int) Option { return func(o *options) { o.maxAttempts = n } }

// WithLogger receives reconnects and retries (at Info level). Default: none.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithConnectOptions adds connect-go client options (interceptors,
// compression, read limits).
func WithConnectOptions(opts ...connect.ClientOption) Option {
	return func(o *options) { o.connect = append(o.connect, opts...) }
}

// Client talks to one Herald deployment. It is safe for concurrent use.
type Client struct {
	opts     options
	hc       *http.Client
	events   []heraldv1connect.EventServiceClient
	history  []heraldv1connect.HistoryServiceClient
	channels []heraldv1connect.ChannelServiceClient
	// preferred is the index of the server to try first; a failure moves
	// it on.
	preferred atomic.Uint32
}

// NewClient returns a client of the Herald server at url (e.g.
// "http://127.0.0.1:8080"; a bare host:port means http://).
func NewClient(url string, opts ...Option) (*Client, error) {
	o := options{minBackoff: DefaultMinBackoff, maxBackoff: DefaultMaxBackoff, maxAttempts: DefaultMaxAttempts}
	for _, opt := range opts {
		opt(&o)
	}
	if o.minBackoff <= 0 || o.maxBackoff < o.minBackoff {
		return nil, fmt.Errorf("herald: backoff %v..%v: want 0 < first <= largest", o.minBackoff, o.maxBackoff)
	}
	if o.maxAttempts < 1 {
		o.maxAttempts = 1
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	var copts []connect.ClientOption
	switch o.protocol {
	case GRPC:
		copts = append(copts, connect.WithGRPC())
	case GRPCWeb:
		copts = append(copts, connect.WithGRPCWeb())
	case Connect:
	default:
		return nil, fmt.Errorf("herald: unknown protocol %d", o.protocol)
	}
	copts = append(copts, o.connect...)
	c := &Client{opts: o}
	servers := append([]string{url}, o.servers...)
	for i, s := range servers {
		if s == "" {
			return nil, errors.New("herald: empty server URL")
		}
		if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
			servers[i] = "http://" + s
		}
	}
	c.hc = o.http
	if c.hc == nil {
		c.hc = defaultHTTPClient(servers[0])
	}
	hc := c.hc
	if o.token != "" {
		hc = &http.Client{Transport: bearer{token: o.token, next: transportOf(c.hc)},
			CheckRedirect: c.hc.CheckRedirect, Jar: c.hc.Jar, Timeout: c.hc.Timeout}
	}
	for _, s := range servers {
		c.events = append(c.events, heraldv1connect.NewEventServiceClient(hc, s, copts...))
		c.history = append(c.history, heraldv1connect.NewHistoryServiceClient(hc, s, copts...))
		c.channels = append(c.channels, heraldv1connect.NewChannelServiceClient(hc, s, copts...))
	}
	return c, nil
}

func defaultHTTPClient(url string) *http.Client {
	var protos http.Protocols
	if strings.HasPrefix(url, "https://") {
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
	} else {
		// Prior knowledge: gRPC and every bidirectional stream need HTTP/2,
		// and Herald serves it without TLS.
		protos.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: &http.Transport{Protocols: &protos, ForceAttemptHTTP2: true,
		// Find a dead connection (no RST: a host gone, a dropped route)
		// within about a minute, so that streams reconnect.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}}}
}

func transportOf(c *http.Client) http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

// bearer sends a credential with every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// Close closes the idle connections of the client's default HTTP client
// (not of one given with WithHTTPClient). Calls in progress go on.
func (c *Client) Close() {
	if c.opts.http == nil {
		c.hc.CloseIdleConnections()
	}
}

// Events returns the generated EventService client of the preferred
// server, for calls this package does not wrap (Poll).
func (c *Client) Events() heraldv1connect.EventServiceClient { return c.events[c.server()] }

// History returns the generated HistoryService client of the preferred
// server: ListEvents, GetEvent, UpdateEvent, DeleteEvent.
func (c *Client) History() heraldv1connect.HistoryServiceClient { return c.history[c.server()] }

// Channels returns the generated ChannelService client of the preferred
// server.
func (c *Client) Channels() heraldv1connect.ChannelServiceClient { return c.channels[c.server()] }

func (c *Client) server() int { return int(c.preferred.Load()) % len(c.events) }

// failed moves the preferred server on from i (unless another call did
// already).
func (c *Client) failed(i int) {
	if len(c.events) > 1 {
		c.preferred.CompareAndSwap(uint32(i), uint32((i+1)%len(c.events)))
	}
}

// Publish stores m and returns the stored event once it is committed. A
// message without an IdempotencyKey gets a random one, and while the server
// answers unavailable (or cannot be reached) Publish sends it again, with
// the same key, after a backoff, up to WithMaxAttempts times and until ctx
// ends: it is stored once. The response says Duplicate when the key
// matched an earlier publish of the same type and data. Errors are
// *connect.Error values (connect.CodeOf).
func (c *Client) Publish(ctx context.Context, m Message) (*heraldv1.PublishResponse, error) {
	if m.IdempotencyKey == "" {
		m.IdempotencyKey = NewIdempotencyKey()
	}
	req := m.request()
	b := c.backoff()
	for attempt := 1; ; attempt++ {
		i := c.server()
		resp, err := c.events[i].Publish(ctx, connect.NewRequest(req))
		if err == nil {
			return resp.Msg, nil
		}
		if connect.CodeOf(err) != connect.CodeUnavailable || attempt >= c.opts.maxAttempts || ctx.Err() != nil {
			return nil, err
		}
		c.failed(i)
		wait := b.next()
		c.opts.logger.Info("herald: publish failed; retrying with the same idempotency key",
			"channel", m.Channel, "attempt", attempt, "retry_in", wait, "err", err)
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// NewIdempotencyKey returns a random key (32 hex digits).
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// backoff yields growing delays with jitter (between half and all of each
// step), from the client's first to its largest delay.
type backoff struct {
	first, largest, step time.Duration
}

func (c *Client) backoff() *backoff {
	return &backoff{first: c.opts.minBackoff, largest: c.opts.maxBackoff}
}

func (b *backoff) next() time.Duration {
	if b.step == 0 {
		b.step = b.first
	} else {
		b.step = min(2*b.step, b.largest)
	}
	return b.step/2 + mrand.N(b.step/2+1)
}

func (b *backoff) reset() { b.step = 0 }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryable says whether a stream that ended with err is worth opening
// again from its cursor: the server went away or ended it for a reason
// that passes (unavailable, slow consumer, shutdown), as opposed to a
// refusal that retrying repeats (invalid argument, permissions, a cursor
// ahead of the log).
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists,
		connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeFailedPrecondition,
		connect.CodeOutOfRange, connect.CodeUnimplemented:
		return false
	}
	return true
}

// streamEnd returns the StreamEnd detail of err, if any.
func streamEnd(err error) *heraldv1.StreamEnd {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return nil
	}
	for _, d := range cerr.Details() {
		if v, err := d.Value(); err == nil {
			if end, ok := v.(*heraldv1.StreamEnd); ok {
				return end
			}
		}
	}
	return nil
}
