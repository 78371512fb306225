package server_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// TestServerCursorInvalid: a Connect stream with an invalid Herald-Cursor
// is refused with invalid_argument, as the WebSocket refuses ?cursor=, and
// is not opened live (which would skip what the client asked to resume).
func TestServerCursorInvalid(t *testing.T) {
	t.Parallel()
	in, key := authInstance(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	mustPublish(t, svc.events, "user:ann", "missed")
	tok := token(t, "ann", time.Hour, jwt.MapClaims{"channels": []string{"user:{sub}"}})
	c := openBidiAt(t, in.base, tok, "-1") // a typo'd / corrupted cursor
	// The stream reaches the server with its first message. The server may
	// refuse it before the message is written (Send then says io.EOF):
	// the refusal is what Receive reports.
	_ = c.(*bidi).s.Send(&heraldv1.ConnectRequest{Id: "open", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
	if got := c.end(t); got != "invalid_argument" {
		t.Errorf("Herald-Cursor -1: stream ended with %s, want invalid_argument", got)
	}
}
