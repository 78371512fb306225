package auth_test

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

// cacheStats is auth.CacheStats without the on flag, for comparisons.
type cacheStats struct {
	entries      int
	hits, misses uint64
}

func statsOf(t *testing.T, v *auth.Verifier) cacheStats {
	t.Helper()
	n, hits, misses, on := auth.CacheStats(v)
	if !on {
		t.Fatal("the cache is off")
	}
	return cacheStats{n, hits, misses}
}

// sameResult fails unless two Verify results are the same: equal
// identities, or errors of the same kind with the same message and detail.
func sameResult(t *testing.T, what string, id1 auth.Identity, err1 error, id2 auth.Identity, err2 error) {
	t.Helper()
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("%s: %v (%s) vs %v (%s)", what, err1, detail(err1), err2, detail(err2))
	}
	if err1 != nil && (err1.Error() != err2.Error() || detail(err1) != detail(err2) || errors.Unwrap(err1) != errors.Unwrap(err2)) {
		t.Fatalf("%s: errors differ: %v (%s) vs %v (%s)", what, err1, detail(err1), err2, detail(err2))
	}
	if !reflect.DeepEqual(id1, id2) {
		t.Fatalf("%s: identities differ:\n%+v\n%+v", what, id1, id2)
	}
}

// testClock is a JWTConfig.Now that tests set.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.set(t)
	return c
}

func (c *testClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }
func (c *testClock) now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }

func TestVerifyCacheHit(t *testing.T) {
	t.Parallel()
	k := testKeys()
	cfg := auth.JWTConfig{
		HS256Secret: secret,
		Keys:        []auth.PublicKey{mustPEMKey(t, "r1", &k.rsa1.PublicKey), mustPEMKey(t, "e1", &k.ec1.PublicKey)},
		Issuer:      "https://issuer.test",
		Audience:    "herald",
	}
	cached := newVerifier(t, cfg)
	cfg.CacheSize = -1
	fresh := newVerifier(t, cfg)
	if _, _, _, on := auth.CacheStats(fresh); on {
		t.Fatal("CacheSize -1: the cache is on")
	}
	if got := auth.CacheLimit(cached); got != auth.DefaultCacheSize {
		t.Fatalf("CacheSize 0: limit %d, want %d", got, auth.DefaultCacheSize)
	}
	tokens := []string{
		sign(t, jwt.SigningMethodHS256, secret, "", claims()),
		sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims()),
		sign(t, jwt.SigningMethodES256, k.ec1, "e1", claims()),
		sign(t, jwt.SigningMethodES256, k.ec1, "", with(claims(), "sub", "bob", "scopes", []string{"subscribe"})),
	}
	for i, tok := range tokens {
		want, err := fresh.Verify(tok)
		if err != nil {
			t.Fatalf("token %d: %v (%s)", i, err, detail(err))
		}
		first, err1 := cached.Verify(tok)
		before := statsOf(t, cached)
		second, err2 := cached.Verify(tok)
		after := statsOf(t, cached)
		if after.hits != before.hits+1 {
			t.Fatalf("token %d: the second Verify was not a hit: %+v then %+v", i, before, after)
		}
		sameResult(t, fmt.Sprintf("token %d first use vs uncached", i), first, err1, want, nil)
		sameResult(t, fmt.Sprintf("token %d hit vs uncached", i), second, err2, want, nil)
		// What a caller does with one identity does not reach the next.
		if ch := second.Channels(); len(ch) > 0 {
			ch[0] = "mallory:inbox"
		}
		third, err := cached.Verify(tok)
		sameResult(t, fmt.Sprintf("token %d hit after a caller changed Channels()", i), third, err, want, nil)
	}
	if s := statsOf(t, cached); s.entries != len(tokens) {
		t.Errorf("entries = %d, want %d", s.entries, len(tokens))
	}
}

