package limits_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/limits"
)

func TestBucketSequence(t *testing.T) {
	t.Parallel()
	type step struct {
		at   time.Duration // since t0
		n    int
		ok   bool
		wait time.Duration
	}
	tests := []struct {
		name  string
		rate  limits.Rate
		steps []step
	}{
		{"burst then refill", limits.Rate{PerSecond: 10, Burst: 2}, []step{
			{0, 1, true, 0}, {0, 1, true, 0}, {0, 1, false, 100 * time.Millisecond},
			{99 * time.Millisecond, 1, false, time.Millisecond},
			{100 * time.Millisecond, 1, true, 0},
			{100 * time.Millisecond, 2, false, 200 * time.Millisecond},
			{time.Hour, 2, true, 0}, // refill caps at the burst
			{time.Hour, 1, false, 100 * time.Millisecond},
		}},
		{"batch over burst never fits", limits.Rate{PerSecond: 10, Burst: 2}, []step{
			{0, 3, false, 0}, {time.Hour, 3, false, 0}, {time.Hour, 2, true, 0},
		}},
		{"zero and negative n are free", limits.Rate{PerSecond: 1, Burst: 1}, []step{
			{0, 1, true, 0}, {0, 0, true, 0}, {0, -5, true, 0}, {0, 1, false, time.Second},
		}},
		{"unlimited", limits.Rate{}, []step{{0, 1 << 30, true, 0}, {0, 1 << 30, true, 0}}},
		{"burst below 1 is 1", limits.Rate{PerSecond: 2, Burst: 0}, []step{
			{0, 1, true, 0}, {0, 1, false, 500 * time.Millisecond},
		}},
		{"clock going back admits nothing extra", limits.Rate{PerSecond: 1, Burst: 1}, []step{
			{10 * time.Second, 1, true, 0}, {5 * time.Second, 1, false, 6 * time.Second},
			{11 * time.Second, 1, true, 0},
		}},
		{"fractional rate rounds the interval up", limits.Rate{PerSecond: 3, Burst: 1}, []step{
			{0, 1, true, 0}, {333333333, 1, false, 1}, {333333334, 1, true, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := limits.NewBucket(tt.rate)
			for i, s := range tt.steps {
				ok, wait := b.Take(t0.Add(s.at), s.n)
				if ok != s.ok || wait != s.wait {
					t.Fatalf("step %d %+v: Take = %v, %v", i, s, ok, wait)
				}
			}
		})
	}
}

// TestBucketAccuracy checks the long-run count exactly: burst plus one
// event per interval, whatever the polling pattern.
func TestBucketAccuracy(t *testing.T) {
	t.Parallel()
	for _, poll := range []time.Duration{time.Millisecond, 7 * time.Millisecond, 333 * time.Microsecond} {
		b := limits.NewBucket(limits.Rate{PerSecond: 100, Burst: 10})
		admitted := 0
		for at := time.Duration(0); at <= 10*time.Second; at += poll {
			for b.Allow(t0.Add(at)) {
				admitted++
			}
		}
		last := (10 * time.Second / poll) * poll
		if want := 10 + int(last/(10*time.Millisecond)); admitted != want {
			t.Errorf("poll %v: admitted %d in %v; want %d", poll, admitted, last, want)
		}
	}
}

// TestBucketRetryAfter checks that RetryAfter is exact: one nanosecond
// earlier is refused, at RetryAfter the same request is admitted.
func TestBucketRetryAfter(t *testing.T) {
	t.Parallel()
	b := limits.NewBucket(limits.Rate{PerSecond: 7, Burst: 3})
	now := t0
	for range 100 {
		ok, wait := b.Take(now, 2)
		if ok {
			continue
		}
		if ok, _ := b.Take(now.Add(wait-1), 2); ok {
			t.Fatalf("admitted 1ns before RetryAfter %v", wait)
		}
		now = now.Add(wait)
		if ok, _ := b.Take(now, 2); !ok {
			t.Fatalf("refused at RetryAfter %v", wait)
		}
	}
}

func TestBucketConcurrent(t *testing.T) {
	t.Parallel()
	const burst = 100
	b := limits.NewBucket(limits.Rate{PerSecond: 1, Burst: burst})
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 50 {
				if b.Allow(t0) {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != burst {
		t.Fatalf("admitted %d at one instant; want exactly the burst %d", got, burst)
	}
}

func TestBucketMonotonic(t *testing.T) {
	t.Parallel()
	// Real time.Now values carry a monotonic reading; stripping it from
	// one side (Round(0)) must not break the arithmetic either.
	b := limits.NewBucket(limits.Rate{PerSecond: 1, Burst: 1})
	now := time.Now()
	if !b.Allow(now) || b.Allow(now) || b.Allow(now.Round(0)) {
		t.Fatal("second event in the same instant admitted")
	}
}
