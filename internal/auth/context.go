package auth

import "context"

type ctxKey struct{}

// NewContext returns ctx carrying the caller's identity. The server puts
// one in every request's context when authentication is on; without one,
// authentication is off and every action is allowed.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the caller's identity, and false when the server does
// not authenticate.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
