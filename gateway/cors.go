package gateway

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"

	"connectrpc.com/connect"
)

// originMatcher decides which browser origins may call cross-origin.
type originMatcher struct {
	any      bool
	patterns []string // lowercased scheme://host[:port], host may hold '*'
}

func newOriginMatcher(allowed []string) originMatcher {
	var m originMatcher
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimRight(strings.TrimSpace(a), "/"))
		switch a {
		case "":
		case "*":
			m.any = true
		default:
			m.patterns = append(m.patterns, a)
		}
	}
	return m
}

// sameOrigin reports whether origin names the host the request was sent
// to (any scheme: TLS may end at a proxy).
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// allowed reports whether a cross-origin request from origin may proceed.
func (m originMatcher) allowed(origin string) bool {
	return m.any || m.listed(origin)
}

// listed reports whether origin matches an entry other than "*".
func (m originMatcher) listed(origin string) bool {
	origin = strings.ToLower(origin)
	for _, p := range m.patterns {
		if p == origin {
			return true
		}
		if strings.Contains(p, "*") {
			if ok, err := path.Match(p, origin); err == nil && ok {
				return true
			}
		}
	}
	return false
}

// Headers a browser may send and read cross-origin: the REST and SSE ones
// plus what Connect and gRPC-Web clients use.
const (
	corsAllowMethods  = "GET, POST, PATCH, DELETE, OPTIONS"
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Connect-Protocol-Version, Connect-Timeout-Ms, Connect-Accept-Encoding, Connect-Content-Encoding, Grpc-Timeout, X-Grpc-Web, X-User-Agent"
	corsExposeHeaders = "Content-Type, Location, Allow, Retry-After, Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Connect-Content-Encoding"
	corsMaxAge        = "7200"
)

// CORS wraps next (the whole server) with the origin policy. Requests
// without an Origin header (servers, curl) and same-origin requests pass
// untouched. A cross-origin request from an allowed origin gets CORS
// headers (and preflights are answered here); one from any other origin is
// refused with 403 before it reaches a handler, so a page elsewhere cannot
// publish, open a WebSocket or read a stream through a user's browser.
func (g *Gateway) CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			writeError(w, connect.NewError(connect.CodePermissionDenied,
				errors.New("host "+r.Host+" is not served here: add it to --allowed-hosts")))
			return
		}
		origin := r.Header.Get("Origin")
		if origin == "" || sameOrigin(origin, r) {
			next.ServeHTTP(w, r)
			return
		}
		if !g.origins.allowed(origin) {
			writeError(w, connect.NewError(connect.CodePermissionDenied,
				errors.New("origin "+origin+" is not allowed: add it to --allowed-origins")))
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		if g.origins.listed(origin) {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		} else {
			// Allowed only by "*": any page may call, but never with the
			// visitor's cookies.
			h.Set("Access-Control-Allow-Origin", "*")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	})
}

// hostAllowed checks the Host header against Config.AllowedHosts.
func (g *Gateway) hostAllowed(hostport string) bool {
	if len(g.cfg.AllowedHosts) == 0 {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	for _, a := range g.cfg.AllowedHosts {
		if strings.EqualFold(a, host) {
			return true
		}
	}
	return false
}