// TestVerifyCacheTimeBoundaries checks that a cached token is accepted and
// refused at exactly the instants an uncached Verifier accepts and refuses
// it: around exp+leeway, nbf-leeway and iat-leeway, one nanosecond either
// side and on the boundary, with and without leeway.
func TestVerifyCacheTimeBoundaries(t *testing.T) {
	t.Parallel()
	exp, nbf, iat := now.Add(time.Hour), now.Add(-time.Minute), now.Add(-2*time.Minute)
	for _, leeway := range []time.Duration{0, 30 * time.Second} {
		for _, tc := range []struct {
			name     string
			c        jwt.MapClaims
			boundary time.Time // the first accepted or the first refused instant
		}{
			{"exp", with(claims(), "exp", exp.Unix()), exp.Add(leeway)},
			{"nbf", with(claims(), "nbf", nbf.Unix(), "iat", nil), nbf.Add(-leeway)},
			{"iat", with(claims(), "iat", iat.Unix(), "nbf", nil), iat.Add(-leeway)},
		} {
			t.Run(fmt.Sprintf("%s/leeway=%v", tc.name, leeway), func(t *testing.T) {
				t.Parallel()
				clk := newTestClock(now)
				cfg := auth.JWTConfig{HS256Secret: secret, Leeway: leeway, Now: clk.now}
				cached := newVerifier(t, cfg)
				cfg.CacheSize = -1
				fresh := newVerifier(t, cfg)
				tok := sign(t, jwt.SigningMethodHS256, secret, "", tc.c)
				for _, d := range []time.Duration{-time.Second, -time.Nanosecond, 0, time.Nanosecond, time.Second} {
					at := tc.boundary.Add(d)
					clk.set(now) // valid: (re)fill the cache
					if _, err := cached.Verify(tok); err != nil {
						t.Fatalf("at now: %v (%s)", err, detail(err))
					}
					clk.set(at)
					before := statsOf(t, cached)
					got, gotErr := cached.Verify(tok)
					after := statsOf(t, cached)
					want, wantErr := fresh.Verify(tok)
					what := fmt.Sprintf("boundary%+v", d)
					sameResult(t, what+": cached vs uncached", got, gotErr, want, wantErr)
					hit := after.hits > before.hits
					if hit != (wantErr == nil) {
						t.Errorf("%s: hit=%v, but the uncached result is %v", what, hit, wantErr)
					}
					if wantErr != nil && after.entries != 0 {
						t.Errorf("%s: the refused token stays cached", what)
					}
					t.Logf("%s (%v): %v", what, at.Format(time.RFC3339Nano), wantErr)
				}
			})
		}
	}
}

