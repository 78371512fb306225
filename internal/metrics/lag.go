package metrics

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// lagShards spreads the delivery lag's counters over cache lines: every
// subscriber's goroutine observes it for every event, and one shared
// histogram (prometheus.Histogram's atomics) made the fan-out's cores fight
// over one cache line (+4% CPU per delivery measured; see
// docs/benchmarks.md).
const lagShards = 16

// lagHistogram is a histogram by transport whose observations go to one of
// lagShards shards, chosen per subscriber; a scrape adds them up.
type lagHistogram struct {
	desc       *prometheus.Desc
	bounds     []float64
	transports []string
	shards     map[string]*[lagShards]lagShard
	next       atomic.Uint32
}

type lagShard struct {
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	count  atomic.Uint64
	sumNs  atomic.Int64
	_      [64]byte // keep shards off each other's cache lines
}

func newLagHistogram(desc *prometheus.Desc, bounds []float64, transports []string) *lagHistogram {
	h := &lagHistogram{desc: desc, bounds: bounds, transports: transports, shards: map[string]*[lagShards]lagShard{}}
	for _, t := range transports {
		var s [lagShards]lagShard
		for i := range s {
			s[i].counts = make([]atomic.Uint64, len(bounds)+1)
		}
		h.shards[t] = &s
	}
	return h
}

// shard returns a shard of transport's histogram for one subscriber.
func (h *lagHistogram) shard(transport string) *lagShard {
	s, ok := h.shards[transport]
	if !ok {
		s = h.shards[TransportOther]
	}
	return &s[h.next.Add(1)%lagShards]
}

func (s *lagShard) observe(bounds []float64, d time.Duration) {
	d = max(d, 0) // the database's clock ahead of ours
	v := d.Seconds()
	i := sort.SearchFloat64s(bounds, v) // first bound >= v
	s.counts[i].Add(1)
	s.count.Add(1)
	s.sumNs.Add(int64(d))
}

func (h *lagHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *lagHistogram) Collect(ch chan<- prometheus.Metric) {
	for _, t := range h.transports {
		var (
			count uint64
			sumNs int64
		)
		per := make([]uint64, len(h.bounds)+1)
		for i := range h.shards[t] {
			s := &h.shards[t][i]
			for b := range per {
				per[b] += s.counts[b].Load()
			}
			count += s.count.Load()
			sumNs += s.sumNs.Load()
		}
		buckets := make(map[float64]uint64, len(h.bounds))
		var cum uint64
		for b, bound := range h.bounds {
			cum += per[b]
			buckets[bound] = cum
		}
		// count may run ahead of the buckets while observations land: keep
		// the histogram consistent (+Inf >= every bucket).
		count = max(count, cum)
		ch <- prometheus.MustNewConstHistogram(h.desc, count, float64(sumNs)/1e9, buckets, t)
	}
}
