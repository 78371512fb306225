package services

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/ephemeral"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
)

// Ephemeral carries signals and presence between instances
// (internal/ephemeral: Postgres or Memory). Messages it hears from any
// instance come back through App.Deliver.
type Ephemeral interface {
	Send(ctx context.Context, m ephemeral.Message) error
	Join(ctx context.Context, channel string, m ephemeral.Member) error
	Leave(ctx context.Context, channel, clientID string) error
	Members(ctx context.Context, channel, after string, limit int) (ephemeral.Page, error)
}

// Signal limits.
const (
	// MaxSignalBytes bounds a signal's data (the proto's rule says the
	// same): signals travel in a NOTIFY payload.
	MaxSignalBytes = 4096
	// presenceSnapshotMax bounds the joins a subscription asking for
	// presence starts with, per channel; larger sets are read with
	// GetPresence.
	presenceSnapshotMax = 10_000
	// leaveTimeout bounds the leave of an ending subscription.
	leaveTimeout = 5 * time.Second
)

// DefaultSignalRate is each user's signal rate (per network address for
// anonymous callers; API keys are not limited).
var DefaultSignalRate = limits.Rate{PerSecond: 20, Burst: 40}

// Deliver hands a message heard from any instance to this instance's
// subscribers: a signal to every subscriber of its channel, a join or leave
// to those that asked for presence. It is converted to its API form once,
// shared by every subscriber. Safe from any goroutine; never blocks.
func (a *App) Deliver(m ephemeral.Message) {
	switch m.Kind {
	case ephemeral.Signal:
		a.hub.Broadcast(m.Channel, &heraldv1.Signal{
			Channel: m.Channel, Type: m.Type, Data: m.Data, Format: heraldv1.DataFormat(m.Format),
			Author: m.Author, Time: timestamppb.New(m.Time()),
		}, false)
	case ephemeral.Join, ephemeral.Leave:
		a.hub.Broadcast(m.Channel, presenceChange(m.Channel, m.Kind, m.Member), true)
	}
}

func presenceChange(channel string, k ephemeral.Kind, m ephemeral.Member) *heraldv1.PresenceChange {
	act := heraldv1.PresenceAction_PRESENCE_ACTION_JOIN
	if k == ephemeral.Leave {
		act = heraldv1.PresenceAction_PRESENCE_ACTION_LEAVE
	}
	return &heraldv1.PresenceChange{Channel: channel, Action: act, Member: memberProto(m)}
}

func memberProto(m ephemeral.Member) *heraldv1.PresenceMember {
	return &heraldv1.PresenceMember{ClientId: m.ClientID, User: m.User, Info: m.Info, JoinTime: timestamppb.New(m.Joined())}
}

// Signal sends an ephemeral publish to the current subscribers of the
// channel on every instance.
func (a *App) Signal(ctx context.Context, req *heraldv1.SignalRequest) (*heraldv1.SignalResponse, error) {
	pol, err := a.policy(ctx, actPublish, req.Channel)
	if err != nil {
		return nil, err
	}
	if !pol.Signals {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"signals are off for channel %q: its namespace %q does not allow them (\"signals\": true in the namespace policy)", req.Channel, pol.Name))
	}
	if err := a.checkSignalRate(ctx); err != nil {
		return nil, err
	}
	if err := checkData(req.Format, req.Data); err != nil {
		return nil, err
	}
	m := ephemeral.Message{Kind: ephemeral.Signal, Channel: req.Channel, Type: req.Type, Data: req.Data,
		Format: int32(req.Format), Author: authorOf(ctx), TimeMicros: time.Now().UnixMicro()}
	if err := a.eph.Send(ctx, m); err != nil {
		if errors.Is(err, ephemeral.ErrTooLarge) {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
		return nil, toConnect(a.logger, "signal", fmt.Errorf("%w: %w", eventlog.ErrUnavailable, err))
	}
	return &heraldv1.SignalResponse{}, nil
}

