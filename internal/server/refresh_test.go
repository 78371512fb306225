package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// session is a bidirectional stream of ConnectRequest/ConnectResponse: the
// Connect RPC over gRPC, or a WebSocket.
type session interface {
	send(t *testing.T, req *heraldv1.ConnectRequest)
	next(t *testing.T) *heraldv1.ConnectResponse
	// end waits for the stream to end and returns the RPC code, or the
	// WebSocket close status as "close <n>".
	end(t *testing.T) string
}

type rpcSession struct {
	st   *connect.BidiStreamForClient[heraldv1.ConnectRequest, heraldv1.ConnectResponse]
	msgs chan *heraldv1.ConnectResponse
	err  chan error
}

func openRPCSession(t *testing.T, base, token, cursor string) session {
	t.Helper()
	c := newClients(base, h2cClient(), connect.WithGRPC(), bearer(token))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st := c.events.Connect(ctx)
	if cursor != "" {
		st.RequestHeader().Set("Herald-Cursor", cursor)
	}
	// The stream opens with the first message; a ping makes it open now.
	if err := st.Send(&heraldv1.ConnectRequest{Id: "open", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}}); err != nil {
		t.Fatal(err)
	}
	s := &rpcSession{st: st, msgs: make(chan *heraldv1.ConnectResponse, 1024), err: make(chan error, 1)}
	go func() {
		for {
			m, err := st.Receive()
			if err != nil {
				s.err <- err
				return
			}
			if m.Id != "open" {
				s.msgs <- m
			}
		}
	}()
	return s
}

func (s *rpcSession) send(t *testing.T, req *heraldv1.ConnectRequest) {
	t.Helper()
	if err := s.st.Send(req); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func (s *rpcSession) next(t *testing.T) *heraldv1.ConnectResponse {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case err := <-s.err:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

func (s *rpcSession) end(t *testing.T) string {
	t.Helper()
	for {
		select {
		case <-s.msgs:
		case err := <-s.err:
			return codeOf(err).String()
		case <-time.After(15 * time.Second):
			t.Fatal("stream not ended within 15s")
		}
	}
}

type wsSession struct{ *wsClient }

func openWSSession(t *testing.T, base, token, cursor string) session {
	t.Helper()
	u := wsURL(base)
	if cursor != "" {
		u += "?cursor=" + cursor
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}, Subprotocols: []string{gateway.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	w := &wsClient{c: c, proto: gateway.SubprotocolJSON, msgs: make(chan *heraldv1.ConnectResponse, 1024), err: make(chan error, 1)}
	t.Cleanup(func() { c.CloseNow() })
	go func() {
		for {
			m, err := wsRead(ctx, c)
			if err != nil {
				w.err <- err
				return
			}
			w.msgs <- m
		}
	}()
	return wsSession{w}
}

func (s wsSession) end(t *testing.T) string {
	return "close " + strconv.Itoa(int(websocket.CloseStatus(s.closed(t))))
}

var sessionKinds = []struct {
	name    string
	open    func(t *testing.T, base, token, cursor string) session
	expired string
}{
	{"grpc", openRPCSession, "unauthenticated"},
	{"ws", openWSSession, "close 1008"},
}

// token signs a token for sub valid for d with extra claims.
func token(t *testing.T, sub string, d time.Duration, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(d).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func refreshCmd(id, tok string) *heraldv1.ConnectRequest {
	return &heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Refresh{Refresh: &heraldv1.RefreshCommand{Token: tok}}}
}

// TestRefreshInPlace: a stream whose token is refreshed before expiry
// outlives the first token, without reconnecting; refreshes that are
// refused leave the old token in force, and its expiry then ends the
// stream with the expiry code.
func TestRefreshInPlace(t *testing.T) {
	t.Parallel()
	in, key := authInstance(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	perms := jwt.MapClaims{"subscribe": []string{"news:>"}}
	for _, k := range sessionKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			ch := "news:" + k.name
			s := k.open(t, in.base, token(t, "ann", 2*time.Second, perms), "")
			s.send(t, subscribeCmd("s", ch))
			if m := s.next(t); m.GetSubscribed() == nil {
				t.Fatalf("subscribe: %v", m)
			}
			// Refused refreshes: another subject, a bad token, an API key.
			for _, bad := range []struct{ tok, code string }{
				{token(t, "bob", time.Hour, perms), "permission_denied"},
				{"not-a-token", "unauthenticated"},
				{key, "permission_denied"},
			} {
				s.send(t, refreshCmd("bad", bad.tok))
				if m := s.next(t); m.Id != "bad" || m.GetError().GetCode() != bad.code {
					t.Fatalf("refresh with %s: %v, want %s", bad.code, m, bad.code)
				}
			}
			fresh := token(t, "ann", time.Hour, perms)
			s.send(t, refreshCmd("r", fresh))
			m := s.next(t)
			if m.Id != "r" || m.GetRefreshed() == nil || time.Until(m.GetRefreshed().ExpireTime.AsTime()) < 50*time.Minute {
				t.Fatalf("refresh: %v", m)
			}
			// Past the first token's expiry, the stream still delivers.
			time.Sleep(2500 * time.Millisecond)
			ev := mustPublish(t, svc.events, ch, "after")
			if m := s.next(t); m.GetEvent().GetPosition() != ev.Position {
				t.Fatalf("after the first expiry: %v, want the event at %d", m, ev.Position)
			}
		})
	}
	// Without a valid refresh, expiry ends the stream as before.
	for _, k := range sessionKinds {
		t.Run(k.name+"-expires", func(t *testing.T) {
			t.Parallel()
			s := k.open(t, in.base, token(t, "ann", time.Second, perms), "")
			s.send(t, refreshCmd("bad", token(t, "bob", time.Hour, perms)))
			if m := s.next(t); m.GetError().GetCode() != "permission_denied" {
				t.Fatalf("refresh as bob: %v", m)
			}
			if got := s.end(t); got != k.expired {
				t.Fatalf("expired stream ended with %s, want %s", got, k.expired)
			}
		})
	}
}

// TestRefreshNarrows: subscriptions the refreshed token no longer allows
// end with permission_denied; the others go on.
func TestRefreshNarrows(t *testing.T) {
	t.Parallel()
	in, key := authInstance(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	for _, k := range sessionKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			a, b := "news:a-"+k.name, "chat:b-"+k.name
			s := k.open(t, in.base, token(t, "ann", time.Hour, jwt.MapClaims{"subscribe": []string{"news:>", "chat:>"}}), "")
			s.send(t, subscribeCmd("a", a))
			s.send(t, subscribeCmd("b", b))
			for range 2 {
				if m := s.next(t); m.GetSubscribed() == nil {
					t.Fatalf("subscribe: %v", m)
				}
			}
			s.send(t, refreshCmd("r", token(t, "ann", time.Hour, jwt.MapClaims{"subscribe": []string{"news:>"}})))
			var ended, refreshed bool
			for !ended || !refreshed {
				m := s.next(t)
				switch {
				case m.Id == "b" && m.GetError().GetCode() == "permission_denied":
					ended = true
				case m.Id == "r" && m.GetRefreshed() != nil:
					refreshed = true
				default:
					t.Fatalf("unexpected %v", m)
				}
			}
			mustPublish(t, svc.events, b, "gone")
			ev := mustPublish(t, svc.events, a, "kept")
			if m := s.next(t); m.Id != "a" || m.GetEvent().GetPosition() != ev.Position {
				t.Fatalf("got %v, want the event of a at %d only", m, ev.Position)
			}
		})
	}
}