// TestVerifyCacheKeyRotation checks that a token cached under one JWKS key
// set is verified again once the set is reloaded: refused when its key is
// gone, and accepted (then cached again) when the new set still has it.
func TestVerifyCacheKeyRotation(t *testing.T) {
	t.Parallel()
	k := testKeys()
	tok1 := sign(t, jwt.SigningMethodRS256, k.rsa1, "k1", claims())
	tok1NoKID := sign(t, jwt.SigningMethodRS256, k.rsa1, "", with(claims(), "sub", "bob"))
	tok2 := sign(t, jwt.SigningMethodES256, k.ec1, "k2", claims())
	path, write := jwksFile(t, jwks(t, rsaJWK("k1", &k.rsa1.PublicKey)))
	synctest.Test(t, func(t *testing.T) {
		v, stop := fileJWKSVerifier(t, path)
		defer stop()
		rotate := func(body []byte) {
			write(body)
			time.Sleep(time.Minute)
			synctest.Wait()
		}
		hits := func() uint64 { return statsOf(t, v).hits }

		for _, tok := range []string{tok1, tok1NoKID, tok1, tok1NoKID} {
			if !verifies(v, tok) {
				t.Fatal("a key of set 1 does not verify")
			}
		}
		if h := hits(); h != 2 {
			t.Fatalf("%d hits under set 1, want 2", h)
		}

		// Set 2 keeps k1 and adds k2: the cached tokens are verified
		// again (misses), accepted, and hit after that.
		rotate(jwks(t, rsaJWK("k1", &k.rsa1.PublicKey), ecJWK(t, "k2", &k.ec1.PublicKey)))
		h := hits()
		if !verifies(v, tok1) || !verifies(v, tok1NoKID) {
			t.Fatal("k1 is in set 2 but its tokens do not verify")
		}
		if got := hits(); got != h {
			t.Fatalf("tokens cached under set 1 were served under set 2 (%d hits)", got-h)
		}
		if !verifies(v, tok1) || !verifies(v, tok1NoKID) || hits() != h+2 {
			t.Fatal("tokens verified under set 2 were not cached again")
		}

		// Set 3 drops k1: its cached tokens are refused, as new ones would be.
		rotate(jwks(t, ecJWK(t, "k2", &k.ec1.PublicKey)))
		h = hits()
		for _, tok := range []string{tok1, tok1NoKID} {
			if _, err := v.Verify(tok); !errors.Is(err, auth.ErrInvalidCredential) {
				t.Fatalf("a token of a removed key: Verify = %v, want invalid", err)
			}
		}
		if !verifies(v, tok2) {
			t.Fatal("k2 does not verify under set 3")
		}
		if s := statsOf(t, v); s.hits != h || s.entries != 1 {
			t.Fatalf("after the rotation: %+v, want %d hits and only tok2 cached", s, h)
		}
	})
}

func TestVerifyCacheBounds(t *testing.T) {
	t.Parallel()
	t.Run("entries", func(t *testing.T) {
		t.Parallel()
		const size = 4
		v := newVerifier(t, auth.JWTConfig{HS256Secret: secret, CacheSize: size})
		tokens := make([]string, 50)
		for i := range tokens {
			tokens[i] = sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", fmt.Sprintf("user-%d", i)))
		}
		for round := range 3 {
			for i, tok := range tokens {
				id, err := v.Verify(tok)
				if err != nil || id.Name() != fmt.Sprintf("user-%d", i) {
					t.Fatalf("round %d, token %d: %q, %v", round, i, id.Name(), err)
				}
				if s := statsOf(t, v); s.entries > size {
					t.Fatalf("round %d, token %d: %d entries, limit %d", round, i, s.entries, size)
				}
			}
		}
		if s := statsOf(t, v); s.entries != size {
			t.Errorf("%d entries after 150 tokens, want %d", s.entries, size)
		}
	})
	t.Run("token length", func(t *testing.T) {
		t.Parallel()
		v := newVerifier(t, auth.JWTConfig{HS256Secret: secret})
		// longest is the longest token of this shape the cache keeps,
		// tooLong the next longer one.
		pad := func(n int) string {
			return sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "pad", strings.Repeat("x", n)))
		}
		n := (auth.MaxCachedTokenLen-len(pad(0)))*3/4 - 8
		longest := pad(n)
		for {
			next := pad(n + 1)
			if len(next) > auth.MaxCachedTokenLen {
				break
			}
			n, longest = n+1, next
		}
		tooLong := pad(n + 1)
		twice := func(tok string) cacheStats {
			for range 2 {
				if _, err := v.Verify(tok); err != nil {
					t.Fatalf("%d-byte token: %v", len(tok), err)
				}
			}
			return statsOf(t, v)
		}
		if s := twice(longest); s.entries != 1 || s.hits != 1 {
			t.Errorf("%d-byte token twice: %+v, want it cached and hit", len(longest), s)
		}
		if s := twice(tooLong); s.entries != 1 || s.hits != 1 {
			t.Errorf("%d-byte token twice: %+v, want it neither cached nor hit", len(tooLong), s)
		}
		t.Logf("cached a %d-byte token, not a %d-byte one", len(longest), len(tooLong))
	})
	t.Run("entry bytes", func(t *testing.T) {
		t.Parallel()
		// A small token whose one pattern expands to 51 copies of a
		// 128-byte subject: about 13 KiB of patterns.
		v := newVerifier(t, auth.JWTConfig{HS256Secret: secret})
		sub := strings.Repeat("s", auth.MaxChannelLen)
		tok := sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", sub, "channels", nil,
			"subscribe", []string{strings.Repeat("{sub}", auth.MaxPatternLen/len("{sub}"))}))
		size, err := auth.EntryBytes(v, tok)
		if err != nil || size <= auth.MaxCacheEntryBytes {
			t.Fatalf("EntryBytes = %d, %v; want more than %d", size, err, auth.MaxCacheEntryBytes)
		}
		for range 2 {
			if id, err := v.Verify(tok); err != nil || id.Name() != sub {
				t.Fatalf("Verify: %q, %v (%s)", id.Name(), err, detail(err))
			}
		}
		if s := statsOf(t, v); s.entries != 0 || s.hits != 0 {
			t.Errorf("a %d-byte token whose entry is %d bytes was cached: %+v", len(tok), size, s)
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		v := newVerifier(t, auth.JWTConfig{HS256Secret: secret, CacheSize: -1})
		tok := sign(t, jwt.SigningMethodHS256, secret, "", claims())
		for range 3 {
			if _, err := v.Verify(tok); err != nil {
				t.Fatal(err)
			}
		}
		if n, _, _, on := auth.CacheStats(v); on || n != 0 {
			t.Errorf("CacheSize -1: on=%v, %d entries", on, n)
		}
	})
}

