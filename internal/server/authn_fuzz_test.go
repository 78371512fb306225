package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/gateway"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/services"
)

// Fixed credentials and clock, so that a failing input reproduces.
var (
	fuzzSecret = []byte("gateway-fuzz-secret-gateway-fuzz-secret")
	fuzzKey    = auth.KeyPrefix + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	fuzzNow    = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
)

func fuzzToken(tb testing.TB, secret []byte, exp, nbf time.Time) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "alice", "iat": fuzzNow.Add(-time.Hour).Unix(), "nbf": nbf.Unix(), "exp": exp.Unix(),
	}).SignedString(secret)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// bearerToken is the token inside an Authorization value or bare credential.
func bearerToken(cred string) string {
	tok := strings.TrimSpace(cred)
	if scheme, rest, ok := strings.Cut(tok, " "); ok && strings.EqualFold(scheme, "Bearer") {
		tok = strings.TrimLeft(rest, " ")
	}
	return tok
}

// FuzzAuthenticate drives the real authenticate middleware, with API keys
// and HS256 tokens enabled, with any Authorization header, query string
// (access_token) and Cookie header (herald_token), over GET and POST. The
// handler behind it must be reached only as anonymous when no credential
// was presented, or with the identity of a valid credential; any other
// credential gets 401 in the one JSON error shape, whose message never
// contains the credential. Nothing panics.
func FuzzAuthenticate(f *testing.F) {
	keys, err := auth.NewKeys([]auth.KeyConfig{{Name: "svc", Hash: auth.HashKey(fuzzKey), Scopes: []auth.Scope{auth.ScopePublish}}})
	if err != nil {
		f.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.JWTConfig{HS256Secret: fuzzSecret, Now: func() time.Time { return fuzzNow }})
	if err != nil {
		f.Fatal(err)
	}
	a := auth.NewAuthenticator(keys, v)
	srv := &Server{cfg: Config{Services: services.Config{Auth: a}}, gw: gateway.New(nil, gateway.Config{})}
	token := fuzzToken(f, fuzzSecret, fuzzNow.Add(time.Hour), fuzzNow.Add(-time.Hour))
	expired := fuzzToken(f, fuzzSecret, fuzzNow.Add(-time.Minute), fuzzNow.Add(-time.Hour))
	early := fuzzToken(f, fuzzSecret, fuzzNow.Add(2*time.Hour), fuzzNow.Add(time.Hour))
	forged := fuzzToken(f, []byte("another-secret-another-secret-another-secret"), fuzzNow.Add(time.Hour), fuzzNow.Add(-time.Hour))

	valid := map[string]string{fuzzKey: "svc", token: "alice"}
	canonical := map[string]bool{fuzzKey: true, token: true, "Bearer " + fuzzKey: true, "Bearer " + token: true}
	// The messages a refusal may carry: one fixed text per kind of failure.
	known := map[string]bool{}
	for _, c := range []string{"", "Basic x", expired, early, forged, auth.KeyPrefix + strings.Repeat("A", 43)} {
		if _, err := a.Authenticate(c); err != nil {
			known[err.Error()] = true
		}
	}
	inKnown := func(s string) bool {
		for m := range known {
			if strings.Contains(m, s) {
				return true
			}
		}
		return false
	}

	for _, s := range []struct {
		authz, query, cookie string
		get                  bool
	}{
		{"", "", "", true},
		{"", "channel=a", "", false},
		{"Bearer " + token, "", "", false},
		{"bearer   " + token + " ", "", "", true},
		{"Bearer " + fuzzKey, "access_token=" + token, "", true},
		{"", "access_token=" + token + "&channel=a", "", true},
		{"", "access_token=" + token, "", false},
		{"", "access_token=" + url.QueryEscape("Bearer "+fuzzKey), "", true},
		{"", "access_token=&channel=a", "herald_token=" + token, true},
		{"", "access_token=%zz&access_token=" + token, "", true},
		{"", "", "herald_token=" + fuzzKey, false},
		{"", "", "a=1; herald_token=\"" + token + "\"; b=2", true},
		{"", "", "herald_token=" + forged, true},
		{"Bearer " + expired, "", "", true},
		{"Bearer " + early, "", "", true},
		{"Bearer " + forged, "", "", true},
		{"Bearer " + token[:len(token)-3] + "AAA", "", "", true},
		{"Basic dXNlcjpwYXNz", "", "", true},
		{"Bearer", "", "", true},
		{" ", "", "", true},
		{"Bearer " + token + " " + token, "", "", true},
		{fuzzKey[:20], "", "", true},
		{"Bearer " + strings.Repeat("a", auth.MaxCredentialLen), "", "", true},
		{"", "access_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", "", true},
		{"}", "0", "0", true}, // JSON syntax is not the credential
	} {
		f.Add(s.authz, s.query, s.cookie, s.get)
	}
	f.Fuzz(func(t *testing.T, authz, rawQuery, cookie string, get bool) {
		method := http.MethodPost
		if get {
			method = http.MethodGet
		}
		r := httptest.NewRequest(method, "/v1/channels", nil)
		r.URL.RawQuery = rawQuery
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}

		// The credential presented, by the documented precedence:
		// header, then access_token (GET only), then the cookie.
		cred, fromQuery := authz, false
		if q, _ := url.ParseQuery(rawQuery); cred == "" && get && q.Has(tokenParam) {
			cred, fromQuery = q.Get(tokenParam), true
		}
		if cred == "" {
			if c, err := (&http.Request{Header: http.Header{"Cookie": {cookie}}}).Cookie(tokenCookie); err == nil {
				cred = c.Value
			}
		}

		var (
			reached      bool
			id           auth.Identity
			hasID        bool
			handlerQuery string
		)
		h := srv.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reached = true
			id, hasID = auth.FromContext(r.Context())
			handlerQuery = r.URL.RawQuery
			w.WriteHeader(http.StatusNoContent)
		}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)

		if reached {
			switch {
			case !hasID:
				t.Fatal("the handler was reached without an identity in the context")
			case cred == "" && id.Kind() != auth.Anonymous:
				t.Fatalf("no credential, yet the handler saw %v %q", id.Kind(), id.Name())
			case cred != "" && (id.Kind() == auth.Anonymous || valid[bearerToken(cred)] != id.Name()):
				t.Fatalf("credential %q reached the handler as %v %q", cred, id.Kind(), id.Name())
			}
			if q, _ := url.ParseQuery(handlerQuery); fromQuery && q.Has(tokenParam) {
				t.Fatalf("the handler saw the access_token parameter: %q", handlerQuery)
			}
			return
		}
		if canonical[cred] {
			t.Fatalf("valid credential %q was refused: %d %s", cred, rec.Code, rec.Body)
		}
		if cred == "" {
			t.Fatalf("a request without a credential was refused: %d %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("bad credential %q: status %d, want 401", cred, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q, want application/json", ct)
		}
		body := rec.Body.String()
		var e struct {
			Code    *string `json:"code"`
			Message *string `json:"message"`
		}
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || e.Code == nil || e.Message == nil || dec.More() {
			t.Fatalf("body %q is not {\"code\",\"message\"}: %v", body, err)
		}
		if *e.Code != "unauthenticated" || !known[*e.Message] {
			t.Fatalf("body %q: want code unauthenticated and one of the fixed messages", body)
		}
		// The body is exactly that JSON object: nothing else rides along.
		var want strings.Builder
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{*e.Code, *e.Message}); err != nil || body != want.String() {
			t.Fatalf("body %q, want %q", body, want.String())
		}
		for _, secret := range []string{cred, bearerToken(cred)} {
			if secret != "" && !inKnown(secret) && strings.Contains(*e.Message, secret) {
				t.Fatalf("the response shows the credential %q: %s", secret, body)
			}
		}
	})
}
