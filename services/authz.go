package services

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/limits"
)

// Actions a caller may be allowed on a channel.
type action struct {
	name    string
	allowed func(auth.Identity, string) bool
}

var (
	actPublish   = action{"publish to", auth.Identity.CanPublish}
	actSubscribe = action{"subscribe to", auth.Identity.CanSubscribe}
	actHistory   = action{"read the history of", auth.Identity.CanReadHistory}
)

// authorize checks that the caller may act on every channel. Without an
// identity in ctx the server does not authenticate and everything is
// allowed. An anonymous caller is told to authenticate (unauthenticated);
// an authenticated one that lacks the permission gets permission_denied.
func authorize(ctx context.Context, act action, channels ...string) error {
	id, on := auth.FromContext(ctx)
	if !on {
		return nil
	}
	for _, ch := range channels {
		if act.allowed(id, ch) {
			continue
		}
		if id.Kind() == auth.Anonymous {
			return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf(
				"to %s channel %q, authenticate: send Authorization: Bearer <token or API key> (EventSource: the access_token query parameter or the herald_token cookie)", act.name, ch))
		}
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"%s %q may not %s channel %q: its token or key does not allow it", id.Kind(), id.Name(), act.name, ch))
	}
	return nil
}

// authorizeAdmin checks the admin scope (channel management).
func authorizeAdmin(ctx context.Context, what string) error {
	id, on := auth.FromContext(ctx)
	if !on || id.IsAdmin() {
		return nil
	}
	if id.Kind() == auth.Anonymous {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("to %s, authenticate with an admin API key or token", what))
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s %q may not %s: it needs the admin scope", id.Kind(), id.Name(), what))
}

// AuthorizeSubscribe is the subscribe check for transports that reach the
// subscription core directly (SSE).
func AuthorizeSubscribe(ctx context.Context, channels []string) error {
	return authorize(ctx, actSubscribe, channels...)
}

// errTokenExpired is the cause of a stream context ended by its caller's
// credential expiring.
var errTokenExpired = errors.New("token expired")

// WithExpiry returns ctx ending when the caller's credential expires (and
// ctx unchanged when it has no expiry or authentication is off). Long-lived
// streams run under it, so that a token's end ends what it opened.
func WithExpiry(ctx context.Context) (context.Context, context.CancelFunc) {
	id, on := auth.FromContext(ctx)
	if !on || id.Expires().IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadlineCause(ctx, id.Expires(), errTokenExpired)
}

// TokenExpired reports whether ctx ended because the credential expired.
func TokenExpired(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errTokenExpired)
}

// ExpiredEnd is the Error a stream ends with when its token expired.
func ExpiredEnd(lastPosition int64) *heraldv1.Error {
	return &heraldv1.Error{
		Code:    connect.CodeUnauthenticated.String(),
		Message: fmt.Sprintf("token expired: reconnect with a fresh token and resume from position %d", lastPosition),
		End:     &heraldv1.StreamEnd{Reason: heraldv1.StreamEndReason_STREAM_END_REASON_TOKEN_EXPIRED, LastPosition: lastPosition},
	}
}

// expiredError is ExpiredEnd as an RPC error with its StreamEnd detail.
func expiredError(lastPosition int64) error {
	e := ExpiredEnd(lastPosition)
	cerr := connect.NewError(connect.CodeUnauthenticated, errors.New(e.Message))
	if d, err := connect.NewErrorDetail(e.End); err == nil {
		cerr.AddDetail(d)
	}
	return cerr
}

// WithUserPublishRate limits how fast each end user (a JWT identity) may
// publish, across all of their connections and transports. Services with
// API keys are not limited.
func (s *EventService) WithUserPublishRate(k *limits.Keyed) *EventService {
	s.userRates = k
	return s
}

// checkUserRate takes one publish from the caller's per-user bucket.
func (s *EventService) checkUserRate(ctx context.Context) error {
	if s.userRates == nil {
		return nil
	}
	id, on := auth.FromContext(ctx)
	if !on || id.Kind() != auth.User {
		return nil
	}
	if err := limits.CheckPublish(time.Now(), nil, s.userRates, id.Name(), 1); err != nil {
		return connect.NewError(connect.CodeResourceExhausted, err)
	}
	return nil
}
