package limits

import (
	"hash/maphash"
	"sync"
	"time"
)

const (
	keyedShards = 32
	// sweepEvery is how often a shard drops its full buckets while under
	// its cap. A full bucket is indistinguishable from a new one, so
	// dropping it forgets nothing; this only returns memory.
	sweepEvery = 10 * time.Second
	// sweepAtCapEvery rate-limits the sweeps a shard at its cap runs on
	// insert, so a flood of new keys cannot make every call O(shard size).
	sweepAtCapEvery = time.Second
)

// Keyed is a set of token buckets with the same rate, one per key (a user
// ID; for anonymous clients, something stable such as "ip:" + address). It
// is safe for concurrent use, starts no goroutine and holds bounded memory.
//
// Idle buckets are dropped once they have refilled: a full bucket equals a
// new one, so eviction never grants extra events. Keys are spread over 32
// shards, each holding at most ceil(maxKeys/32) keys. When a new key arrives
// at a full shard, the shard first drops its refilled buckets (at most once
// a second); if it is still full, the key is not tracked and shares a single
// overflow bucket, with the same rate, with every other untracked key. So an
// attacker cycling user names neither grows memory past the cap nor escapes
// the limit: beyond the cap all new names together get one user's rate
// (which may briefly refuse legitimate new users during such a flood).
type Keyed struct {
	rate     Rate
	perShard int
	seed     maphash.Seed
	shards   [keyedShards]keyedShard
	overflow Bucket
}

type keyedShard struct {
	mu        sync.Mutex
	base      time.Time
	set       bool
	lastSweep int64
	m         map[string]gcra
	_         [64]byte // keep shards' locks on separate cache lines
}

// NewKeyed returns buckets of rate r for at most maxKeys keys (rounded up to
// a multiple of 32). maxKeys <= 0 means Defaults().MaxTrackedUsers.
func NewKeyed(r Rate, maxKeys int) *Keyed {
	if maxKeys <= 0 {
		maxKeys = Defaults().MaxTrackedUsers
	}
	k := &Keyed{
		rate:     r,
		perShard: (maxKeys + keyedShards - 1) / keyedShards,
		seed:     maphash.MakeSeed(),
		overflow: Bucket{rate: r, g: newGCRA(r)},
	}
	for i := range k.shards {
		k.shards[i].m = make(map[string]gcra)
	}
	return k
}

// Allow takes one event from key's bucket at now.
func (k *Keyed) Allow(key string, now time.Time) bool { ok, _ := k.Take(key, now, 1); return ok }

// AllowN takes n events from key's bucket at now, all or nothing.
func (k *Keyed) AllowN(key string, now time.Time, n int) bool {
	ok, _ := k.Take(key, now, n)
	return ok
}

// Take is Bucket.Take for key's bucket.
func (k *Keyed) Take(key string, now time.Time, n int) (ok bool, retryAfter time.Duration) {
	s := &k.shards[maphash.String(k.seed, key)%keyedShards]
	s.mu.Lock()
	if !s.set {
		s.base, s.set = now, true
	}
	t := sinceNS(s.base, now)
	if t-s.lastSweep >= int64(sweepEvery) {
		s.sweep(t)
	}
	g, found := s.m[key]
	if !found {
		if len(s.m) >= k.perShard && t-s.lastSweep >= int64(sweepAtCapEvery) {
			s.sweep(t)
		}
		if len(s.m) >= k.perShard {
			s.mu.Unlock()
			return k.overflow.Take(now, n)
		}
		g = newGCRA(k.rate)
		g.tat = t // a new bucket is full at t
	}
	ok, retryAfter = g.take(t, int64(n))
	if ok || found {
		s.m[key] = g
	}
	s.mu.Unlock()
	return ok, retryAfter
}

func (s *keyedShard) sweep(t int64) {
	s.lastSweep = t
	for key, g := range s.m {
		if g.full(t) {
			delete(s.m, key)
		}
	}
}

// Len returns the number of keys tracked, for metrics and tests.
func (k *Keyed) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