// TestVerifyCacheTampered caches valid tokens, then presents every variant
// of them with one byte changed (and some cut or extended): each must be
// refused without a cache hit, and none cached.
func TestVerifyCacheTampered(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newVerifier(t, auth.JWTConfig{
		HS256Secret: secret,
		Keys:        []auth.PublicKey{mustPEMKey(t, "r1", &k.rsa1.PublicKey), mustPEMKey(t, "e1", &k.ec1.PublicKey)},
	})
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	for _, tc := range []struct {
		name, tok    string
		replacements string // tried at every position
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, secret, "", claims()), alphabet},
		{"RS256", sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims()), "AQg_."},
		{"ES256", sign(t, jwt.SigningMethodES256, k.ec1, "e1", claims()), "AQg_."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := v.Verify(tc.tok)
			if err != nil {
				t.Fatal(err)
			}
			before := statsOf(t, v)
			variants := []string{tc.tok[:len(tc.tok)-1], tc.tok + "A", "A" + tc.tok, tc.tok + " "}
			for i := range len(tc.tok) {
				for _, r := range []byte(tc.replacements) {
					if tc.tok[i] != r {
						variants = append(variants, tc.tok[:i]+string(r)+tc.tok[i+1:])
					}
				}
			}
			for _, bad := range variants {
				if id, err := v.Verify(bad); err == nil {
					t.Fatalf("a changed token verified: %q (%s)", bad, id.Name())
				}
			}
			after := statsOf(t, v)
			if after.hits != before.hits || after.entries != before.entries {
				t.Fatalf("%d changed tokens: stats %+v then %+v, want no hits and no new entries", len(variants), before, after)
			}
			got, err := v.Verify(tc.tok)
			sameResult(t, "the original afterwards", got, err, want, nil)
			if statsOf(t, v).hits != after.hits+1 {
				t.Error("the original is no longer cached")
			}
			t.Logf("%d changed tokens refused", len(variants))
		})
	}
}

