package services

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/namespace"
)

// Defaults of Config, each in one place. The limits' own defaults and the
// reasons for them are limits.Defaults'.
const (
	// DefaultMaxMessageBytes bounds one request message: an RPC message,
	// a WebSocket frame, a REST body.
	DefaultMaxMessageBytes = 2 << 20
	// DefaultPageSize is the size of a history page, long-poll or channel
	// list when the request gives no limit; MaxPageSize is the largest a
	// server may allow (the API's own ceiling).
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// MaxChannelsCeiling is the most channels one request may name whatever
	// the configuration: the max_items rule of SubscribeRequest.channels and
	// PollRequest.channels in proto/herald/v1.
	MaxChannelsCeiling = 100
)

// Config configures the application. Zero values take the defaults; for
// the limits, a negative value means no limit.
type Config struct {
	// NoAutoCreate makes publishing to an unknown channel fail with
	// not_found instead of creating it (with its namespace's settings).
	NoAutoCreate bool
	// MaxMessageBytes bounds one request message over every transport.
	// Default DefaultMaxMessageBytes.
	MaxMessageBytes int

	// MaxConnections bounds the open requests of the instance across
	// transports: Subscribe and Connect streams, WebSockets, SSE streams,
	// long-polls for their lifetime, and unary calls admitted with Admit
	// while they run. MaxConnectionsPerUser bounds one end user's (JWT
	// identity's); API keys and anonymous callers are not counted per
	// user. Defaults from limits.Defaults.
	MaxConnections, MaxConnectionsPerUser int
	// UserPublishRate bounds how fast each end user may publish across
	// connections and transports (anonymous publishers: per network
	// address); ConnectionPublishRate how fast one bidirectional connection
	// (Connect stream, WebSocket) of an end user or anonymous client may.
	// API keys and a server without Auth are not limited. A zero PerSecond
	// with a Burst set: unlimited. Defaults from limits.Defaults.
	UserPublishRate, ConnectionPublishRate limits.Rate
	// MaxSubscriptionsPerConnection bounds the channels one bidirectional
	// connection's subscriptions hold together; MaxChannelsPerRequest the
	// channels one Subscribe, Poll, SSE request or subscribe command names
	// (at most MaxChannelsCeiling). Defaults from limits.Defaults.
	MaxSubscriptionsPerConnection, MaxChannelsPerRequest int

	// PageSize is the size of a history page, long-poll or channel list
	// when the request leaves it 0; MaxPageSize caps what a request may
	// ask for: larger limits are lowered to it, and the page says there is
	// more. Defaults DefaultPageSize and MaxPageSize.
	PageSize, MaxPageSize int

	// Auth, when set, is what the wiring layer authenticates requests with;
	// the services authorize each action by the caller's identity and use
	// it to verify the tokens of refresh commands. Nil: no authentication,
	// everything is allowed.
	Auth *auth.Authenticator
	// Namespaces are the channel namespace policies. Nil: every channel has
	// the default policy.
	Namespaces *namespace.Set

	// Ephemeral carries signals and presence between instances; its
	// messages must come back through App.Deliver. Nil: in process only
	// (ephemeral.Memory, for the embedded single instance).
	Ephemeral Ephemeral
	// SignalRate bounds each end user's signals (anonymous callers: per
	// network address; API keys are not limited). Default
	// DefaultSignalRate.
	SignalRate limits.Rate

	Logger *slog.Logger
	// Metrics receives admissions, publishes and deliveries; nil records
	// nothing.
	Metrics *metrics.Metrics
}

// Validate reports every setting out of range, as New would.
func (c Config) Validate() error {
	_, _, err := c.withDefaults()
	return err
}

// withDefaults returns c with the defaults filled in and checks it.
func (c Config) withDefaults() (Config, limits.Limits, error) {
	d := limits.Defaults()
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.UserPublishRate == (limits.Rate{}) {
		c.UserPublishRate = d.PublishPerUser
	}
	if c.ConnectionPublishRate == (limits.Rate{}) {
		c.ConnectionPublishRate = d.PublishPerConnection
	}
	orDefault := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	orDefault(&c.MaxConnections, d.MaxConnectionsPerInstance)
	orDefault(&c.MaxConnectionsPerUser, d.MaxConnectionsPerUser)
	orDefault(&c.MaxSubscriptionsPerConnection, d.MaxSubscriptionsPerConnection)
	orDefault(&c.MaxChannelsPerRequest, d.MaxChannelsPerRequest)
	orDefault(&c.PageSize, DefaultPageSize)
	orDefault(&c.MaxPageSize, max(MaxPageSize, c.PageSize))
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SignalRate == (limits.Rate{}) {
		c.SignalRate = DefaultSignalRate
	}

	unlimited := func(n int) int { return max(n, 0) }
	l := d
	l.MaxConnectionsPerInstance = unlimited(c.MaxConnections)
	l.MaxConnectionsPerUser = unlimited(c.MaxConnectionsPerUser)
	l.PublishPerConnection = c.ConnectionPublishRate
	l.PublishPerUser = c.UserPublishRate
	l.MaxSubscriptionsPerConnection = unlimited(c.MaxSubscriptionsPerConnection)
	l.MaxChannelsPerRequest = unlimited(c.MaxChannelsPerRequest)
	err := l.Validate()
	if l.MaxChannelsPerRequest > MaxChannelsCeiling {
		err = errors.Join(err, fmt.Errorf("MaxChannelsPerRequest is %d; want at most %d (the API's own limit)",
			l.MaxChannelsPerRequest, MaxChannelsCeiling))
	}
	if c.PageSize < 1 || c.MaxPageSize < c.PageSize || c.MaxPageSize > MaxPageSize {
		err = errors.Join(err, fmt.Errorf("page sizes: want 1 <= default (%d) <= max (%d) <= %d", c.PageSize, c.MaxPageSize, MaxPageSize))
	}
	if err != nil {
		return c, l, fmt.Errorf("invalid limits: %w", err)
	}
	return c, l, nil
}

// pageSize is the page size for a request's limit: the default for 0,
// lowered to the maximum when larger.
func (c *Config) pageSize(requested int32) int {
	n := int(requested)
	if n <= 0 {
		n = c.PageSize
	}
	return min(n, c.MaxPageSize)
}
