package server_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
)

// authorBackends configure authInstance for each event log.
var authorBackends = []struct {
	name string
	cfg  func(t *testing.T) func(*server.Config)
}{
	{"memory", func(*testing.T) func(*server.Config) { return func(*server.Config) {} }},
	{"postgres", func(t *testing.T) func(*server.Config) {
		dsn, schema := database(t)
		return func(c *server.Config) { c.DatabaseURL, c.Postgres.NotifyChannel = dsn, schema }
	}},
}

// publisherToken signs a token for user sub who may publish and subscribe
// to chat:>.
func publisherToken(t *testing.T, sub string) string {
	return token(t, sub, time.Hour, jwt.MapClaims{"publish": []string{"chat:>"}, "subscribe": []string{"chat:>"}})
}

func wantAuthor(t *testing.T, what string, ev *heraldv1.Event, want string) {
	t.Helper()
	if ev.GetAuthor() != want {
		t.Errorf("%s (position %d): author %q, want %q", what, ev.GetPosition(), ev.GetAuthor(), want)
	}
}

// TestAuthor: the server records who published each event from the
// credential (user:<sub> for a JWT, key:<name> for an API key) over every
// transport, keeps it through edits by others, hands it back on reads and
// on idempotent retries, and records the editor on UPDATED and DELETED
// entries.
func TestAuthor(t *testing.T) {
	t.Parallel()
	for _, b := range authorBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			in, key := authInstance(t, b.cfg(t))
			tok := publisherToken(t, "ann")
			const ch = "chat:1"
			var published []*heraldv1.Event // in publish order, with their authors

			// A user over Connect (and the other connect-go protocols).
			for _, p := range protocols {
				user := newClients(in.base, p.http(), append(p.opts, bearer(tok))...)
				ev := mustPublish(t, user.events, ch, p.name)
				wantAuthor(t, "user publish over "+p.name, ev, "user:ann")
				published = append(published, ev)
			}

			// The same user over REST.
			var rest heraldv1.PublishResponse
			restCall(t, "POST", restEvents(in.base, ch), "text/plain", []byte("rest"), "Authorization", "Bearer "+tok).
				ok(t, http.StatusCreated, &rest)
			wantAuthor(t, "user publish over REST", rest.Event, "user:ann")
			published = append(published, rest.Event)
			// The author is the server's to set: a body naming one is refused.
			restCall(t, "POST", restEvents(in.base, ch), "application/json", []byte(`{"data":"eA==","author":"user:bob"}`),
				"Authorization", "Bearer "+tok).fails(t, http.StatusBadRequest, "invalid_argument")

			// The same user over WebSocket (a Connect session: publishes run
			// on the session's own context).
			wc, _, err := websocket.Dial(t.Context(), wsURL(in.base), &websocket.DialOptions{
				HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}, Subprotocols: []string{gateway.SubprotocolJSON}})
			if err != nil {
				t.Fatal(err)
			}
			defer wc.CloseNow()
			if err := wsWrite(t.Context(), wc, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: "p",
				Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: ch, Data: []byte("ws")}}}); err != nil {
				t.Fatal(err)
			}
			m, err := wsRead(t.Context(), wc)
			if err != nil || m.Id != "p" || m.GetPublished() == nil {
				t.Fatalf("websocket publish: %v %v", m, err)
			}
			wantAuthor(t, "user publish over WebSocket", m.GetPublished().Event, "user:ann")
			published = append(published, m.GetPublished().Event)

			// A service with an API key.
			svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
			byKey := mustPublish(t, svc.events, ch, "service")
			wantAuthor(t, "API key publish", byKey, "key:backend")
			published = append(published, byKey)

			// Edits record the editor; the edited event keeps its author.
			user := newClients(in.base, http.DefaultClient, bearer(tok))
			up, err := svc.history.UpdateEvent(t.Context(), connect.NewRequest(&heraldv1.UpdateEventRequest{
				Channel: ch, Position: published[0].Position, Data: []byte("edited by the service")}))
			if err != nil {
				t.Fatal(err)
			}
			wantAuthor(t, "event updated by the key", up.Msg.Event, "user:ann")
			wantAuthor(t, "UPDATED entry", up.Msg.Entry, "key:backend")
			del, err := user.history.DeleteEvent(t.Context(), connect.NewRequest(&heraldv1.DeleteEventRequest{
				Channel: ch, Position: byKey.Position}))
			if err != nil {
				t.Fatal(err)
			}
			wantAuthor(t, "DELETED entry", del.Msg.Entry, "user:ann")

			// Reads hand the authors back.
			list, err := svc.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch}))
			if err != nil {
				t.Fatal(err)
			}
			wantPos := append(positions(published), up.Msg.Entry.Position, del.Msg.Entry.Position)
			equalPositions(t, positions(list.Msg.Events), wantPos)
			for i, ev := range list.Msg.Events {
				want := "user:ann"
				switch ev.Position {
				case byKey.Position, up.Msg.Entry.Position:
					want = "key:backend"
				}
				wantAuthor(t, fmt.Sprintf("ListEvents [%d]", i), ev, want)
			}
			got, err := user.history.GetEvent(t.Context(), connect.NewRequest(&heraldv1.GetEventRequest{Channel: ch, Position: published[0].Position}))
			if err != nil {
				t.Fatal(err)
			}
			wantAuthor(t, "GetEvent of the updated event", got.Msg.Event, "user:ann")

			// An idempotent retry by someone else returns the first author.
			first, err := user.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: ch, Data: []byte("once"), IdempotencyKey: "k"}))
			if err != nil {
				t.Fatal(err)
			}
			retry, err := svc.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: ch, Data: []byte("once"), IdempotencyKey: "k"}))
			if err != nil {
				t.Fatal(err)
			}
			if !retry.Msg.Duplicate || retry.Msg.Event.Position != first.Msg.Event.Position {
				t.Fatalf("retry: %v, want a duplicate of %d", retry.Msg, first.Msg.Event.Position)
			}
			wantAuthor(t, "retry by the key of the user's publish", retry.Msg.Event, "user:ann")
		})
	}
}

// TestAuthorWithoutAuth: without authentication events have no author.
func TestAuthorWithoutAuth(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			in := b.start(t)
			c := newClients(in.base, http.DefaultClient)
			ev := mustPublish(t, c.events, "chat:1", "x")
			wantAuthor(t, "publish without auth", ev, "")
			wantAuthor(t, "publish over REST without auth", restPublish(t, in.base, "chat:1", "y"), "")
			up, err := c.history.UpdateEvent(t.Context(), connect.NewRequest(&heraldv1.UpdateEventRequest{Channel: "chat:1", Position: ev.Position, Data: []byte("z")}))
			if err != nil {
				t.Fatal(err)
			}
			wantAuthor(t, "UPDATED entry without auth", up.Msg.Entry, "")
		})
	}
}
