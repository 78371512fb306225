package services

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
)

// Actions a caller may be allowed on a channel.
type action struct {
	name string
	ns   namespace.Action
}

var (
	actPublish   = action{"publish to", namespace.Publish}
	actSubscribe = action{"subscribe to", namespace.Subscribe}
	actHistory   = action{"read the history of", namespace.History}
)

// authorize checks that the caller may act on every channel: the
// namespace policy of each channel (Config.Namespaces; nil gives every
// channel the default policy) applied to the caller's credential. Without
// an identity in ctx the server does not authenticate and only the
// namespaces' refuseUnknown applies. An anonymous caller is told to
// authenticate (unauthenticated); an authenticated one that lacks the
// permission gets permission_denied.
func (a *App) authorize(ctx context.Context, act action, channels ...string) error {
	for _, ch := range channels {
		if _, err := a.policy(ctx, act, ch); err != nil {
			return err
		}
	}
	return nil
}

// policy authorizes act on one channel and returns the channel's policy,
// so that a publish looks its namespace up once.
func (a *App) policy(ctx context.Context, act action, ch string) (*namespace.Policy, error) {
	pol, err := a.cfg.Namespaces.For(ch)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if id, on := auth.FromContext(ctx); on {
		if err := refusal(id, act.name, ch, pol, pol.Allow(id, act.ns, ch)); err != nil {
			return nil, err
		}
	}
	return pol, nil
}

// refusal turns a policy verdict into the error the caller sees.
func refusal(id auth.Identity, what, ch string, pol *namespace.Policy, v namespace.Verdict) error {
	switch v {
	case namespace.Allowed:
		return nil
	case namespace.NeedCredential:
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf(
			"to %s channel %q, authenticate: send Authorization: Bearer <token or API key> (EventSource: the access_token query parameter or the herald_token cookie)", what, ch))
	}
	why := "its token or key does not allow it"
	switch {
	case what == actEdit && pol.Edit == namespace.Author:
		why = fmt.Sprintf("in namespace %q only an event's author may change it", pol.Name)
	case what == actEdit && pol.Edit == namespace.ServicesOnly:
		why = fmt.Sprintf("in namespace %q only services (API keys) may change events", pol.Name)
	case what == actEdit && pol.Edit == namespace.None:
		why = fmt.Sprintf("events in namespace %q cannot be changed", pol.Name)
	case what == actPublish.name && pol.Publish == namespace.Services,
		what == actSubscribe.name && pol.Subscribe == namespace.Services,
		what == actHistory.name && pol.History == namespace.Services:
		why = fmt.Sprintf("in namespace %q only services (API keys) may", pol.Name)
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
		"%s %q may not %s channel %q: %s", id.Kind(), id.Name(), what, ch, why))
}

// actEdit names edits in refusals.
const actEdit = "update or delete events of"

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

type peerKey struct{}

// WithPeer records the client's network address (its host), which keys
// the publish rate of anonymous callers.
func WithPeer(ctx context.Context, host string) context.Context {
	return context.WithValue(ctx, peerKey{}, host)
}

// checkUserRate takes one publish from the caller's bucket: an end user's
// (across their connections and transports), or, for anonymous callers
// where a namespace lets them publish, their network address's.
func (a *App) checkUserRate(ctx context.Context) error {
	if a.userRates == nil {
		return nil
	}
	id, on := auth.FromContext(ctx)
	var key string
	switch {
	case !on:
		return nil
	case id.Kind() == auth.User:
		key = "user:" + id.Name()
	case id.Kind() == auth.Anonymous:
		host, _ := ctx.Value(peerKey{}).(string)
		key = "addr:" + host
	default:
		return nil // API keys: services publish in bulk
	}
	if err := limits.CheckPublish(time.Now(), nil, a.userRates, key, 1); err != nil {
		return connect.NewError(connect.CodeResourceExhausted, err)
	}
	return nil
}

// authorizeEdit checks that the caller may update or delete the event at
// pos of channel under its namespace's edit rule, and returns the policy.
// Only the author rule reads the event (to learn its author).
func (a *App) authorizeEdit(ctx context.Context, channel string, pos int64) (*namespace.Policy, error) {
	pol, err := a.cfg.Namespaces.For(channel)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	id, on := auth.FromContext(ctx)
	if !on {
		return pol, nil
	}
	// Editing needs the publish permission first; say so when it lacks.
	if v := pol.Allow(id, namespace.Publish, channel); v != namespace.Allowed {
		return nil, refusal(id, actPublish.name, channel, pol, v)
	}
	author := ""
	if pol.Edit == namespace.Author && !id.IsAdmin() && id.Kind() == auth.User {
		ev, err := a.log.Get(ctx, channel, pos)
		if err != nil {
			return nil, toConnect(a.logger, "get event", err)
		}
		author = ev.Author
	}
	if err := refusal(id, actEdit, channel, pol, pol.AllowEdit(id, channel, author, authorOf(ctx))); err != nil {
		return nil, err
	}
	return pol, nil
}
