package auth_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

// pipeListener is an in-memory network for synctest bubbles: its
// connections are net.Pipe, on which a waiting goroutine is durably
// blocked, so fake time advances while an HTTP server waits for requests.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }

func (l *pipeListener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// jwksServer serves a JWKS document that tests replace, and counts the
// requests it gets.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64

	mu     sync.Mutex
	status int
	body   []byte
	rotate [][]byte // if set, request n gets rotate[n%len(rotate)] instead of body
}

func (s *jwksServer) serve(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	n := s.hits.Add(1)
	s.mu.Lock()
	status, body := s.status, s.body
	if len(s.rotate) > 0 {
		body = s.rotate[n%int64(len(s.rotate))]
	}
	s.mu.Unlock()
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// newJWKSServer starts a server on a loopback port.
func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{status: http.StatusOK, body: body}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

// newBubbleJWKSServer starts a server on a pipeListener, for synctest, and
// returns a client that reaches it. Call stop before the bubble ends.
func newBubbleJWKSServer(body []byte) (s *jwksServer, client *http.Client, stop func()) {
	s = &jwksServer{status: http.StatusOK, body: body}
	s.Server = httptest.NewUnstartedServer(s)
	_ = s.Listener.Close() // a real socket: replaced by the fake network
	ln := newPipeListener()
	s.Listener = ln
	s.Start()
	tr := &http.Transport{DialContext: ln.DialContext}
	return s, &http.Client{Transport: tr}, func() {
		tr.CloseIdleConnections()
		s.Close()
	}
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running starts a.Run and returns a function that stops it and checks
// that it returned nil.
func running(t *testing.T, a *auth.Authenticator) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}
}

func verifies(v *auth.Verifier, token string) bool {
	_, err := v.Verify(token)
	return err == nil
}

