package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldrt/herald/internal/metrics"
)

// BenchmarkDelivered is the metrics' cost per delivered event, with every
// goroutine a subscriber observing the delivery lag of one transport (as
// in the fan-out): the sharded histogram Herald uses, against one
// prometheus.Histogram shared by all (what it replaced), and the clock
// read alone.
func BenchmarkDelivered(b *testing.B) {
	created := time.Now().Add(-3 * time.Millisecond)
	b.Run("sharded", func(b *testing.B) {
		m := metrics.New()
		b.RunParallel(func(pb *testing.PB) {
			o := m.Lag(metrics.TransportSSE)
			for pb.Next() {
				o.Delivered(created)
			}
		})
	})
	b.Run("prometheus-histogram", func(b *testing.B) {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x", Buckets: prometheus.ExponentialBuckets(.0005, 2.5, 14)})
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.Observe(time.Since(created).Seconds())
			}
		})
	})
	b.Run("clock-only", func(b *testing.B) {
		var sink time.Duration
		b.RunParallel(func(pb *testing.PB) {
			var d time.Duration
			for pb.Next() {
				d += time.Since(created)
			}
			sink += d
		})
		_ = sink
	})
}

// TestDeliveredHistogram: observations land in the right buckets and a
// scrape adds the shards up.
func TestDeliveredHistogram(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	for i := range 100 {
		o := m.Lag(metrics.TransportWS) // each on its own shard, round-robin
		o.Delivered(time.Now().Add(-time.Duration(i%2) * 2 * time.Second))
	}
	s, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if s.Lag.Count != 100 || s.Delivered != 100 {
		t.Fatalf("count %d, delivered %d; want 100", s.Lag.Count, s.Delivered)
	}
	for i, bound := range s.Lag.Bounds {
		want := uint64(50)
		if bound >= 2.5 {
			want = 100
		}
		if bound < 0.5 && s.Lag.Counts[i] != want || bound >= 2.5 && s.Lag.Counts[i] != want {
			t.Errorf("bucket le=%v has %d, want %d", bound, s.Lag.Counts[i], want)
		}
	}
	if s.Lag.Sum < 99 || s.Lag.Sum > 101 {
		t.Errorf("sum %v s, want about 100 s", s.Lag.Sum)
	}
}
