package server

import (
	"net"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/gateway"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/services"
)

// Where credentials may come from besides the Authorization header, for
// clients that cannot set headers (EventSource, the WebSocket constructor).
// The gateway documents them (OpenAPI, AsyncAPI): one definition.
const (
	tokenParam  = gateway.TokenParam
	tokenCookie = gateway.TokenCookie
)

// authenticate is the one authentication of every transport (gRPC,
// Connect, gRPC-Web, REST, SSE, WebSocket): it puts the caller's identity
// in the request context, where the services authorize each action. A
// request without a credential is anonymous (and may do nothing that needs
// one); a credential that does not verify is refused here with
// unauthenticated, written in the caller's protocol (gateway.WriteError:
// an RPC error for RPC clients, 401 and the JSON error shape otherwise).
// Health checks and the embedded files stay public.
func (s *Server) authenticate(next http.Handler) http.Handler {
	authn := s.cfg.Services.Auth
	if authn == nil {
		// A client configured with a token sends it whether or not this
		// server checks it: drop it so that every transport accepts the
		// request alike.
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				_, r = takeTokenParam(r)
			}
			next.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if public(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		cred := r.Header.Get("Authorization")
		if cred == "" && r.Method == http.MethodGet {
			cred, r = takeTokenParam(r)
		}
		if cred == "" {
			if c, err := r.Cookie(tokenCookie); err == nil {
				cred = c.Value
			}
		}
		var id auth.Identity // anonymous
		if cred != "" {
			var err error
			if id, err = authn.Authenticate(cred); err != nil {
				s.cfg.Metrics.AuthFailure(authFailureKind(cred, err))
				s.gw.WriteError(w, r, connect.NewError(connect.CodeUnauthenticated, err))
				return
			}
		}
		ctx := auth.NewContext(r.Context(), id)
		if cred == "" {
			// Anonymous publishers (where a namespace allows them) are
			// rate limited by address.
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			ctx = services.WithPeer(ctx, host)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// takeTokenParam returns the access_token query parameter and the request
// without it: the handlers refuse unknown parameters, and the token must
// not travel further (logs, error messages).
func takeTokenParam(r *http.Request) (string, *http.Request) {
	raw := r.URL.RawQuery
	if !strings.Contains(raw, tokenParam) && !strings.Contains(raw, "%") || !r.URL.Query().Has(tokenParam) {
		return "", r
	}
	q := r.URL.Query()
	cred := q.Get(tokenParam)
	q.Del(tokenParam)
	r = r.Clone(r.Context())
	r.URL.RawQuery = q.Encode()
	return cred, r
}

// public paths need no credential: load balancer health checks and the
// embedded client and demo pages (which then authenticate their calls).
func public(path string) bool {
	return path == "/" || path == "/healthz" || path == "/livez" || path == "/readyz" || path == "/herald.js" || strings.HasPrefix(path, "/demo/") ||
		strings.HasPrefix(path, "/grpc.health.v1.Health/")
}
