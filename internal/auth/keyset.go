package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// DefaultJWKSRefresh is how often JWKS.Run reloads a key set whose
	// JWKSConfig.Refresh is zero.
	DefaultJWKSRefresh = 5 * time.Minute
	// minJWKSRefresh keeps a configured interval from hammering the
	// identity provider.
	minJWKSRefresh = 30 * time.Second
	// unknownKIDRefreshGap is how often tokens naming an unknown "kid" may
	// ask for a reload, so that forged kids cannot make Herald hammer the
	// identity provider.
	unknownKIDRefreshGap = 30 * time.Second
	// jwksFetchTimeout bounds each fetch of a JWKS URL, whatever the client.
	jwksFetchTimeout = 10 * time.Second
	maxJWKSRedirects = 5
)

// JWKSConfig says where a key set comes from. Set exactly one of URL and
// File.
type JWKSConfig struct {
	// URL is fetched with GET. It must be https, except that http is
	// allowed to a loopback host (localhost, 127.0.0.0/8, ::1) for tests
	// and development. Redirects must satisfy the same rule.
	URL string
	// File is read from disk.
	File string
	// Refresh is how often Run reloads the set. Default DefaultJWKSRefresh;
	// at least 30s.
	Refresh time.Duration
	// Client fetches URL. Default: a client with a 10s timeout. Every fetch
	// is bounded by 10s and maxJWKS bytes whatever the client.
	Client *http.Client
	// Logger receives a warning for each failed reload and a note for each
	// new key set. Default slog.Default().
	Logger *slog.Logger
}

// JWKS is a JSON Web Key Set (see ParseJWKS) that stays current: OpenJWKS
// loads it, and Run reloads it every Refresh and, at most once per 30s,
// soon after a Verifier meets a token whose "kid" it does not know (the
// identity provider may have rotated its keys). A reload that fails
// (unreachable, a status other than 200, too large, not a key set, no
// RS256 or ES256 key) keeps the last good keys and logs a warning; a set
// whose keys were all removed is such a failure too, so a broken provider
// cannot lock every user out.
//
// A JWKS is safe for concurrent use. Lookups read the current set through
// an atomic pointer and never wait for a reload; a token naming a key the
// provider has only just published is refused until the reload it asked
// for has finished, and verifies after that.
type JWKS struct {
	url    string // "" when the keys come from file
	file   string
	src    string // URL without credentials or query, or the file path: for logs and errors
	every  time.Duration
	client *http.Client
	log    *slog.Logger

	set     atomic.Pointer[keySet]
	ask     chan struct{} // capacity 1: a Verifier wants a reload now
	start   time.Time     // monotonic base of lastAsk
	lastAsk atomic.Int64  // time since start of the last granted ask
	running atomic.Bool

	body []byte // document behind set; written by OpenJWKS, then only by Run
}

// keySet is one loaded key set. It is never modified once stored.
type keySet struct {
	keys  []verifierKey
	byKID map[string]verifierKey
}

// OpenJWKS checks cfg and loads the key set once. It fails when the set
// cannot be loaded, so that a misconfigured URL or file stops the server
// from starting instead of refusing every token later. It starts no
// goroutines: call Run to keep the set current.
func OpenJWKS(ctx context.Context, cfg JWKSConfig) (*JWKS, error) {
	s := &JWKS{
		url:   cfg.URL,
		file:  cfg.File,
		every: cfg.Refresh,
		log:   cfg.Logger,
		ask:   make(chan struct{}, 1),
		start: time.Now(),
	}
	s.lastAsk.Store(-int64(unknownKIDRefreshGap))
	switch {
	case (cfg.URL == "") == (cfg.File == ""):
		return nil, errors.New("jwks: set exactly one of a URL and a file")
	case cfg.URL != "":
		u, err := checkJWKSURL(cfg.URL)
		if err != nil {
			return nil, err
		}
		s.src = redactURL(u)
		c := http.Client{Timeout: jwksFetchTimeout}
		if cfg.Client != nil {
			c = *cfg.Client
		}
		c.CheckRedirect = checkJWKSRedirect
		s.client = &c
	default:
		s.src = cfg.File
	}
	if s.every == 0 {
		s.every = DefaultJWKSRefresh
	}
	if s.every < minJWKSRefresh {
		return nil, fmt.Errorf("jwks: refresh interval %v is shorter than %v", s.every, minJWKSRefresh)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	body, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	set, err := newKeySet(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.src, err)
	}
	s.set.Store(set)
	s.body = body
	s.log.Info("jwks loaded", "source", s.src, "keys", len(set.keys))
	return s, nil
}

