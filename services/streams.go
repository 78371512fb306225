package services

import (
	"connectrpc.com/connect"

	"github.com/heraldrt/herald/internal/limits"
)

// Streams bounds the long-lived requests one instance holds, whatever their
// transport: Subscribe and Connect streams, WebSockets, SSE streams and
// long-polls each count as one connection. It is the per-instance
// connection limit, the classic defence of a server that holds many open
// connections; a nil *Streams admits everything.
type Streams struct{ conns *limits.Conns }

// NewStreams admits at most max concurrent streams; max ≤ 0 is unlimited.
func NewStreams(max int) *Streams {
	return &Streams{conns: limits.NewConns(max, 0)}
}

// Acquire counts one more stream, or refuses it with resource_exhausted
// (wrapping a *limits.Error). Call release when the stream ends.
func (s *Streams) Acquire() (release func(), err error) {
	if s == nil {
		return func() {}, nil
	}
	release, err = s.conns.Acquire("")
	if err != nil {
		return nil, connect.NewError(connect.CodeResourceExhausted, err)
	}
	return release, nil
}

// Open returns how many streams are open.
func (s *Streams) Open() int {
	if s == nil {
		return 0
	}
	return s.conns.Total()
}
