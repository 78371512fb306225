package limits_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/limits"
)

func BenchmarkBucketAllow(b *testing.B) {
	bk := limits.NewBucket(limits.Rate{PerSecond: 1e9, Burst: 1})
	now := time.Now()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			bk.Allow(now)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				bk.Allow(now)
			}
		})
	})
}

func BenchmarkKeyedAllow(b *testing.B) {
	for _, keys := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			k := limits.NewKeyed(limits.Rate{PerSecond: 10, Burst: 20}, 100000)
			names := make([]string, keys)
			for i := range names {
				names[i] = fmt.Sprint("user-", i)
			}
			now := time.Now()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					k.Allow(names[i%keys], now)
					i++
				}
			})
		})
	}
}

func BenchmarkConnsAcquire(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		c := limits.NewConns(20000, 50)
		b.ReportAllocs()
		for b.Loop() {
			release, err := c.Acquire("user")
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := limits.NewConns(0, 0)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				release, err := c.Acquire("user")
				if err != nil {
					b.Error(err)
					return
				}
				release()
			}
		})
	})
}