// Run reloads the key set every Refresh, and when a Verifier asks for it,
// until ctx ends; then it returns nil. Failed reloads are logged, not
// returned. Only one Run may be active at a time; a second one returns an
// error at once.
func (s *JWKS) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("jwks: Run is already running")
	}
	defer s.running.Store(false)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.ask:
		}
		s.reload(ctx)
	}
}

// reload replaces the key set by the current document if that document is
// new and good.
func (s *JWKS) reload(ctx context.Context) {
	body, err := s.read(ctx)
	if err == nil && bytes.Equal(body, s.body) {
		return
	}
	var set *keySet
	if err == nil {
		if set, err = newKeySet(body); err != nil {
			err = fmt.Errorf("%s: %w", s.src, err)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("jwks reload failed; keeping the last good keys", "source", s.src, "err", err)
		}
		return
	}
	s.set.Store(set)
	s.body = body
	s.log.Info("jwks reloaded", "source", s.src, "keys", len(set.keys))
}

// all returns the set's keys; none for a nil set.
func (ks *keySet) all() []verifierKey {
	if ks == nil {
		return nil
	}
	return ks.keys
}

// current returns the key set in use.
func (s *JWKS) current() *keySet { return s.set.Load() }

// requestReload asks Run for a reload, unless one was asked for within
// unknownKIDRefreshGap. It never blocks.
func (s *JWKS) requestReload() {
	now := int64(time.Since(s.start))
	last := s.lastAsk.Load()
	if now-last < int64(unknownKIDRefreshGap) || !s.lastAsk.CompareAndSwap(last, now) {
		return
	}
	select {
	case s.ask <- struct{}{}:
	default:
	}
}

// read returns the document, at most maxJWKS bytes of it.
func (s *JWKS) read(ctx context.Context) ([]byte, error) {
	if s.file != "" {
		f, err := os.Open(s.file)
		if err != nil {
			return nil, fmt.Errorf("read jwks: %w", err)
		}
		defer f.Close()
		body, err := io.ReadAll(io.LimitReader(f, maxJWKS+1))
		if err != nil {
			return nil, fmt.Errorf("read jwks: %w", err)
		}
		if len(body) > maxJWKS {
			return nil, fmt.Errorf("read jwks %s: larger than %d bytes", s.src, maxJWKS)
		}
		return body, nil
	}
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks %s: %w", s.src, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		// *url.Error repeats the URL, query included: leave it out.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("fetch jwks %s: %w", s.src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks %s: status %d", s.src, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil {
		return nil, fmt.Errorf("fetch jwks %s: %w", s.src, err)
	}
	if len(body) > maxJWKS {
		return nil, fmt.Errorf("fetch jwks %s: larger than %d bytes", s.src, maxJWKS)
	}
	return body, nil
}

func newKeySet(body []byte) (*keySet, error) {
	keys, err := ParseJWKS(body)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no RS256 or ES256 signing key")
	}
	set := &keySet{byKID: make(map[string]verifierKey, len(keys))}
	for _, k := range keys {
		alg, err := k.alg()
		if err != nil { // ParseJWKS has checked; kept for safety
			return nil, err
		}
		vk := verifierKey{id: k.ID, alg: alg, key: k.Key}
		set.keys = append(set.keys, vk)
		set.byKID[k.ID] = vk
	}
	return set, nil
}

// checkJWKSURL accepts https URLs, and http URLs to loopback hosts.
func checkJWKSURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("jwks URL: not a valid URL")
	}
	if u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("jwks URL %s: no host", redactURL(u))
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("jwks URL %s: must be https (http only to a loopback host)", redactURL(u))
	}
	return u, nil
}

func checkJWKSRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxJWKSRedirects {
		return fmt.Errorf("stopped after %d redirects", maxJWKSRedirects)
	}
	if _, err := checkJWKSURL(req.URL.String()); err != nil {
		return fmt.Errorf("redirect refused: %w", err)
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redactURL drops what may hold a secret (user info, query, fragment).
func redactURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
