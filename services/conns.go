package services

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/metrics"
)

// ErrDisconnected ends a connection an operator disconnected (the admin
// API's Disconnect): the client may reconnect and resume.
var ErrDisconnected = connect.NewError(connect.CodeAborted,
	errors.New("disconnected by an operator; reconnect and resume from your last positions"))

// errDisconnected stops a stream for Disconnect.
var errDisconnected error = stopCause{"disconnected by an operator", metrics.EndDisconnected}

// connRegistry lists the instance's long-lived connections for the admin
// API. Safe for concurrent use.
type connRegistry struct {
	mu    sync.Mutex
	next  atomic.Uint64
	conns map[uint64]*connEntry
}

type connEntry struct {
	id        uint64
	transport string
	user      string
	remote    string
	start     time.Time
	counts    func() (subs, channels int) // safe from any goroutine
	stop      func()                      // ends the connection; safe from any goroutine
}

// add registers a connection of the caller in ctx and returns the
// function that removes it.
func (r *connRegistry) add(ctx context.Context, counts func() (int, int), stop func()) (remove func()) {
	e := &connEntry{
		id: r.next.Add(1), transport: metrics.TransportOf(ctx), start: time.Now(),
		counts: counts, stop: stop,
	}
	if id, on := auth.FromContext(ctx); on {
		e.user = id.Name()
	}
	e.remote, _ = ctx.Value(peerKey{}).(string)
	r.mu.Lock()
	if r.conns == nil {
		r.conns = make(map[uint64]*connEntry)
	}
	r.conns[e.id] = e
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.conns, e.id)
		r.mu.Unlock()
	}
}

func (r *connRegistry) list() []*connEntry {
	r.mu.Lock()
	out := make([]*connEntry, 0, len(r.conns))
	for _, e := range r.conns {
		out = append(out, e)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b *connEntry) int { return int(a.id) - int(b.id) })
	return out
}

func (r *connRegistry) get(id uint64) *connEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[id]
}