// TestServerChannels: a token's channels claim subscribes the connection
// without asking ("@server" on sessions; SSE and long-poll without a
// channel parameter), and the server subscription resumes from a cursor.
func TestServerChannels(t *testing.T) {
	t.Parallel()
	in, key := authInstance(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	tok := token(t, "ann", time.Hour, jwt.MapClaims{"channels": []string{"user:{sub}"}})
	first := mustPublish(t, svc.events, "user:ann", "one")
	for _, k := range sessionKinds {
		t.Run(k.name, func(t *testing.T) {
			s := k.open(t, in.base, tok, "")
			m := s.next(t)
			if m.Id != "@server" || len(m.GetSubscribed().GetChannels()) != 1 || m.GetSubscribed().Channels[0] != "user:ann" {
				t.Fatalf("server subscription: %v", m)
			}
			ev := mustPublish(t, svc.events, "user:ann", "live-"+k.name)
			if m := s.next(t); m.Id != "@server" || m.GetEvent().GetPosition() != ev.Position {
				t.Fatalf("server event: %v, want position %d", m, ev.Position)
			}
			// Ids starting with @ are the server's.
			s.send(t, subscribeCmd("@mine", "user:ann"))
			if m := s.next(t); m.Id != "@mine" || m.GetError().GetCode() != "invalid_argument" {
				t.Fatalf("subscribe as @mine: %v", m)
			}
			// Resume: a new connection with the cursor replays what follows.
			r := k.open(t, in.base, tok, strconv.FormatInt(first.Position, 10))
			if m := r.next(t); m.GetSubscribed().GetCursor() != first.Position {
				t.Fatalf("resumed server subscription: %v", m)
			}
			if m := r.next(t); m.GetEvent().GetPosition() <= first.Position {
				t.Fatalf("resumed server subscription replayed %v", m)
			}
		})
	}
	// SSE without a channel parameter streams the token's channels.
	sse := getSSE(t, http.DefaultClient, in.base+"/v1/sse?last_event_id=0&access_token="+url.QueryEscape(tok), nil)
	if sse.resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE: %s", sse.resp.Status)
	}
	for {
		if e := sse.next(t); e.id == strconv.FormatInt(first.Position, 10) && e.event != "@subscribed" {
			break
		}
	}
	// So does long-poll.
	var pr heraldv1.PollResponse
	restCall(t, "GET", in.base+"/v1/events?cursor=0", "", nil, "Authorization", "Bearer "+tok).ok(t, 200, &pr)
	if len(pr.Events) == 0 || pr.Events[0].Position != first.Position {
		t.Fatalf("long-poll: %v", &pr)
	}
	// Without such a token, naming no channel is an error.
	restCall(t, "GET", in.base+"/v1/events?cursor=0", "", nil, "Authorization", "Bearer "+key).fails(t, 400, "invalid_argument", "channel")
	resp, err := http.Get(in.base + "/v1/sse?access_token=" + url.QueryEscape(token(t, "bob", time.Hour, nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("SSE without channels: %s", resp.Status)
	}
}
