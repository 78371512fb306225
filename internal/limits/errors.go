package limits

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Sentinels that an *Error matches with errors.Is, one per kind of limit,
// for the services' code table (all map to ResourceExhausted / HTTP 429).
var (
	ErrTooManyConnections   = errors.New("too many connections")
	ErrRateLimited          = errors.New("rate limited")
	ErrTooManySubscriptions = errors.New("too many subscriptions")
	ErrTooManyChannels      = errors.New("too many channels in one request")
)

// Limit names which limit refused. The values are stable and may be sent to
// clients and used as metric labels.
type Limit string

// The limits of Limits, by name.
const (
	LimitConnectionsPerInstance     Limit = "connections_per_instance"
	LimitConnectionsPerUser         Limit = "connections_per_user"
	LimitPublishPerConnection       Limit = "publish_rate_per_connection"
	LimitPublishPerUser             Limit = "publish_rate_per_user"
	LimitSubscriptionsPerConnection Limit = "subscriptions_per_connection"
	LimitChannelsPerRequest         Limit = "channels_per_request"
)

// Action is what the client should do about a refusal.
type Action int

const (
	// ActionRetryLater: retry the same request after RetryAfter, or after
	// the client's own reconnect backoff when RetryAfter is zero (the
	// instance is full; another instance may have room). Transports send
	// Retry-After (HTTP) or close with 1013 Try Again Later (WebSocket).
	ActionRetryLater Action = iota + 1
	// ActionCloseConnections: the user holds too many connections; retrying
	// fails until the client closes some. WebSocket: 1008 Policy Violation.
	ActionCloseConnections
	// ActionUnsubscribe: the connection holds too many subscriptions;
	// unsubscribe from some before subscribing to more.
	ActionUnsubscribe
	// ActionSplitRequest: the request itself is too large (too many channels,
	// or more events than the burst); retrying it unchanged never succeeds.
	ActionSplitRequest
)

// Error is a refusal by a limit. It carries what a transport needs to tell
// the client: which limit, its value and what to do. Its Error text is
// written for clients and holds no internals.
type Error struct {
	Limit  Limit
	Max    int // the configured limit; for rates, the burst
	Action Action
	// RetryAfter is how long until the same request would be admitted;
	// set only with ActionRetryLater, zero when unknown.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	switch e.Limit {
	case LimitConnectionsPerInstance:
		return fmt.Sprintf("server at its connection limit (%d); reconnect after a backoff, to any instance", e.Max)
	case LimitConnectionsPerUser:
		return fmt.Sprintf("too many connections for this user (limit %d); close some before opening another", e.Max)
	case LimitPublishPerConnection, LimitPublishPerUser:
		scope := "this connection"
		if e.Limit == LimitPublishPerUser {
			scope = "this user"
		}
		if e.Action == ActionSplitRequest {
			return fmt.Sprintf("publish rate limit for %s: a batch may hold at most %d events; split it", scope, e.Max)
		}
		return fmt.Sprintf("publish rate limit for %s exceeded; retry after %s", scope, e.RetryAfter.Round(time.Millisecond))
	case LimitSubscriptionsPerConnection:
		return fmt.Sprintf("too many subscriptions on this connection (limit %d); unsubscribe from some first", e.Max)
	case LimitChannelsPerRequest:
		return fmt.Sprintf("too many channels in one request (limit %d); split the request", e.Max)
	}
	return fmt.Sprintf("limit %s (%d) exceeded", e.Limit, e.Max)
}

// Is reports whether target is the sentinel for e's kind of limit.
func (e *Error) Is(target error) bool {
	switch e.Limit {
	case LimitConnectionsPerInstance, LimitConnectionsPerUser:
		return target == ErrTooManyConnections
	case LimitPublishPerConnection, LimitPublishPerUser:
		return target == ErrRateLimited
	case LimitSubscriptionsPerConnection:
		return target == ErrTooManySubscriptions
	case LimitChannelsPerRequest:
		return target == ErrTooManyChannels
	}
	return false
}

// RetryAfterHeader is the value of an HTTP Retry-After header for e: whole
// seconds, rounded up so the client never retries early, and at least 1.
// It is "" when e has no retry delay.
func (e *Error) RetryAfterHeader() string {
	if e.RetryAfter <= 0 {
		return ""
	}
	s := (e.RetryAfter + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(s), 10)
}
