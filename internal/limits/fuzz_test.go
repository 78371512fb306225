package limits_test

import (
	"math"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/limits"
)

// FuzzBucket drives a bucket with arbitrary rates and sequences of
// (advance, n) and checks the token-bucket bound: over any run it never
// admits more than burst + rate × elapsed events, never admits a batch
// larger than the burst, and a refusal's RetryAfter is never negative.
func FuzzBucket(f *testing.F) {
	f.Add(10.0, uint16(2), []byte{0, 1, 0, 1, 0, 1, 10, 1})
	f.Add(0.001, uint16(1), []byte{255, 7, 255, 7})
	f.Add(1e9, uint16(1000), []byte{1, 3, 2, 3, 3, 3})
	f.Add(3.0, uint16(0), []byte{})
	f.Fuzz(func(t *testing.T, perSecond float64, burst uint16, ops []byte) {
		if math.IsNaN(perSecond) || math.IsInf(perSecond, 0) || perSecond <= 0 {
			t.Skip()
		}
		r := limits.Rate{PerSecond: perSecond, Burst: int(burst)}
		b := limits.NewBucket(r)
		effBurst := max(int(burst), 1)
		now := t0
		admitted := 0
		for i := 0; i+1 < len(ops); i += 2 {
			// Advances span 1ns to ~25s: the low bits scale, the high
			// bits pick a decade.
			adv := time.Duration(ops[i]&0x1f) * time.Duration(math.Pow10(int(ops[i]>>5)+3))
			if ops[i] == 0 {
				adv = 0
			}
			now = now.Add(adv)
			n := int(ops[i+1]%16) + 1
			if ops[i+1] >= 240 {
				n = effBurst + 1
			}
			ok, wait := b.Take(now, n)
			if wait < 0 || (ok && wait != 0) {
				t.Fatalf("Take(%d) = %v, %v", n, ok, wait)
			}
			if ok {
				if n > effBurst {
					t.Fatalf("admitted a batch of %d over burst %d", n, effBurst)
				}
				admitted += n
			} else if wait == 0 && n <= effBurst {
				t.Fatalf("refused %d <= burst %d with no RetryAfter", n, effBurst)
			}
			elapsed := now.Sub(t0).Seconds()
			bound := float64(effBurst) + perSecond*elapsed
			if float64(admitted) > bound*(1+1e-12) {
				t.Fatalf("admitted %d in %.9fs; bound burst %d + %g/s × elapsed = %.6f",
					admitted, elapsed, effBurst, perSecond, bound)
			}
		}
	})
}
