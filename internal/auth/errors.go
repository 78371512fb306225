package auth

import "errors"

// Every error Authenticate returns is an *Error wrapping exactly one of these.
// All of them mean the request is unauthenticated (gRPC Unauthenticated,
// HTTP 401); ErrExpired lets a long-lived stream say "refresh your token".
var (
	ErrMissingCredential   = errors.New("missing credential")
	ErrMalformedCredential = errors.New("malformed credential")
	ErrExpired             = errors.New("credential expired")
	ErrNotYetValid         = errors.New("credential not yet valid")
	ErrInvalidCredential   = errors.New("invalid credential")
)

// clientMessages tell the client what to do. They never contain the
// credential or any part of it.
var clientMessages = map[error]string{
	ErrMissingCredential:   "authentication required: send an Authorization: Bearer header with a token or API key (EventSource clients: the access_token query parameter or cookie)",
	ErrMalformedCredential: "malformed credential: send \"Bearer <token>\" where the token is a JWT or an hk_ API key",
	ErrExpired:             "token expired: obtain a new token from your issuer and reconnect or refresh",
	ErrNotYetValid:         "token not yet valid: check the issuing server's clock, or retry later",
	ErrInvalidCredential:   "invalid credential: it was not accepted by this server; obtain a new token or API key",
}

// Error is an authentication failure. Error() is safe to send to clients;
// Detail is for server logs and also never contains the credential.
type Error struct {
	kind   error
	detail string
	client string // replaces clientMessages[kind] when set
}

func newError(kind error, detail string) *Error { return &Error{kind: kind, detail: detail} }

// Error returns a message for the client saying what to do.
func (e *Error) Error() string {
	if e.client != "" {
		return e.client
	}
	return clientMessages[e.kind]
}

// Unwrap returns the sentinel (ErrExpired, ...) this error is.
func (e *Error) Unwrap() error { return e.kind }

// Detail returns the reason for server logs, e.g. "unknown key id \"k9\"".
func (e *Error) Detail() string { return e.detail }
