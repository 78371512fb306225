package auth

// CacheStats reports v's cache of verified tokens: the entries it holds
// and how many lookups it answered (hits) or not (misses). on is false
// when the cache is off.
func CacheStats(v *Verifier) (entries int, hits, misses uint64, on bool) {
	c := v.cache
	if c == nil {
		return 0, 0, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m), c.hits, c.misses, true
}

// CacheLimit returns the most entries v's cache holds, 0 when it is off.
func CacheLimit(v *Verifier) int {
	if v.cache == nil {
		return 0
	}
	return v.cache.max
}

// VerifierOf returns a's token verifier.
func VerifierOf(a *Authenticator) *Verifier { return a.jwt }

// EntryBytes verifies token without the cache and returns what its cache
// entry would count against MaxCacheEntryBytes.
func EntryBytes(v *Verifier, token string) (int, error) {
	id, c, err := v.verify(token)
	if err != nil {
		return 0, err
	}
	return newCacheEntry(id, c, nil).bytes(token), nil
}
