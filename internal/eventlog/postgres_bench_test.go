package eventlog_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
)

// BenchmarkAppend measures publish throughput into PostgreSQL with 64
// concurrent publishers, one event (256 bytes, 100 channels) per Append:
// through the batching writer, and with MaxBatch 1 (one transaction per
// event) as the baseline. Commits are as durable as the server's settings.
func BenchmarkAppend(b *testing.B) {
	const publishers = 64
	for _, bc := range []struct {
		name     string
		maxBatch int
	}{
		{"batched", 0},
		{"one-tx-per-event", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lg := startPostgres(b, eventlog.PostgresOptions{
				Options:  eventlog.Options{AutoCreate: true},
				MaxBatch: bc.maxBatch,
			})
			payload := make([]byte, 256)
			channels := make([]string, 100)
			for i := range channels {
				channels[i] = fmt.Sprintf("bench-%d", i)
			}
			// Create the channels outside the measurement.
			warm := make([]eventlog.Publish, len(channels))
			for i, ch := range channels {
				warm[i] = eventlog.Publish{Channel: ch, Data: payload}
			}
			mustAppend(b, lg, warm...)

			var (
				next     atomic.Int64
				wg       sync.WaitGroup
				firstErr atomic.Pointer[error]
			)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range publishers {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						_, errs, err := lg.Append(ctx, []eventlog.Publish{{Channel: channels[i%int64(len(channels))], Data: payload}})
						if err == nil {
							err = errs[0]
						}
						if err != nil {
							firstErr.CompareAndSwap(nil, &err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if p := firstErr.Load(); p != nil {
				b.Fatalf("append: %v", *p)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
	}
}
