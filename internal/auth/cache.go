package auth

import (
	"strings"
	"sync"
	"time"
	"unsafe"
)

const (
	// DefaultCacheSize is the number of verified tokens a Verifier keeps
	// when JWTConfig.CacheSize is zero.
	DefaultCacheSize = 10_000
	// MaxCachedTokenLen is the longest token the cache keeps, in bytes.
	// Longer tokens are verified on every use.
	MaxCachedTokenLen = 4 << 10
	// MaxCacheEntryBytes bounds what one cache entry holds: the token, the
	// Identity's names and patterns, and the entry itself (see
	// cacheEntry.bytes). Tokens whose patterns expand to more (many {sub}
	// placeholders and a long subject) are verified on every use. The
	// estimate leaves out allocator rounding: entries just under the limit
	// measure about 8.3 KB of heap each (TestVerifyCacheMemory), so a
	// cache holds at most about CacheSize × 8.5 KB.
	MaxCacheEntryBytes = 8 << 10
)

// cacheEntry is what a successful verification established about a token.
// It is never modified once stored.
type cacheEntry struct {
	id Identity
	// The token's time claims, as the jwt parser read them; a hit is
	// only served while they still hold (see validAt).
	exp, nbf, iat  time.Time
	hasNbf, hasIat bool
	// set is the JWKS key set that was current before the token was
	// verified (nil without a JWKS). A hit is only served while it is
	// still the current set; see Verifier.Verify.
	set *keySet
}

// newCacheEntry returns the entry for a token verified under set, whose
// claims c gave the identity id.
func newCacheEntry(id Identity, c *claims, set *keySet) *cacheEntry {
	e := &cacheEntry{id: id, exp: c.ExpiresAt.Time, set: set}
	if c.NotBefore != nil {
		e.nbf, e.hasNbf = c.NotBefore.Time, true
	}
	if c.IssuedAt != nil {
		e.iat, e.hasIat = c.IssuedAt.Time, true
	}
	return e
}

// validAt reports whether a fresh verification at now would accept the
// token's time claims. The comparisons are jwt.Validator's
// (verifyExpiresAt, verifyNotBefore, verifyIssuedAt) with the same leeway,
// so a cached token is refused at the same instant as a fresh one: exp
// holds while now < exp+leeway, nbf and iat while now >= t-leeway.
func (e *cacheEntry) validAt(now time.Time, leeway time.Duration) bool {
	if !now.Before(e.exp.Add(+leeway)) {
		return false
	}
	if e.hasNbf && now.Before(e.nbf.Add(-leeway)) {
		return false
	}
	if e.hasIat && now.Before(e.iat.Add(-leeway)) {
		return false
	}
	return true
}

// Sizes for cacheEntry.bytes: a string header, a Pattern, an entry, and a
// map slot (key string header, entry pointer, control byte) at the map's
// lowest load.
const (
	stringBytes  = int(unsafe.Sizeof(""))
	patternBytes = int(unsafe.Sizeof(Pattern{}))
	entryBytes   = int(unsafe.Sizeof(cacheEntry{}))
	slotBytes    = 2 * (stringBytes + int(unsafe.Sizeof((*cacheEntry)(nil))) + 1)
)

// bytes estimates the memory the entry for token holds: the token (the map
// key), the entry, its map slot, and the identity's strings and slices.
func (e *cacheEntry) bytes(token string) int {
	n := len(token) + entryBytes + slotBytes + len(e.id.name)
	for _, ps := range [][]Pattern{e.id.subscribe, e.id.publish} {
		n += cap(ps) * patternBytes
		for _, p := range ps {
			n += (cap(p.src) + cap(p.glob)) * stringBytes
			for i := range p.src {
				n += len(p.src[i]) + len(p.glob[i])
			}
		}
	}
	n += cap(e.id.channels) * stringBytes
	for _, c := range e.id.channels {
		n += len(c)
	}
	return n
}

// tokenCache maps token strings to what verifying them established. It
// holds at most max entries; when full, adding one evicts an arbitrary
// other (Go's map iteration starts at a random place). It is safe for
// concurrent use: one mutex guards the map and is held only for a map
// operation, never while verifying.
//
// Keying by the token itself is safe against timing probes: the map only
// compares a presented token with cached ones whose seeded hash bits
// match, which a client can neither choose nor repeat with a changed
// token, so response times say nothing about a cached token's bytes.
type tokenCache struct {
	mu  sync.Mutex
	m   map[string]*cacheEntry
	max int

	hits, misses uint64 // under mu; for tests
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{m: make(map[string]*cacheEntry), max: max}
}

// lookup returns the identity cached for exactly this token string if its
// entry was verified under set and its time claims hold at now. The map
// compares whole strings: a token that differs from a cached one in any
// byte is another key, and is verified in full.
func (c *tokenCache) lookup(token string, set *keySet, now time.Time, leeway time.Duration) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[token]
	if e == nil || e.set != set || !e.validAt(now, leeway) {
		c.misses++
		return Identity{}, false
	}
	c.hits++
	return e.id, true
}

// put stores e for token unless either is too large to keep, evicting an
// arbitrary entry if the cache is full.
func (c *tokenCache) put(token string, e *cacheEntry) {
	if len(token) > MaxCachedTokenLen || e.bytes(token) > MaxCacheEntryBytes {
		return
	}
	// The token may be a substring of a larger header value; keep only
	// the token.
	token = strings.Clone(token)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[token]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[token] = e
}

// remove forgets token, after it failed verification.
func (c *tokenCache) remove(token string) {
	c.mu.Lock()
	delete(c.m, token)
	c.mu.Unlock()
}
