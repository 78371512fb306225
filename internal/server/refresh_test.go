package server_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	"context"

	"github.com/coder/websocket"
	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
	"github.com/jackc/pgx/v5"
)

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
	for _, tr := range cmdTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			ch := "news:" + tr.name
			s := tr.open(t, in, token(t, "ann", 2*time.Second, perms))
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
	for _, tr := range cmdTransports {
		t.Run(tr.name+"-expires", func(t *testing.T) {
			t.Parallel()
			s := tr.open(t, in, token(t, "ann", time.Second, perms))
			s.send(t, refreshCmd("bad", token(t, "bob", time.Hour, perms)))
			if m := s.next(t); m.GetError().GetCode() != "permission_denied" {
				t.Fatalf("refresh as bob: %v", m)
			}
			if got := s.end(t); got != tr.expired {
				t.Fatalf("expired stream ended with %s, want %s", got, tr.expired)
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
	for _, tr := range cmdTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			a, b := "news:a-"+tr.name, "chat:b-"+tr.name
			s := tr.open(t, in, token(t, "ann", time.Hour, jwt.MapClaims{"subscribe": []string{"news:>", "chat:>"}}))
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
	for _, tr := range cmdTransports {
		t.Run(tr.name, func(t *testing.T) {
			// The server subscription comes first, before the answer to
			// the first command (which opens a Connect stream).
			s := tr.openAt(t, in.base, tok, "")
			s.send(t, &heraldv1.ConnectRequest{Id: "p0", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
			m := s.next(t)
			if m.Id != "@server" || len(m.GetSubscribed().GetChannels()) != 1 || m.GetSubscribed().Channels[0] != "user:ann" {
				t.Fatalf("server subscription: %v", m)
			}
			if m := s.next(t); m.Id != "p0" || m.GetPong() == nil {
				t.Fatalf("after the server subscription: %v, want the pong", m)
			}
			ev := mustPublish(t, svc.events, "user:ann", "live-"+tr.name)
			if m := s.next(t); m.Id != "@server" || m.GetEvent().GetPosition() != ev.Position {
				t.Fatalf("server event: %v, want position %d", m, ev.Position)
			}
			// Ids starting with @ are the server's.
			s.send(t, subscribeCmd("@mine", "user:ann"))
			if m := s.next(t); m.Id != "@mine" || m.GetError().GetCode() != "invalid_argument" {
				t.Fatalf("subscribe as @mine: %v", m)
			}
			// Resume: a new connection with the cursor replays what follows.
			r := tr.openAt(t, in.base, tok, strconv.FormatInt(first.Position, 10))
			r.send(t, &heraldv1.ConnectRequest{Id: "p1", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
			if m := r.next(t); m.GetSubscribed().GetCursor() != first.Position {
				t.Fatalf("resumed server subscription: %v", m)
			}
			for {
				m := r.next(t)
				if m.GetPong() != nil {
					continue
				}
				if m.GetEvent().GetPosition() <= first.Position {
					t.Fatalf("resumed server subscription replayed %v", m)
				}
				break
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

// TestRefreshRacesServerSubscription: a refresh sent as a WebSocket opens
// cannot miss the @server subscription (which once opened after the reader
// started): a refresh whose token no longer allows the server channels
// ends @server, and nothing is delivered on the old token after it expires.
func TestRefreshRacesServerSubscription(t *testing.T) {
	t.Parallel()
	dsn, schema := database(t)
	in, key := authInstance(t, func(c *server.Config) { c.DatabaseURL, c.Postgres.NotifyChannel = dsn, schema })
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	mustPublish(t, svc.events, "user:ann", "seed")

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE herald_channels IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	unlocked := make(chan struct{})
	go func() {
		defer close(unlocked)
		time.Sleep(1500 * time.Millisecond)
		_ = tx.Rollback(context.Background())
	}()
	defer func() { <-unlocked }()

	old := token(t, "ann", 3*time.Second, jwt.MapClaims{"channels": []string{"user:{sub}"}})
	narrowed := token(t, "ann", time.Hour, jwt.MapClaims{"subscribe": []string{"news:>"}})
	c, _, err := websocket.Dial(ctx, wsURL(in.base)+"?cursor=0", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + old}}, Subprotocols: []string{gateway.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	msgs := make(chan *heraldv1.ConnectResponse, 64)
	go func() {
		defer close(msgs)
		for {
			m, err := wsRead(ctx, c)
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	if err := wsWrite(ctx, c, gateway.SubprotocolJSON, refreshCmd("r", narrowed)); err != nil {
		t.Fatal(err)
	}
	<-unlocked
	// Past the OLD token's expiry (the connection lives on, refreshed),
	// publish to the channel only the old token allowed.
	time.Sleep(2 * time.Second)
	ev := mustPublish(t, svc.events, "user:ann", "after the old token expired")
	deadline := time.After(2 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("connection closed")
			}
			t.Logf("frame: %v", m)
			if m.Id == "@server" && m.GetEvent().GetPosition() == ev.Position {
				t.Fatalf("@server delivered user:ann event %d after a refresh to a token that does not allow user:ann, and after the token that allowed it expired", ev.Position)
			}
		case <-deadline:
			return // not delivered: no hole
		}
	}
}
