package services

import (
	"context"

	"github.com/heraldrt/herald/internal/auth"
)

// authorOf returns the author the log records for what the caller writes:
// "user:<sub>" for a JWT user, "key:<name>" for an API key, and "" when
// the server does not authenticate or the caller is anonymous. It is
// derived from the credential only: clients cannot choose it.
func authorOf(ctx context.Context) string {
	id, on := auth.FromContext(ctx)
	if !on {
		return ""
	}
	switch id.Kind() {
	case auth.User:
		return "user:" + id.Name()
	case auth.APIKey:
		return "key:" + id.Name()
	}
	return ""
}
