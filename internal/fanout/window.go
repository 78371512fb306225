package fanout

import (
	"sort"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/wire"
)

// window holds the most recent entries the hub dispatched, in position
// order, bounded in entries and in bytes (wire.Entry.Cost): large events
// leave it sooner. It is guarded by Hub.mu.
type window struct {
	maxLen   int
	maxBytes int64

	ring  []*wire.Entry // ring[(start+i)%len(ring)] for i < n, ascending positions
	start int
	n     int
	bytes int64
}

func (w *window) add(e *wire.Entry) {
	if w.ring == nil {
		w.ring = make([]*wire.Entry, w.maxLen)
	}
	c := e.Cost()
	if c > w.maxBytes {
		w.clear() // larger than the whole window: keep nothing older either
		return
	}
	for w.n > 0 && (w.n == len(w.ring) || w.bytes+c > w.maxBytes) {
		w.dropOldest()
	}
	w.ring[(w.start+w.n)%len(w.ring)] = e
	w.n++
	w.bytes += c
}

func (w *window) dropOldest() {
	old := w.ring[w.start]
	w.ring[w.start] = nil
	w.start = (w.start + 1) % len(w.ring)
	w.n--
	w.bytes -= old.Cost()
}

func (w *window) clear() {
	for w.n > 0 {
		w.dropOldest()
	}
}

// get returns the entry at pos, or nil.
func (w *window) get(pos int64) *wire.Entry {
	if w.n == 0 {
		return nil
	}
	at := func(i int) *wire.Entry { return w.ring[(w.start+i)%len(w.ring)] }
	if pos < at(0).Position() || pos > at(w.n-1).Position() {
		return nil
	}
	i := sort.Search(w.n, func(i int) bool { return at(i).Position() >= pos })
	if i < w.n && at(i).Position() == pos {
		return at(i)
	}
	return nil
}

// full reports whether a read with these limits may have stopped short of
// the end: it returned limit entries, or entries reaching maxBytes.
func full(evs []eventlog.Event, limit, maxBytes int) bool {
	if len(evs) >= limit {
		return true
	}
	total := 0
	for i := range evs {
		total += len(evs[i].Data)
	}
	return total >= maxBytes
}
