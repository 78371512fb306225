package fanout

import (
	"slices"
	"sort"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/wire"
)

// window holds the most recent entries the hub dispatched, in position
// order, bounded in entries and in bytes (wire.Entry.Cost): large events
// leave it sooner. It is guarded by Hub.mu.
//
// Above floor it is exact: it holds every entry the hub dispatched after
// floor, as the log holds it now, unless an entry the hub has not
// dispatched yet changed one in place (see Hub.replayFromWindow). floor
// rises when an entry leaves, and to just below every Updated or Deleted
// entry added: those change earlier entries in the log (the data of the
// event they target; a delete erases its Updated entries too), which the
// window keeps as they were dispatched.
type window struct {
	maxLen   int
	maxBytes int64

	ring  []*wire.Entry // ring[(start+i)%len(ring)] for i < n, ascending positions
	start int
	n     int
	bytes int64
	floor int64
}

func (w *window) add(e *wire.Entry) {
	if w.ring == nil {
		w.ring = make([]*wire.Entry, w.maxLen)
	}
	if k := e.Event().Kind; k == eventlog.KindUpdated || k == eventlog.KindDeleted {
		w.floor = max(w.floor, e.Position()-1)
	}
	c := e.Cost()
	if c > w.maxBytes {
		w.clear() // larger than the whole window: keep nothing older either
		w.floor = max(w.floor, e.Position())
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
	w.floor = max(w.floor, old.Position())
}

// after returns the entries of channels (sorted) after pos, in position
// order. The caller checked pos >= floor.
func (w *window) after(pos int64, channels []string) []*wire.Entry {
	at := func(i int) *wire.Entry { return w.ring[(w.start+i)%len(w.ring)] }
	i := sort.Search(w.n, func(i int) bool { return at(i).Position() > pos })
	var out []*wire.Entry
	for ; i < w.n; i++ {
		e := at(i)
		if _, ok := slices.BinarySearch(channels, e.Event().Channel); ok {
			out = append(out, e)
		}
	}
	return out
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
