package fanout_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
)

// BenchmarkHubFanout measures delivering one event to every subscriber of a
// channel through the hub and the subscription core (memory log, so the
// figure is the in-process fan-out cost). ns/op is per published event;
// deliveries/s counts events handed to subscribers.
func BenchmarkHubFanout(b *testing.B) {
	for _, subs := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			log, hub := start(b, fanout.Options{QueueSize: 1 << 16})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			wg.Add(subs)
			ready := make(chan struct{}, subs)
			for range subs {
				sub, err := hub.Subscribe(ctx, []string{"bench"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					defer wg.Done()
					defer sub.Close()
					ready <- struct{}{}
					for n := 0; n < b.N; n++ {
						if _, err := sub.Next(ctx); err != nil {
							b.Errorf("next: %v", err)
							return
						}
					}
				}()
			}
			for range subs {
				<-ready
			}
			data := make([]byte, 256)
			b.ReportAllocs()
			b.ResetTimer()
			const batch = 64
			for n := 0; n < b.N; n += batch {
				ps := make([]eventlog.Publish, min(batch, b.N-n))
				for i := range ps {
					ps[i] = eventlog.Publish{Channel: "bench", Data: data}
				}
				if _, _, err := log.Append(ctx, ps); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)*float64(subs)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