// TestVerifyCacheConcurrent verifies valid, changed and expired tokens
// from several goroutines through a cache smaller than the set of valid
// tokens, so that hits, misses, evictions and removals race (run with
// -race).
func TestVerifyCacheConcurrent(t *testing.T) {
	t.Parallel()
	const size = 8
	v := newVerifier(t, auth.JWTConfig{HS256Secret: secret, CacheSize: size, Leeway: time.Second})
	type token struct {
		tok, sub string // sub "": refused
	}
	var tokens []token
	for i := range 3 * size {
		sub := fmt.Sprintf("user-%d", i)
		tok := sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", sub))
		tokens = append(tokens, token{tok, sub}, token{tamper(t, tok), ""})
	}
	tokens = append(tokens, token{sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "exp", now.Add(-time.Second).Unix())), ""})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 400 {
				tc := tokens[(g*7+i)%len(tokens)]
				id, err := v.Verify(tc.tok)
				switch {
				case tc.sub == "" && err == nil:
					t.Errorf("a bad token verified as %q", id.Name())
					return
				case tc.sub != "" && (err != nil || id.Name() != tc.sub || !id.CanSubscribe("user:"+tc.sub)):
					t.Errorf("%s: %q, %v", tc.sub, id.Name(), err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := statsOf(t, v)
	if s.entries > size || s.hits == 0 {
		t.Errorf("stats %+v: want at most %d entries and some hits", s, size)
	}
	t.Logf("%+v", s)
}

// TestVerifyCacheMemory measures the heap a full cache holds, for the
// bound documented on JWTConfig.CacheSize: tokens like the benchmark's, and
// entries just under MaxCacheEntryBytes (a token near MaxCachedTokenLen
// whose patterns expand a 128-byte subject). It is not parallel, so that
// nothing else allocates while it measures.
func TestVerifyCacheMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills caches of 2,000 entries")
	}
	const n = 2000
	// largest returns claims whose entry is just under MaxCacheEntryBytes:
	// a 128-byte subject repeated k times in a pattern, k found once (the
	// size does not depend on i).
	k := 0
	largest := func(v *auth.Verifier, i int) jwt.MapClaims {
		c := func(i, k int) jwt.MapClaims {
			return with(claims(), "sub", fmt.Sprintf("%0*d", auth.MaxChannelLen, i), "channels", nil,
				"pad", strings.Repeat("x", 2500), "subscribe", []string{strings.Repeat("{sub}", k)})
		}
		for k == 0 {
			for n := 1; ; n++ {
				size, err := auth.EntryBytes(v, sign(t, jwt.SigningMethodHS256, secret, "", c(i, n)))
				if err != nil {
					t.Fatal(err)
				}
				if size > auth.MaxCacheEntryBytes {
					k = n - 1
					break
				}
			}
		}
		return c(i, k)
	}
	for _, tc := range []struct {
		name   string
		claims func(v *auth.Verifier, i int) jwt.MapClaims
	}{
		{"typical", func(_ *auth.Verifier, i int) jwt.MapClaims { return with(claims(), "sub", fmt.Sprintf("user-%06d", i)) }},
		{"largest", largest},
	} {
		v := newVerifier(t, auth.JWTConfig{HS256Secret: secret, CacheSize: n})
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = sign(t, jwt.SigningMethodHS256, secret, "", tc.claims(v, i))
		}
		estimate, err := auth.EntryBytes(v, tokens[0])
		if err != nil {
			t.Fatal(err)
		}
		heap := func() uint64 {
			var ms runtime.MemStats
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		h0 := heap()
		for _, tok := range tokens {
			if _, err := v.Verify(tok); err != nil {
				t.Fatal(err)
			}
		}
		h1 := heap()
		if s := statsOf(t, v); s.entries != n {
			t.Fatalf("%s: %d entries, want %d", tc.name, s.entries, n)
		}
		per := float64(int64(h1)-int64(h0)) / n
		t.Logf("%s: %d-byte tokens, entry estimate %d bytes, %.0f bytes of heap per entry", tc.name, len(tokens[0]), estimate, per)
		if per > 1.25*auth.MaxCacheEntryBytes {
			t.Errorf("%s: %.0f bytes per entry, the documented bound is about %d", tc.name, per, auth.MaxCacheEntryBytes)
		}
		runtime.KeepAlive(tokens)
		runtime.KeepAlive(v)
	}
}