func TestJWKSURLReload(t *testing.T) {
	t.Parallel()
	k := testKeys()
	tok1 := sign(t, jwt.SigningMethodRS256, k.rsa1, "k1", claims())
	tok2 := sign(t, jwt.SigningMethodRS256, k.rsa2, "k2", claims())
	tok3 := sign(t, jwt.SigningMethodES256, k.ec1, "k3", claims())
	synctest.Test(t, func(t *testing.T) {
		srv, client, stopServer := newBubbleJWKSServer(jwks(t, rsaJWK("k1", &k.rsa1.PublicKey)))
		defer stopServer()
		var logs lockedBuffer
		// The URL's password and query must not reach logs or errors.
		url := strings.Replace(srv.URL, "http://", "http://user:url-password@", 1) + "/jwks?key=query-secret"
		set, err := auth.OpenJWKS(t.Context(), auth.JWKSConfig{
			URL: url, Client: client, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		hits := func(want int64) {
			t.Helper()
			if got := srv.hits.Load(); got != want {
				t.Fatalf("the JWKS server got %d requests, want %d", got, want)
			}
		}
		hits(1)
		v := newVerifier(t, auth.JWTConfig{JWKS: set})
		stop := running(t, auth.NewAuthenticator(nil, v))
		defer stop()
		synctest.Wait() // Run is waiting for its first tick
		if !verifies(v, tok1) {
			t.Fatal("a token signed by the served key does not verify")
		}
		if err := set.Run(t.Context()); err == nil {
			t.Error("a second Run of the same JWKS started")
		}

		// Rotation: the first token naming the new key is refused and asks
		// for a reload; once that is done (long before the 5m interval),
		// the new key verifies and the removed one does not.
		srv.serve(http.StatusOK, jwks(t, rsaJWK("k2", &k.rsa2.PublicKey)))
		if verifies(v, tok2) {
			t.Fatal("a token with an unknown kid verified before any reload")
		}
		synctest.Wait()
		hits(2)
		if !verifies(v, tok2) || verifies(v, tok1) {
			t.Fatal("after the unknown-kid reload: want k2 accepted and k1 refused")
		}

		// Unknown kids ask for at most one reload per 30s.
		srv.serve(http.StatusOK, jwks(t, ecJWK(t, "k3", &k.ec1.PublicKey)))
		for range 100 {
			if verifies(v, tok3) {
				t.Fatal("k3 verified without a reload")
			}
		}
		synctest.Wait()
		hits(2)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		hits(2) // the interval (5m) has not passed either
		if verifies(v, tok3) {
			t.Fatal("k3 verified without a reload")
		}
		synctest.Wait()
		hits(3)
		if !verifies(v, tok3) {
			t.Fatal("k3 does not verify after the second unknown-kid reload")
		}

		// Every Refresh (default 5m) it reloads; a failed reload keeps the
		// last good keys.
		oversize := append(bytes.Repeat([]byte(" "), 1<<20), jwks(t, rsaJWK("k1", &k.rsa1.PublicKey))...)
		bad := []struct {
			status int
			body   []byte
		}{
			{http.StatusInternalServerError, jwks(t, rsaJWK("k1", &k.rsa1.PublicKey))},
			{http.StatusOK, []byte("<html>garbage</html>")},
			{http.StatusOK, []byte(`{"keys":[]}`)}, // all keys gone
			{http.StatusOK, jwks(t, rsaJWK("", &k.rsa1.PublicKey))},
			{http.StatusOK, oversize},
		}
		for i, b := range bad {
			srv.serve(b.status, b.body)
			time.Sleep(auth.DefaultJWKSRefresh)
			synctest.Wait()
			hits(int64(4 + i))
			if !verifies(v, tok3) {
				t.Fatalf("bad response %d replaced the good keys", i)
			}
		}
		if n := strings.Count(logs.String(), "jwks reload failed; keeping the last good keys"); n != len(bad) {
			t.Errorf("%d warnings logged for %d failed reloads:\n%s", n, len(bad), logs.String())
		}
		srv.serve(http.StatusOK, jwks(t, rsaJWK("k1", &k.rsa1.PublicKey), ecJWK(t, "k3", &k.ec1.PublicKey)))
		time.Sleep(auth.DefaultJWKSRefresh)
		synctest.Wait()
		if !verifies(v, tok1) || !verifies(v, tok3) || verifies(v, tok2) {
			t.Fatal("the periodic reload did not install the good set")
		}
		if s := logs.String(); strings.Contains(s, "url-password") || strings.Contains(s, "query-secret") || strings.Contains(s, tok1) {
			t.Errorf("a secret was logged:\n%s", s)
		}
	})
}

// TestJWKSConcurrentVerify verifies from several goroutines while the set
// is swapped under them (run it with -race): a key present in every set
// always verifies, so no reader ever sees a partial or empty set.
func TestJWKSConcurrentVerify(t *testing.T) {
	t.Parallel()
	k := testKeys()
	tok1 := sign(t, jwt.SigningMethodRS256, k.rsa1, "k1", claims())
	tok2 := sign(t, jwt.SigningMethodES256, k.ec1, "k2", claims())
	synctest.Test(t, func(t *testing.T) {
		srv, client, stopServer := newBubbleJWKSServer(nil)
		defer stopServer()
		srv.mu.Lock()
		srv.rotate = [][]byte{
			jwks(t, rsaJWK("k1", &k.rsa1.PublicKey)),
			jwks(t, rsaJWK("k1", &k.rsa1.PublicKey), ecJWK(t, "k2", &k.ec1.PublicKey)),
		}
		srv.mu.Unlock()
		set, err := auth.OpenJWKS(t.Context(), auth.JWKSConfig{URL: srv.URL, Client: client, Refresh: time.Minute, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		v := newVerifier(t, auth.JWTConfig{JWKS: set})
		stop := running(t, auth.NewAuthenticator(nil, v))
		defer stop()
		var wg sync.WaitGroup
		var failures atomic.Int64
		for range 4 {
			wg.Go(func() {
				for range 600 { // ten fake minutes: ten reloads, plus unknown-kid ones
					if !verifies(v, tok1) {
						failures.Add(1)
					}
					verifies(v, tok2) // unknown half the time: asks for reloads
					time.Sleep(time.Second)
				}
			})
		}
		wg.Wait()
		if n := failures.Load(); n > 0 {
			t.Errorf("a key in every set failed to verify %d times during reloads", n)
		}
		if hits := srv.hits.Load(); hits < 10 {
			t.Errorf("only %d fetches: the set was hardly swapped", hits)
		}
	})
}

func TestJWKSFileReload(t *testing.T) {
	t.Parallel()
	k := testKeys()
	tok1 := sign(t, jwt.SigningMethodRS256, k.rsa1, "k1", claims())
	tok2 := sign(t, jwt.SigningMethodES256, k.ec1, "k2", claims())
	path, write := jwksFile(t, jwks(t, rsaJWK("k1", &k.rsa1.PublicKey)))
	synctest.Test(t, func(t *testing.T) {
		v, stop := fileJWKSVerifier(t, path)
		defer stop()
		if !verifies(v, tok1) {
			t.Fatal("a key from the file does not verify")
		}
		write(jwks(t, ecJWK(t, "k2", &k.ec1.PublicKey)))
		time.Sleep(time.Minute)
		synctest.Wait()
		if !verifies(v, tok2) || verifies(v, tok1) {
			t.Fatal("the rotated file was not picked up on the interval")
		}
		write([]byte(`{"keys": [`))
		time.Sleep(time.Minute)
		synctest.Wait()
		if !verifies(v, tok2) {
			t.Fatal("a broken file replaced the good keys")
		}
		// An unknown kid reloads the file too, without waiting a minute.
		write(jwks(t, rsaJWK("k1", &k.rsa1.PublicKey)))
		if verifies(v, tok1) {
			t.Fatal("k1 verified before a reload")
		}
		synctest.Wait()
		if !verifies(v, tok1) {
			t.Fatal("the unknown kid did not reload the file")
		}
	})
}

// realClaims are valid now, for verifiers on the real clock.
func realClaims() jwt.MapClaims {
	t := time.Now()
	return with(claims(), "iat", t.Add(-time.Minute).Unix(), "nbf", t.Add(-time.Minute).Unix(), "exp", t.Add(time.Hour).Unix())
}

func TestLoadConfigJWKS(t *testing.T) {
	t.Parallel()
	k := testKeys()
	srv := newJWKSServer(t, jwks(t, rsaJWK("k1", &k.rsa1.PublicKey)))
	failing := newJWKSServer(t, []byte("oops"))
	failing.serve(http.StatusServiceUnavailable, nil)
	redirect := httptest.NewServer(http.RedirectHandler("http://jwks.example.com/jwks", http.StatusFound))
	t.Cleanup(redirect.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	load := func(jwtJSON string) (*auth.Authenticator, error) {
		p := filepath.Join(dir, "auth.json")
		body := `{"jwt":{"issuer":"https://issuer.test","audience":"herald",` + jwtJSON + `}}`
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return auth.LoadConfig(t.Context(), p, slog.New(slog.DiscardHandler))
	}

	a, err := load(`"jwksURL":"` + srv.URL + `/jwks","jwksRefresh":"1m"`)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Authenticate("Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa1, "k1", realClaims())); err != nil || id.Name() != "alice" {
		t.Fatalf("token signed by the served key: %v, %v", id, err)
	}
	running(t, a)() // Run starts and stops with its context

	for _, tc := range []struct{ name, jwt, want string }{
		{"unreachable", `"jwksURL":"http://user:url-password@` + closed + `/jwks?key=query-secret"`, "jwt.jwksURL: fetch jwks http://" + closed + "/jwks: "},
		{"status", `"jwksURL":"` + failing.URL + `"`, "status 503"},
		{"plain http", `"jwksURL":"http://jwks.example.com/jwks"`, "must be https"},
		{"not a URL", `"jwksURL":"jwks.json"`, "jwt.jwksURL"},
		{"redirect to http", `"jwksURL":"` + redirect.URL + `"`, "redirect refused"},
		{"missing file", `"jwksFile":"` + filepath.Join(dir, "missing.json") + `"`, "jwt.jwksFile"},
		{"both", `"jwksFile":"x","jwksURL":"https://jwks.example.com"`, "not both"},
		{"refresh alone", `"hs256Secret":"0123456789abcdef0123456789abcdef","jwksRefresh":"1m"`, "jwt.jwksRefresh"},
		{"short refresh", `"jwksURL":"` + srv.URL + `","jwksRefresh":"1s"`, "jwt.jwksRefresh: shorter than 30s"},
		{"bad refresh", `"jwksURL":"` + srv.URL + `","jwksRefresh":"often"`, "jwt.jwksRefresh"},
	} {
		_, err := load(tc.jwt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: LoadConfig = %v, want an error containing %q", tc.name, err, tc.want)
			continue
		}
		if s := err.Error(); strings.Contains(s, "url-password") || strings.Contains(s, "query-secret") {
			t.Errorf("%s: the error shows a secret: %v", tc.name, err)
		}
	}
}

func TestOpenJWKSConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  auth.JWKSConfig
		want string
	}{
		{"neither", auth.JWKSConfig{}, "exactly one"},
		{"both", auth.JWKSConfig{URL: "https://a.example", File: "x"}, "exactly one"},
		{"ftp", auth.JWKSConfig{URL: "ftp://127.0.0.1/jwks"}, "must be https"},
		{"no host", auth.JWKSConfig{URL: "https:///jwks"}, "no host"},
		{"private address", auth.JWKSConfig{URL: "http://10.0.0.1/jwks"}, "must be https"},
		{"localhost lookalike", auth.JWKSConfig{URL: "http://localhost.example.com/jwks"}, "must be https"},
		{"negative refresh", auth.JWKSConfig{URL: "https://a.example", Refresh: -time.Second}, "refresh interval"},
	} {
		if _, err := auth.OpenJWKS(t.Context(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: OpenJWKS = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// http is allowed to loopback hosts: these fail to connect, not on the scheme.
	for _, u := range []string{"http://127.0.0.1:1/jwks", "http://[::1]:1/jwks", "http://LOCALHOST:1/jwks"} {
		_, err := auth.OpenJWKS(t.Context(), auth.JWKSConfig{URL: u})
		if err == nil || strings.Contains(err.Error(), "https") || !strings.Contains(err.Error(), "fetch jwks") {
			t.Errorf("%s: OpenJWKS = %v, want a fetch error", u, err)
		}
	}
}

// jwksFile writes body to a JWKS file and returns its path and a function
// that replaces its contents.
func jwksFile(t *testing.T, body []byte) (string, func([]byte)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	write := func(body []byte) {
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(body)
	return path, write
}

// fileJWKSVerifier is a Verifier over the JWKS file at path, reloaded every
// minute (of synctest time) until stop.
func fileJWKSVerifier(t *testing.T, path string) (*auth.Verifier, func()) {
	t.Helper()
	set, err := auth.OpenJWKS(t.Context(), auth.JWKSConfig{File: path, Refresh: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, auth.JWTConfig{JWKS: set})
	return v, running(t, auth.NewAuthenticator(nil, v))
}