// checkSignalRate takes one signal from the caller's bucket: an end user's
// across connections, an anonymous caller's network address's.
func (a *App) checkSignalRate(ctx context.Context) error {
	id, on := auth.FromContext(ctx)
	var key string
	switch {
	case on && id.Kind() == auth.User:
		key = "user:" + id.Name()
	case on && id.Kind() == auth.APIKey:
		return nil // services
	default:
		host, _ := ctx.Value(peerKey{}).(string)
		key = "addr:" + host
	}
	if ok, wait := a.signalRates.Take(key, time.Now(), 1); !ok {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"signal rate exceeded (%g per second, burst %d, per user): retry in %v", a.cfg.SignalRate.PerSecond, a.cfg.SignalRate.Burst, wait.Round(time.Millisecond)))
	}
	return nil
}

// GetPresence returns a page of a channel's presence set.
func (a *App) GetPresence(ctx context.Context, req *heraldv1.GetPresenceRequest) (*heraldv1.GetPresenceResponse, error) {
	if err := a.authorizePresence(ctx, req.Channel); err != nil {
		return nil, err
	}
	limit := int(req.Limit)
	if limit == 0 {
		limit = DefaultPageSize
	}
	page, err := a.eph.Members(ctx, req.Channel, req.PageToken, limit)
	if err != nil {
		return nil, toConnect(a.logger, "get presence", fmt.Errorf("%w: %w", eventlog.ErrUnavailable, err))
	}
	resp := &heraldv1.GetPresenceResponse{Count: page.Count}
	for _, m := range page.Members {
		resp.Members = append(resp.Members, memberProto(m))
	}
	if page.More && len(page.Members) > 0 {
		resp.NextPageToken = page.Members[len(page.Members)-1].ClientID
	}
	return resp, nil
}

// authorizePresence checks that presence is on for the channel and that
// the caller may read it.
func (a *App) authorizePresence(ctx context.Context, ch string) error {
	pol, err := a.cfg.Namespaces.For(ch)
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	if pol.Presence == "" {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"presence is off for channel %q: its namespace %q does not turn it on (\"presence\" in the namespace policy)", ch, pol.Name))
	}
	if id, on := auth.FromContext(ctx); on {
		if v := pol.Allow(id, namespace.ReadPresence, ch); v != namespace.Allowed {
			return refusal(id, "read the presence of", ch, pol, v)
		}
	}
	return nil
}

// membership is a subscription's place in the presence sets of its
// channels whose namespace has presence on.
type membership struct {
	a        *App
	clientID string
	channels []string
}

