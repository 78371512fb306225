package services

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/internal/auth"
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
