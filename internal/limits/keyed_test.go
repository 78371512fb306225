package limits_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/limits"
)

func TestKeyedIndependentKeys(t *testing.T) {
	t.Parallel()
	k := limits.NewKeyed(limits.Rate{PerSecond: 1, Burst: 2}, 100)
	for _, key := range []string{"alice", "bob"} {
		if !k.AllowN(key, t0, 2) {
			t.Fatalf("%s: first burst refused", key)
		}
		ok, wait := k.Take(key, t0, 1)
		if ok || wait != time.Second {
			t.Fatalf("%s: Take after burst = %v, %v; want refused, 1s", key, ok, wait)
		}
	}
	if !k.Allow("alice", t0.Add(time.Second)) {
		t.Fatal("alice not refilled after 1s")
	}
}

// TestKeyedCycledNamesBounded plays an attacker with fresh names at one
// instant: memory stays at the cap and the names beyond it share one bucket.
func TestKeyedCycledNamesBounded(t *testing.T) {
	t.Parallel()
	const maxKeys, burst = 64, 3 // 64 = 32 shards × 2
	k := limits.NewKeyed(limits.Rate{PerSecond: 1, Burst: burst}, maxKeys)
	admitted := 0
	for i := range 100000 {
		for k.Allow(fmt.Sprint("user-", i), t0) {
			admitted++
		}
		if n := k.Len(); n > maxKeys {
			t.Fatalf("after %d names: %d keys tracked; cap %d", i+1, n, maxKeys)
		}
	}
	if want := maxKeys*burst + burst; admitted != want {
		t.Fatalf("admitted %d events for 100000 names; want %d (tracked keys' bursts + one overflow burst)", admitted, want)
	}
}

func TestKeyedEvictsOnlyRefilled(t *testing.T) {
	t.Parallel()
	k := limits.NewKeyed(limits.Rate{PerSecond: 1, Burst: 1}, 100000)
	for i := range 1000 {
		k.Allow(fmt.Sprint("old-", i), t0)
	}
	slow := limits.NewKeyed(limits.Rate{PerSecond: 0.01, Burst: 1}, 1000) // refills in 100s
	if !slow.Allow("drained", t0) {
		t.Fatal("first event refused")
	}
	later := t0.Add(11 * time.Second) // past the 10s sweep period
	for i := range 1000 {
		k.Allow(fmt.Sprint("new-", i), later)
		slow.Allow(fmt.Sprint("other-", i), later)
	}
	if n := k.Len(); n != 1000 {
		t.Fatalf("%d keys after the sweep; want the 1000 new ones (the old ones refilled)", n)
	}
	// Evicting would grant "drained" a fresh burst; it must still be refused.
	if ok, wait := slow.Take("drained", later, 1); ok || wait != 89*time.Second {
		t.Fatalf("drained key: Take = %v, %v; want refused for 89s more", ok, wait)
	}
}

func TestKeyedConcurrent(t *testing.T) {
	t.Parallel()
	const keys, burst = 20, 5
	k := limits.NewKeyed(limits.Rate{PerSecond: 1, Burst: burst}, 1000)
	var per [keys]atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 200 {
				key := (g + i) % keys
				if k.Allow(fmt.Sprint("k", key), t0) {
					per[key].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for i := range per {
		if got := per[i].Load(); got != burst {
			t.Errorf("key %d: admitted %d; want exactly %d", i, got, burst)
		}
	}
}