// joinPresence makes sub a member of the presence sets of its channels
// that have presence on and, when want, has it receive their presence: the
// current members as joins, then every change. It returns nil when none of
// the channels has presence on. The membership must be left.
func (a *App) joinPresence(ctx context.Context, sub *fanout.Subscription, want bool) (*membership, error) {
	var chs []string
	for _, ch := range sub.Channels() {
		if pol, err := a.cfg.Namespaces.For(ch); err == nil && pol.Presence != "" {
			chs = append(chs, ch)
		}
	}
	if len(chs) == 0 {
		return nil, nil
	}
	if want {
		for _, ch := range chs {
			if err := a.authorizePresence(ctx, ch); err != nil {
				return nil, err
			}
		}
		sub.WantPresence() // changes from now on are queued behind the snapshot
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	m := &membership{a: a, clientID: hex.EncodeToString(b[:])}
	id, on := auth.FromContext(ctx)
	mem := ephemeral.Member{ClientID: m.clientID, JoinMicros: time.Now().UnixMicro()}
	if on && id.Kind() != auth.Anonymous {
		mem.User, mem.Info = id.Name(), id.Info()
	}
	for _, ch := range chs {
		if err := a.eph.Join(ctx, ch, mem); err != nil {
			m.leave()
			return nil, toConnect(a.logger, "join presence", fmt.Errorf("%w: %w", eventlog.ErrUnavailable, err))
		}
		m.channels = append(m.channels, ch)
	}
	if want {
		var snap []any
		for _, ch := range chs {
			after := ""
			for len(snap) < presenceSnapshotMax {
				page, err := a.eph.Members(ctx, ch, after, min(MaxPageSize, presenceSnapshotMax-len(snap)))
				if err != nil {
					m.leave()
					return nil, toConnect(a.logger, "read presence", fmt.Errorf("%w: %w", eventlog.ErrUnavailable, err))
				}
				for _, mm := range page.Members {
					snap = append(snap, presenceChange(ch, ephemeral.Join, mm))
				}
				if !page.More || len(page.Members) == 0 {
					break
				}
				after = page.Members[len(page.Members)-1].ClientID
			}
		}
		sub.Prepend(snap)
	}
	return m, nil
}

// PresenceMissed ends every subscription that receives presence: joins or
// leaves may have been missed (the signal listener lost its connection).
// They end as unavailable with their last position; a client resumes
// from it, and gets the sets afresh.
func (a *App) PresenceMissed() {
	if n := a.hub.EndPresence(); n > 0 {
		a.logger.Warn("presence: subscriptions receiving presence ended after the signal listener reconnected (changes may have been missed); clients resume", "count", n)
	}
}

// Abandon makes the application stop leaving presence sets: the instance
// is being killed (a crash, in failure tests), and its members are left to
// the other instances to remove once its heartbeat stops.
func (a *App) Abandon() { a.abandoned.Store(true) }

// ClientID is the membership's client id ("" for none).
func (m *membership) ClientID() string {
	if m == nil {
		return ""
	}
	return m.clientID
}

// leave removes the subscription from its presence sets (a leave for each
// to their subscribers). Safe on nil.
func (m *membership) leave() {
	if m == nil || m.a.abandoned.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	for _, ch := range m.channels {
		if err := m.a.eph.Leave(ctx, ch, m.clientID); err != nil {
			// Retried by RetryLeaves (every heartbeat); should this
			// instance die first, the others remove the member.
			m.a.logger.Warn("presence leave failed; retrying at the next heartbeat", "channel", ch, "err", err)
			m.a.leavesMu.Lock()
			m.a.failedLeaves = append(m.a.failedLeaves, failedLeave{ch, m.clientID})
			m.a.leavesMu.Unlock()
		}
	}
	m.channels = nil
}

// failedLeave is a leave to retry.
type failedLeave struct{ channel, clientID string }

// maxFailedLeaves bounds the leaves kept for retry; past it the oldest are
// left to the other instances (after this one stops heartbeating).
const maxFailedLeaves = 100_000

// RetryLeaves retries the leaves that failed (the database was
// unreachable), so that members of closed subscriptions do not stay in the
// set while this instance lives. The server calls it at every heartbeat.
func (a *App) RetryLeaves(ctx context.Context) {
	a.leavesMu.Lock()
	todo := a.failedLeaves
	a.failedLeaves = nil
	a.leavesMu.Unlock()
	var again []failedLeave
	for i, l := range todo {
		if err := a.eph.Leave(ctx, l.channel, l.clientID); err != nil {
			again = todo[i:]
			break
		}
	}
	if len(again) > 0 {
		a.leavesMu.Lock()
		a.failedLeaves = append(again, a.failedLeaves...)
		if n := len(a.failedLeaves); n > maxFailedLeaves {
			a.failedLeaves = a.failedLeaves[n-maxFailedLeaves:]
		}
		a.leavesMu.Unlock()
	}
}

type presenceService struct{ a *App }

var _ heraldv1connect.PresenceServiceHandler = presenceService{}

func (s presenceService) GetPresence(ctx context.Context, req *connect.Request[heraldv1.GetPresenceRequest]) (*connect.Response[heraldv1.GetPresenceResponse], error) {
	return respond(s.a.GetPresence(ctx, req.Msg))
}
