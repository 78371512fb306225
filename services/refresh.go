package services

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// serverPrefix starts the ids of subscriptions the server opens; clients
// may not use it. ServerSubscription is the id of the subscription to the
// token's "channels" claim.
const (
	serverPrefix       = "@"
	ServerSubscription = "@server"
)

// ServerCursorHeader is the request header (Connect RPC) carrying the
// position the server subscription resumes after; the WebSocket gateway
// takes the "cursor" query parameter instead.
const ServerCursorHeader = "Herald-Cursor"

// ParseServerCursor parses the server subscription's cursor: "" is none.
func ParseServerCursor(v string) (*int64, error) {
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cursor %q (the cursor parameter or %s header) is not a position (a non-negative integer)", v, ServerCursorHeader))
	}
	return &n, nil
}

// subscribeServerChannels subscribes the session to the channels its token
// lists ("channels" claim) as ServerSubscription, replaying after its
// cursor when given, else live. It does nothing when the token lists none.
func (ss *Session) subscribeServerChannels() {
	chs := ss.identity().Channels()
	if len(chs) == 0 {
		return
	}
	// The claim was checked when the token was verified; the namespace
	// rules (refuseUnknown) still apply.
	if err := ss.app.authorize(ss.authCtx(), actSubscribe, chs...); err != nil {
		ss.emit(ss.errorFrame(ServerSubscription, "subscribe", err))
		return
	}
	ss.subscribe(ServerSubscription, &heraldv1.SubscribeRequest{Channels: chs, Cursor: ss.cursor})
}

// refresh swaps the session's token for a fresh one of the same subject.
// The old token stays in force when the new one is refused.
func (ss *Session) refresh(id, token string) {
	fail := func(code connect.Code, format string, args ...any) {
		ss.emit(ss.errorFrame(id, "refresh", connect.NewError(code, fmt.Errorf(format, args...))))
	}
	if !ss.authOn || ss.app.cfg.Auth == nil {
		fail(connect.CodeFailedPrecondition, "refresh: this server does not authenticate, there is no token to refresh")
		return
	}
	nid, err := ss.app.cfg.Auth.Authenticate(token)
	if err != nil {
		fail(connect.CodeUnauthenticated, "refresh refused, the current token stays in force until it expires: %v", err)
		return
	}
	cur := ss.identity()
	if nid.Kind() != cur.Kind() || nid.Name() != cur.Name() {
		fail(connect.CodePermissionDenied, "refresh refused: the new credential must be for the same %s %q; open a new connection to change identity", cur.Kind(), cur.Name())
		return
	}
	ss.mu.Lock()
	if ss.expTimer != nil && !ss.expTimer.Stop() {
		ss.mu.Unlock()
		fail(connect.CodeUnauthenticated, "refresh came too late: the token already expired; reconnect with the new token")
		return
	}
	ss.id = nid
	ss.expTimer = nil
	if exp := nid.Expires(); !exp.IsZero() {
		ss.expTimer = time.AfterFunc(time.Until(exp), ss.expire)
	}
	ss.mu.Unlock()

	// What the new token no longer allows ends.
	actx := ss.authCtx()
	ss.mu.Lock()
	var revoked []string
	for sid, e := range ss.subs {
		if ss.app.authorize(actx, actSubscribe, e.sub.Channels()...) != nil {
			revoked = append(revoked, sid)
		}
	}
	ss.mu.Unlock()
	for _, sid := range revoked {
		ss.revoke(sid, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("subscription %q ended: the refreshed token no longer allows its channels", sid)))
	}
	resp := &heraldv1.Refreshed{}
	if exp := nid.Expires(); !exp.IsZero() {
		resp.ExpireTime = timestamppb.New(exp)
	}
	ss.emit(msgFrame(&heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Refreshed{Refreshed: resp}}))
}

// revoke ends subscription sid with err as its last frame.
func (ss *Session) revoke(sid string, err error) {
	ss.mu.Lock()
	entry := ss.subs[sid]
	delete(ss.subs, sid)
	ss.mu.Unlock()
	if entry == nil {
		return
	}
	ss.end(entry, ss.errorFrame(sid, "subscribe", err))
}

// isServerID reports an id reserved for the server.
func isServerID(id string) bool { return strings.HasPrefix(id, serverPrefix) }
