package limits

import (
	"math"
	"sync"
	"time"
)

// gcra is a token bucket kept as the generic cell rate algorithm: one
// "theoretical arrival time" instead of a token count, so refill needs no
// timer and all arithmetic is exact integer nanoseconds. The bucket is full
// when tat <= now; admitting n events moves tat n intervals forward; the
// request fits while tat stays within burst intervals of now.
//
// All values are clamped to ±clampNS (~36 years) so sums never overflow.
type gcra struct {
	interval int64 // ns per event, rounded up so the rate is never exceeded; 0: no limit
	burst    int64
	tau      int64 // burst*interval
	tat      int64 // ns since the owner's base time
}

const clampNS = 1 << 60

func newGCRA(r Rate) gcra {
	if math.IsNaN(r.PerSecond) {
		panic("limits: NaN rate")
	}
	if r.PerSecond <= 0 {
		return gcra{}
	}
	burst := int64(max(r.Burst, 1))
	iv := math.Ceil(1e9 / r.PerSecond)
	interval := int64(clampNS)
	if iv < clampNS {
		interval = max(int64(iv), 1)
	}
	return gcra{interval: interval, burst: burst, tau: mulSat(burst, interval)}
}

// take admits n events at now, or reports how long until it would. n larger
// than the burst is never admitted and reports wait 0.
func (g *gcra) take(now, n int64) (ok bool, wait time.Duration) {
	if g.interval == 0 || n <= 0 {
		return true, 0
	}
	if n > g.burst {
		return false, 0
	}
	next := max(g.tat, now) + mulSat(n, g.interval)
	if over := next - now - g.tau; over > 0 {
		return false, time.Duration(over)
	}
	g.tat = next
	return true, 0
}

// refund gives back n events admitted earlier by take.
func (g *gcra) refund(n int64) {
	if g.interval == 0 || n <= 0 {
		return
	}
	g.tat = max(g.tat-mulSat(n, g.interval), -clampNS)
}

// full reports whether the bucket is indistinguishable from a new one.
func (g *gcra) full(now int64) bool { return g.tat <= now }

func mulSat(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	if a > clampNS/b {
		return clampNS
	}
	return a * b
}

// sinceNS is now-base in nanoseconds, clamped. time.Time.Sub uses the
// monotonic readings when both times have one (anything from time.Now).
func sinceNS(base, now time.Time) int64 {
	return min(max(int64(now.Sub(base)), -clampNS), clampNS)
}

// Bucket is a token bucket for one publisher, typically one connection. It
// starts full, costs a few words, refills lazily from the times passed to it
// and runs no goroutine or timer. It is safe for concurrent use.
type Bucket struct {
	rate Rate
	mu   sync.Mutex
	base time.Time // the first time seen; tat counts from it
	set  bool
	g    gcra
}

// NewBucket returns a full bucket for r. A zero r.PerSecond admits
// everything; a Burst below 1 is treated as 1. It panics on a NaN rate
// (Limits.Validate rejects one).
func NewBucket(r Rate) *Bucket { return &Bucket{rate: r, g: newGCRA(r)} }

// Allow takes one event at now and reports whether it was admitted.
func (b *Bucket) Allow(now time.Time) bool { ok, _ := b.Take(now, 1); return ok }

// AllowN takes n events at now, all or nothing.
func (b *Bucket) AllowN(now time.Time, n int) bool { ok, _ := b.Take(now, n); return ok }

// Take takes n events at now, all or nothing. When refused, retryAfter is
// how long until the same n would be admitted (the value for Retry-After),
// or 0 if n exceeds the burst and waiting can never help.
func (b *Bucket) Take(now time.Time, n int) (ok bool, retryAfter time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.set {
		b.base, b.set = now, true
	}
	return b.g.take(sinceNS(b.base, now), int64(n))
}

func (b *Bucket) refund(n int) {
	b.mu.Lock()
	b.g.refund(int64(n))
	b.mu.Unlock()
}
