package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
)

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
