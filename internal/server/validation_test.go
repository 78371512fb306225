package server_test

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"bytes"
	"io"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
)

// TestBadInputIsRefusedAndWritesNothing sends invalid requests to every RPC
// over every protocol: each fails with invalid_argument and a message that
// names the field, and nothing reaches the log.
func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 129)
	big := make([]byte, 1<<20+1)
	type call func(ctx context.Context, c clients) error
	cases := []struct {
		name  string
		field string // expected in the message
		call  call
	}{
		{"publish/empty channel", "channel", func(ctx context.Context, c clients) error {
			_, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Data: []byte("x")}))
			return err
		}},
		{"publish/channel too long", "channel", func(ctx context.Context, c clients) error {
			_, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: long}))
			return err
		}},
		{"publish/channel syntax", "channel", func(ctx context.Context, c clients) error {
			_, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "has space"}))
			return err
		}},
		{"publish/type syntax", "type", func(ctx context.Context, c clients) error {
			_, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "ok", Type: "no spaces"}))
			return err
		}},
		{"publish/data too large", "data", func(ctx context.Context, c clients) error {
			_, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "ok", Data: big}))
			return err
		}},
		{"publish/idempotency key", "idempotency_key", func(ctx context.Context, c clients) error {
			_, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "ok", IdempotencyKey: "tab\tkey"}))
			return err
		}},
		{"subscribe/no channels", "channels", func(ctx context.Context, c clients) error {
			return firstStreamErr(c.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{})))
		}},
		{"subscribe/duplicate channels", "channels", func(ctx context.Context, c clients) error {
			return firstStreamErr(c.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"a", "a"}})))
		}},
		{"subscribe/negative cursor", "cursor", func(ctx context.Context, c clients) error {
			return firstStreamErr(c.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"a"}, Cursor: ptr(int64(-1))})))
		}},
		{"list events/negative limit", "limit", func(ctx context.Context, c clients) error {
			_, err := c.history.ListEvents(ctx, connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "ok", Limit: -1}))
			return err
		}},
		{"list events/direction", "direction", func(ctx context.Context, c clients) error {
			_, err := c.history.ListEvents(ctx, connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "ok", Direction: 9}))
			return err
		}},
		{"get event/position", "position", func(ctx context.Context, c clients) error {
			_, err := c.history.GetEvent(ctx, connect.NewRequest(&heraldv1.GetEventRequest{Channel: "ok"}))
			return err
		}},
		{"update event/channel", "channel", func(ctx context.Context, c clients) error {
			_, err := c.history.UpdateEvent(ctx, connect.NewRequest(&heraldv1.UpdateEventRequest{Channel: "", Position: 1}))
			return err
		}},
		{"delete event/position", "position", func(ctx context.Context, c clients) error {
			_, err := c.history.DeleteEvent(ctx, connect.NewRequest(&heraldv1.DeleteEventRequest{Channel: "ok", Position: -3}))
			return err
		}},
		{"create channel/name", "name", func(ctx context.Context, c clients) error {
			_, err := c.channels.CreateChannel(ctx, connect.NewRequest(&heraldv1.CreateChannelRequest{Name: "-leading-dash"}))
			return err
		}},
		{"create channel/max event size", "max_event_size", func(ctx context.Context, c clients) error {
			_, err := c.channels.CreateChannel(ctx, connect.NewRequest(&heraldv1.CreateChannelRequest{Name: "ok", Settings: &heraldv1.ChannelSettings{MaxEventSize: ptr(int32(2 << 20))}}))
			return err
		}},
		{"create channel/max age", "max_age", func(ctx context.Context, c clients) error {
			_, err := c.channels.CreateChannel(ctx, connect.NewRequest(&heraldv1.CreateChannelRequest{Name: "ok", Settings: &heraldv1.ChannelSettings{MaxAge: durationpb.New(-1e9)}}))
			return err
		}},
		{"get channel/name", "name", func(ctx context.Context, c clients) error {
			_, err := c.channels.GetChannel(ctx, connect.NewRequest(&heraldv1.GetChannelRequest{}))
			return err
		}},
		{"list channels/page size", "page_size", func(ctx context.Context, c clients) error {
			_, err := c.channels.ListChannels(ctx, connect.NewRequest(&heraldv1.ListChannelsRequest{PageSize: -1}))
			return err
		}},
		// PostgreSQL cannot compare text with NUL in it: refused on both logs.
		{"list channels/NUL in page token", "page_token: must not contain NUL", func(ctx context.Context, c clients) error {
			_, err := c.channels.ListChannels(ctx, connect.NewRequest(&heraldv1.ListChannelsRequest{PageToken: "a\x00b"}))
			return err
		}},
		{"list channels/NUL in prefix", "prefix: must not contain NUL", func(ctx context.Context, c clients) error {
			_, err := c.channels.ListChannels(ctx, connect.NewRequest(&heraldv1.ListChannelsRequest{Prefix: "\x00"}))
			return err
		}},
		{"publish/space in idempotency key", "spaces and control characters are not allowed", func(ctx context.Context, c clients) error {
			_, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "ok", IdempotencyKey: "my key"}))
			return err
		}},
		{"update channel/no settings", "settings", func(ctx context.Context, c clients) error {
			_, err := c.channels.UpdateChannel(ctx, connect.NewRequest(&heraldv1.UpdateChannelRequest{Name: "ok"}))
			return err
		}},
		{"update channel/max events", "max_events", func(ctx context.Context, c clients) error {
			_, err := c.channels.UpdateChannel(ctx, connect.NewRequest(&heraldv1.UpdateChannelRequest{Name: "ok", Settings: &heraldv1.ChannelSettings{MaxEvents: ptr(int64(-5))}}))
			return err
		}},
		{"delete channel/name", "name", func(ctx context.Context, c clients) error {
			_, err := c.channels.DeleteChannel(ctx, connect.NewRequest(&heraldv1.DeleteChannelRequest{Name: long}))
			return err
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			in := b.start(t)
			for _, p := range protocols {
				t.Run(p.name, func(t *testing.T) {
					c := newClients(in.base, p.http(), p.opts...)
					for _, tc := range cases {
						err := tc.call(t.Context(), c)
						if codeOf(err) != connect.CodeInvalidArgument {
							t.Errorf("%s: got %v, want invalid_argument", tc.name, err)
							continue
						}
						if !strings.Contains(err.Error(), tc.field) {
							t.Errorf("%s: message %q does not name %q", tc.name, err, tc.field)
						}
					}
					list, err := c.channels.ListChannels(t.Context(), connect.NewRequest(&heraldv1.ListChannelsRequest{}))
					if err != nil {
						t.Fatal(err)
					}
					if len(list.Msg.Channels) != 0 {
						t.Fatalf("bad requests wrote channels: %v", list.Msg.Channels)
					}
					head, err := in.srv.Log().Head(t.Context())
					if err != nil || head != 0 {
						t.Fatalf("bad requests wrote events: head %d, %v", head, err)
					}
				})
			}
		})
	}
}

// firstStreamErr returns the error a server stream ends with before any
// message, or nil when a message arrives.
func firstStreamErr(s *connect.ServerStreamForClient[heraldv1.SubscribeResponse], err error) error {
	if err != nil {
		return err
	}
	defer s.Close()
	if s.Receive() {
		return nil
	}
	return s.Err()
}

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
