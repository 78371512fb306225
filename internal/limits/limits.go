package limits

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Rate is a token-bucket rate: PerSecond events per second on average, with
// up to Burst events at once after a quiet period. A zero PerSecond means no
// limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Limits is the configuration of every limit in this package. Start from
// Defaults and override; a zero numeric field or zero Rate disables that
// limit (so a zero Limits{} limits nothing, which is why Defaults exists).
type Limits struct {
	// MaxConnectionsPerInstance bounds all open connections (gRPC/Connect
	// streams, WebSockets, SSE, long-polls) on one instance. Each costs
	// goroutines, read/write buffers and a subscriber queue, about
	// 50-100 KiB in the worst case, so 20,000 is 1-2 GiB: a size a 2-4 GiB
	// instance survives. It also sits below a raised nofile ulimit (65,536
	// is typical) so the process refuses politely before accept fails.
	// Raise it together with memory and ulimit.
	MaxConnectionsPerInstance int

	// MaxConnectionsPerUser bounds one user's connections on one instance:
	// the defence against one token holding the instance's connections.
	// A person with a few devices and a tab per page needs well under 20;
	// 50 leaves room for tab-happy users and is 0.25% of an instance.
	MaxConnectionsPerUser int

	// PublishPerConnection is the publish rate of one connection. 10/s
	// covers chat and presence at human speed (and 10 Hz cursor updates);
	// a burst of 20 absorbs a paste or a reconnect that flushes an outbox.
	PublishPerConnection Rate

	// PublishPerUser is the publish rate of one user over all connections
	// and transports. It is twice one connection's, not 50 times: opening
	// more connections must not multiply a user's rate.
	PublishPerUser Rate

	// MaxTrackedUsers caps the keys of the per-user publish buckets (see
	// Keyed). Each key costs about 150 bytes, so 100,000 is ~15 MiB. It is
	// five times MaxConnectionsPerInstance, so legitimate users reach it only
	// when the instance is full anyway.
	MaxTrackedUsers int

	// MaxSubscriptionsPerConnection bounds one connection's channels. Each
	// subscription costs a hub entry and fan-out work per event; 128 is
	// what Centrifugo ships as its client channel limit, generous for UIs.
	MaxSubscriptionsPerConnection int

	// MaxChannelsPerRequest bounds the channels one request names
	// (subscribe, history, publish to several). It is lower than the
	// subscription cap so that one request is cheap to validate and
	// authorize, and a client still fills its cap in four requests.
	MaxChannelsPerRequest int
}

// Defaults returns the recommended limits; the field docs say why.
func Defaults() Limits {
	return Limits{
		MaxConnectionsPerInstance:     20000,
		MaxConnectionsPerUser:         50,
		PublishPerConnection:          Rate{PerSecond: 10, Burst: 20},
		PublishPerUser:                Rate{PerSecond: 20, Burst: 40},
		MaxTrackedUsers:               100000,
		MaxSubscriptionsPerConnection: 128,
		MaxChannelsPerRequest:         32,
	}
}

// Validate reports every field that is out of range.
func (l Limits) Validate() error {
	var errs []error
	nonNeg := func(name string, v int) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s is %d; want 0 (no limit) or more", name, v))
		}
	}
	nonNeg("MaxConnectionsPerInstance", l.MaxConnectionsPerInstance)
	nonNeg("MaxConnectionsPerUser", l.MaxConnectionsPerUser)
	nonNeg("MaxSubscriptionsPerConnection", l.MaxSubscriptionsPerConnection)
	nonNeg("MaxChannelsPerRequest", l.MaxChannelsPerRequest)
	for _, r := range []struct {
		name string
		r    Rate
	}{{"PublishPerConnection", l.PublishPerConnection}, {"PublishPerUser", l.PublishPerUser}} {
		if err := r.r.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
		}
	}
	if l.PublishPerUser.PerSecond > 0 && l.MaxTrackedUsers <= 0 {
		errs = append(errs, fmt.Errorf("MaxTrackedUsers is %d; want more than 0 when PublishPerUser is set", l.MaxTrackedUsers))
	}
	return errors.Join(errs...)
}

func (r Rate) validate() error {
	switch {
	case math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0) || r.PerSecond < 0:
		return fmt.Errorf("PerSecond is %v; want 0 (no limit) or a positive finite number", r.PerSecond)
	case r.PerSecond > 0 && r.Burst < 1:
		return fmt.Errorf("Burst is %d; want 1 or more", r.Burst)
	}
	return nil
}

// NewConns returns a connection counter with l's connection limits.
func (l Limits) NewConns() *Conns {
	return NewConns(l.MaxConnectionsPerInstance, l.MaxConnectionsPerUser)
}

// NewConnectionBucket returns the publish bucket for one new connection.
func (l Limits) NewConnectionBucket() *Bucket { return NewBucket(l.PublishPerConnection) }

// NewUserBuckets returns the per-user publish buckets of one instance.
func (l Limits) NewUserBuckets() *Keyed { return NewKeyed(l.PublishPerUser, l.MaxTrackedUsers) }

// CheckSubscriptions refuses adding add subscriptions to a connection that
// has have, if that would exceed MaxSubscriptionsPerConnection. It is a pure
// function; the connection owns its count.
func (l Limits) CheckSubscriptions(have, add int) error {
	if m := l.MaxSubscriptionsPerConnection; m > 0 && add > 0 && have+add > m {
		return &Error{Limit: LimitSubscriptionsPerConnection, Max: m, Action: ActionUnsubscribe}
	}
	return nil
}

// CheckChannels refuses a request that names n channels if n exceeds
// MaxChannelsPerRequest.
func (l Limits) CheckChannels(n int) error {
	if m := l.MaxChannelsPerRequest; m > 0 && n > m {
		return &Error{Limit: LimitChannelsPerRequest, Max: m, Action: ActionSplitRequest}
	}
	return nil
}

// CheckPublish takes n events from the connection's bucket and then from the
// user's bucket in users (either may be nil). If the user's bucket refuses,
// the connection's tokens are given back, so a refused publish costs
// nothing. The error is an *Error naming the limit that refused.
func CheckPublish(now time.Time, conn *Bucket, users *Keyed, user string, n int) error {
	if conn != nil {
		if ok, wait := conn.Take(now, n); !ok {
			return rateError(LimitPublishPerConnection, conn.rate, wait)
		}
	}
	if users != nil {
		if ok, wait := users.Take(user, now, n); !ok {
			if conn != nil {
				conn.refund(n)
			}
			return rateError(LimitPublishPerUser, users.rate, wait)
		}
	}
	return nil
}

func rateError(l Limit, r Rate, wait time.Duration) error {
	if wait <= 0 {
		// Only a batch larger than the burst is refused with no wait:
		// waiting will never help.
		return &Error{Limit: l, Max: r.Burst, Action: ActionSplitRequest}
	}
	return &Error{Limit: l, Max: r.Burst, Action: ActionRetryLater, RetryAfter: wait}
}
