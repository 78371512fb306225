package auth

import (
	"context"
	"strings"
)

// MaxCredentialLen bounds the credentials Authenticate will parse, so an
// oversized header costs nothing to refuse.
const MaxCredentialLen = 8 << 10

// Authenticator turns the credential a transport received into an Identity.
// It is safe for concurrent use.
type Authenticator struct {
	keys *Keys
	jwt  *Verifier
}

// NewAuthenticator returns an Authenticator accepting API keys checked by
// keys and JWTs checked by jwt. Either may be nil to refuse that kind.
func NewAuthenticator(keys *Keys, jwt *Verifier) *Authenticator {
	return &Authenticator{keys: keys, jwt: jwt}
}

// Run keeps the Authenticator's keys current until ctx ends (see
// JWKS.Run), then returns nil. It returns nil at once when there is
// nothing to reload: no JWKS, or a nil Authenticator, so a server may
// always call it.
func (a *Authenticator) Run(ctx context.Context) error {
	if a == nil || a.jwt == nil || a.jwt.cfg.JWKS == nil {
		return nil
	}
	return a.jwt.cfg.JWKS.Run(ctx)
}

// Authenticate accepts the credential as the transport received it: the
// value of an Authorization header ("Bearer <token>", scheme
// case-insensitive), or a bare token from a query parameter or cookie. The
// token is a JWT or an API key (KeyPrefix…).
//
// On failure it returns the zero (anonymous) Identity and an *Error wrapping
// one of the Err* sentinels; for an empty credential that is
// ErrMissingCredential, which callers may treat as "anonymous" where a
// namespace allows it.
func (a *Authenticator) Authenticate(credential string) (Identity, error) {
	if len(credential) > MaxCredentialLen {
		return Identity{}, newError(ErrMalformedCredential, "credential too long")
	}
	token := strings.TrimSpace(credential)
	if token == "" || strings.EqualFold(token, "Bearer") {
		return Identity{}, newError(ErrMissingCredential, "no credential")
	}
	if scheme, rest, ok := strings.Cut(token, " "); ok {
		if !strings.EqualFold(scheme, "Bearer") {
			return Identity{}, newError(ErrMalformedCredential, "authorization scheme is not Bearer")
		}
		token = strings.TrimLeft(rest, " ")
		if token == "" {
			return Identity{}, newError(ErrMissingCredential, "empty bearer token")
		}
	}
	if strings.HasPrefix(token, KeyPrefix) {
		if a.keys == nil {
			return Identity{}, newError(ErrInvalidCredential, "API keys are not enabled")
		}
		return a.keys.Verify(token)
	}
	if strings.Count(token, ".") != 2 {
		return Identity{}, newError(ErrMalformedCredential, "neither an API key nor a compact JWT")
	}
	if a.jwt == nil {
		return Identity{}, newError(ErrInvalidCredential, "tokens are not enabled")
	}
	return a.jwt.Verify(token)
}
