package server_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
)

// TestTextThePostgresLogCannotStore: text PostgreSQL refuses (NUL, invalid
// UTF-8) is refused before it reaches either log, with the same answer on
// both: a token whose subject holds NUL is unauthenticated (it used to
// make every publish on PostgreSQL fail with internal), and a request whose
// string field is not UTF-8 is invalid_argument.
func TestTextThePostgresLogCannotStore(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			var opts []func(*server.Config)
			if b.name == "postgres" {
				opts = append(opts, func(c *server.Config) { c.DatabaseURL, c.Postgres.NotifyChannel = database(t) })
			}
			in, _ := authInstance(t, opts...)
			tok := token(t, "ann\x00", time.Hour, jwt.MapClaims{"publish": []string{"chat:*"}})
			c := newClients(in.base, http.DefaultClient, bearer(tok))
			_, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "chat:1", Data: []byte("x")}))
			if codeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "sub claim") {
				t.Fatalf("publish with a NUL in the token's sub: %v, want unauthenticated naming the sub claim", err)
			}
			restCall(t, "POST", restEvents(in.base, "chat:1"), "text/plain", []byte("x"), "Authorization", "Bearer "+tok).
				fails(t, http.StatusUnauthorized, "unauthenticated", "sub claim")

			// ListChannels{prefix: "\xff"} in the protobuf binary encoding,
			// which no well-behaved client can send.
			req, err := http.NewRequestWithContext(t.Context(), "POST", in.base+"/herald.v1.ChannelService/ListChannels",
				bytes.NewReader([]byte{3<<3 | 2, 1, 0xff}))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/proto")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// (protobuf's decoder refuses it before any handler runs; its
			// message does not name the field.)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_argument") ||
				!strings.Contains(string(body), "invalid UTF-8") {
				t.Fatalf("prefix not UTF-8 over Connect: %d %s, want 400 invalid_argument", resp.StatusCode, body)
			}
			head, err := in.srv.Log().Head(t.Context())
			if err != nil || head != 0 {
				t.Fatalf("refused requests wrote events: head %d, %v", head, err)
			}
		})
	}
}
