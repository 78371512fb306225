package services

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/limits"
)

// MaxChannelsCeiling is the most channels one request may name whatever
// the configuration: the max_items rule of SubscribeRequest.channels and
// PollRequest.channels in proto/herald/v1. A configured
// limits.Limits.MaxChannelsPerRequest must not exceed it.
const MaxChannelsCeiling = 100

// Streams bounds the long-lived requests one instance holds, whatever their
// transport: Subscribe and Connect streams, WebSockets, SSE streams and
// long-polls each count as one connection. It enforces the per-instance
// connection limit, the classic defence of a server that holds many open
// connections, and the per-user one, so that one end user cannot hold the
// instance's connections. A nil *Streams admits everything. It is safe for
// concurrent use.
type Streams struct{ conns *limits.Conns }

// NewStreams admits at most maxInstance concurrent streams in all and
// maxPerUser per end user; a limit ≤ 0 is unlimited.
func NewStreams(maxInstance, maxPerUser int) *Streams {
	return &Streams{conns: limits.NewConns(maxInstance, maxPerUser)}
}

// Acquire counts one more stream for the caller identified in ctx, or
// refuses it with resource_exhausted (wrapping a *limits.Error that names
// the limit). Call release when the stream ends.
//
// End users (JWT identities) are counted under their name. API keys are
// not: one key is typically a whole backend service, whose connections the
// instance limit bounds. Anonymous callers are not either: they have no
// stable name, and the instance limit bounds them.
func (s *Streams) Acquire(ctx context.Context) (release func(), err error) {
	if s == nil {
		return func() {}, nil
	}
	var user string
	if id, on := auth.FromContext(ctx); on && id.Kind() == auth.User {
		user = id.Name()
	}
	release, err = s.conns.Acquire(user)
	if err != nil {
		var lim *limits.Error
		if errors.As(err, &lim) && lim.Limit == limits.LimitConnectionsPerUser {
			// Say what counts: a browser user rarely knows.
			err = fmt.Errorf("%w (every tab, device and stream of this user on this server counts)", err)
		}
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

// WithConnectionLimits sets what one connection and one request may do:
//   - l.PublishPerConnection: the publish rate of each Connect stream and
//     WebSocket of an end user or anonymous client (API keys and servers
//     without authentication are not limited, as for the user rate);
//   - l.MaxSubscriptionsPerConnection: the channels their subscriptions
//     may hold together;
//   - l.MaxChannelsPerRequest: the channels one Subscribe, Poll, SSE
//     request or subscribe command may name.
//
// The other fields of l are not used here: the connection counts are
// WithStreams', the user rate WithUserPublishRate's. A new service has
// limits.Defaults(). Call it before serving.
func (s *EventService) WithConnectionLimits(l limits.Limits) *EventService {
	s.conn = l
	return s
}

// CheckChannels refuses, with invalid_argument, a request that names more
// channels than MaxChannelsPerRequest. Transports that reach the
// subscription core directly (SSE) call it; the RPCs check it themselves.
func (s *EventService) CheckChannels(n int) error {
	if err := s.conn.CheckChannels(n); err != nil {
		// The request's shape is at fault, as for the proto's own ceiling:
		// retrying it unchanged never succeeds.
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid request: channels: %w", err))
	}
	return nil
}
