package server_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
)

const testNamespaces = `{
  "namespaces": {
    "news":  {"subscribe": "anonymous", "publish": "services"},
    "lobby": {"subscribe": "authenticated", "history": "authenticated", "publish": "authenticated"},
    "chat":  {"edit": "author", "maxEventSize": 64, "maxEvents": 500, "maxAge": "24h"}
  },
  "refuseUnknown": true
}`

// nsInstance runs an authenticating instance on PostgreSQL with the test
// namespaces.
func nsInstance(t *testing.T) (*instance, string) {
	t.Helper()
	set, err := namespace.Parse([]byte(testNamespaces))
	if err != nil {
		t.Fatal(err)
	}
	dsn, schema := database(t)
	return authInstance(t, func(c *server.Config) {
		c.Services.Namespaces = set
		c.DatabaseURL, c.Postgres.NotifyChannel = dsn, schema
	})
}

// TestNamespacePublicFeed: a namespace open to anonymous readers is read
// without a credential over every transport, while nobody but services
// may publish to it, whatever their token says.
func TestNamespacePublicFeed(t *testing.T) {
	t.Parallel()
	in, key := nsInstance(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	first := mustPublish(t, svc.events, "news:1", "first")

	// Anonymous readers: RPC subscribe over the three protocols, SSE,
	// WebSocket, long-poll and REST history.
	var streams []*stream
	for _, p := range protocols {
		c := newClients(in.base, p.http(), p.opts...)
		streams = append(streams, subscribe(t, c.events, []string{"news:1"}, ptr(int64(0))))
	}
	sse := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=news:1&last_event_id=0", nil)
	if sse.resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous SSE: %s", sse.resp.Status)
	}
	ws := openWS(t, in.base, gateway.SubprotocolJSON)
	ws.send(t, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"news:1"}, Cursor: ptr(int64(0))}}})
	if m := ws.next(t); m.GetSubscribed() == nil {
		t.Fatalf("anonymous websocket subscribe: %v", m)
	}
	poll := restCall(t, "GET", in.base+"/v1/events?channel=news:1&cursor=0", "", nil)
	var pr heraldv1.PollResponse
	poll.ok(t, 200, &pr)
	if len(pr.Events) != 1 || pr.Events[0].Position != first.Position {
		t.Fatalf("anonymous long-poll: %v", &pr)
	}
	var lr heraldv1.ListEventsResponse
	restCall(t, "GET", in.base+"/v1/channels/news:1/events", "", nil).ok(t, 200, &lr)
	if len(lr.Events) != 1 {
		t.Fatalf("anonymous history: %v", &lr)
	}

	second := mustPublish(t, svc.events, "news:1", "second")
	for i, st := range streams {
		if got := positions(st.events(t, 2)); got[0] != first.Position || got[1] != second.Position {
			t.Fatalf("%s: %v", protocols[i].name, got)
		}
	}
	for _, want := range []int64{first.Position, second.Position} {
		for {
			e := sse.next(t)
			if e.id == strconv.FormatInt(want, 10) && e.event != "@subscribed" {
				break
			}
		}
		if m := ws.next(t); m.GetEvent().GetPosition() != want {
			t.Fatalf("websocket got %v, want position %d", m, want)
		}
	}

	// Publishing: anonymous is told to authenticate; a user whose token
	// allows news:> is refused by the namespace; over every transport.
	writer := token(t, "eve", time.Hour, jwt.MapClaims{"publish": []string{"news:>"}})
	for _, cl := range []struct{ token, code string }{{"", "unauthenticated"}, {writer, "permission_denied"}} {
		for _, p := range protocols {
			c := newClients(in.base, p.http(), append(p.opts, bearer(cl.token))...)
			_, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "news:1", Data: []byte("x")}))
			if codeOf(err).String() != cl.code {
				t.Errorf("%s publish: %v, want %s", p.name, err, cl.code)
			}
			if cl.token != "" && !strings.Contains(err.Error(), "only services") {
				t.Errorf("%s publish: %v does not say why", p.name, err)
			}
		}
		hdr := []string{}
		if cl.token != "" {
			hdr = []string{"Authorization", "Bearer " + cl.token}
		}
		status := map[string]int{"unauthenticated": 401, "permission_denied": 403}[cl.code]
		restCall(t, "POST", in.base+"/v1/channels/news:1/events", "text/plain", []byte("x"), hdr...).fails(t, status, cl.code)
		wc, _, err := websocket.Dial(t.Context(), wsURL(in.base), &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + cl.token}}, Subprotocols: []string{gateway.SubprotocolJSON}})
		if cl.token == "" {
			wc, _, err = websocket.Dial(t.Context(), wsURL(in.base), &websocket.DialOptions{Subprotocols: []string{gateway.SubprotocolJSON}})
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := wsWrite(t.Context(), wc, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: "p", Command: &heraldv1.ConnectRequest_Publish{
			Publish: &heraldv1.PublishRequest{Channel: "news:1", Data: []byte("x")}}}); err != nil {
			t.Fatal(err)
		}
		if m, err := wsRead(t.Context(), wc); err != nil || m.GetError().GetCode() != cl.code {
			t.Errorf("websocket publish: %v %v, want %s", m, err, cl.code)
		}
		wc.CloseNow()
	}
	// Nothing was written but the two events.
	var after heraldv1.ListEventsResponse
	restCall(t, "GET", in.base+"/v1/channels/news:1/events", "", nil).ok(t, 200, &after)
	if len(after.Events) != 2 {
		t.Fatalf("refused publishes wrote: %v", &after)
	}
}

// TestNamespaceAuthenticated: "authenticated" admits any valid credential
// whatever channels it names, and still refuses anonymous callers.
func TestNamespaceAuthenticated(t *testing.T) {
	t.Parallel()
	in, _ := nsInstance(t)
	bob := token(t, "bob", time.Hour, nil) // no channel claims at all
	c := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(bob))
	st := subscribe(t, c.events, []string{"lobby:main"}, nil)
	ev := mustPublish(t, c.events, "lobby:main", "hi")
	if got := st.events(t, 1); got[0].Position != ev.Position {
		t.Fatalf("got %v", got)
	}
	if _, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "lobby:main"})); err != nil {
		t.Fatal(err)
	}
	// bob's token names no chat channel: the token rule refuses him there.
	if _, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "chat:1", Data: []byte("x")})); codeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("chat publish: %v", err)
	}
	anon := newClients(in.base, h2cClient(), connect.WithGRPC())
	if _, err := anon.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "lobby:main", Data: []byte("x")})); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous lobby publish: %v", err)
	}
	resp, err := http.Get(in.base + "/v1/sse?channel=lobby:main")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("anonymous lobby SSE: %s", resp.Status)
	}
}

// TestNamespaceChannelSettings: channels of a namespace are created (on
// first publish and by CreateChannel) with its retention and event size,
// the size is enforced on publish and edit (413 over REST), and unknown
// namespaces are refused.
func TestNamespaceChannelSettings(t *testing.T) {
	t.Parallel()
	in, key := nsInstance(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	admin := adminKeyClients(t, in)
	ev := mustPublish(t, svc.events, "chat:auto", "hello")
	got, err := admin.channels.GetChannel(t.Context(), connect.NewRequest(&heraldv1.GetChannelRequest{Name: "chat:auto"}))
	if err != nil {
		t.Fatal(err)
	}
	s := got.Msg.Channel.Settings
	if s.GetMaxEvents() != 500 || s.GetMaxAge().AsDuration() != 24*time.Hour || s.GetMaxEventSize() != 64 {
		t.Fatalf("auto-created chat channel settings: %v", s)
	}
	created, err := admin.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{Name: "chat:made",
		Settings: &heraldv1.ChannelSettings{MaxEvents: ptr(int64(7))}}))
	if err != nil {
		t.Fatal(err)
	}
	if s := created.Msg.Channel.Settings; s.GetMaxEvents() != 7 || s.GetMaxEventSize() != 64 {
		t.Fatalf("created chat channel settings: %v", s)
	}
	// Size: 64 bytes pass, 65 do not, over RPC, REST (413) and edits.
	big := strings.Repeat("x", 65)
	mustPublish(t, svc.events, "chat:auto", big[:64])
	_, err = svc.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "chat:auto", Data: []byte(big)}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "65 bytes") {
		t.Fatalf("oversized publish: %v", err)
	}
	restCall(t, "POST", in.base+"/v1/channels/chat:other/events", "text/plain", []byte(big), "Authorization", "Bearer "+key).
		fails(t, 413, "invalid_argument", "namespace \"chat\"", "64")
	_, err = svc.history.UpdateEvent(t.Context(), connect.NewRequest(&heraldv1.UpdateEventRequest{Channel: "chat:auto", Position: ev.Position, Data: []byte(big)}))
	if codeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("oversized edit: %v", err)
	}
	// The refused REST publish did not create its channel.
	if _, err := admin.channels.GetChannel(t.Context(), connect.NewRequest(&heraldv1.GetChannelRequest{Name: "chat:other"})); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("refused publish created its channel: %v", err)
	}
	// A batch over WebSocket: the oversized publish fails alone.
	wc, _, err := websocket.Dial(t.Context(), wsURL(in.base), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}, Subprotocols: []string{gateway.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	for i, data := range []string{"a", big, "b"} {
		if err := wsWrite(t.Context(), wc, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: strconv.Itoa(i), Command: &heraldv1.ConnectRequest_Publish{
			Publish: &heraldv1.PublishRequest{Channel: "chat:auto", Data: []byte(data)}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		m, err := wsRead(t.Context(), wc)
		if err != nil || m.Id != strconv.Itoa(i) || (i == 1) != (m.GetError() != nil) {
			t.Fatalf("websocket ack %d: %v %v", i, m, err)
		}
	}
	// Unknown namespaces.
	_, err = svc.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "misc:1", Data: []byte("x")}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `namespace "misc"`) {
		t.Fatalf("unknown namespace publish: %v", err)
	}
	resp, err := http.Get(in.base + "/v1/sse?channel=misc:1&access_token=" + key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "misc") {
		t.Fatalf("unknown namespace SSE: %s %s", resp.Status, body)
	}
}

// adminKeyClients returns gRPC clients holding an admin token.
func adminKeyClients(t *testing.T, in *instance) clients {
	t.Helper()
	return newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(token(t, "root", time.Hour, jwt.MapClaims{"scopes": []string{"admin"}})))
}

// TestNamespaceAuthorEdits: in a namespace with edit "author", only the
// author of an event may change it (over RPC and REST); services and
// admins may moderate.
func TestNamespaceAuthorEdits(t *testing.T) {
	t.Parallel()
	in, key := nsInstance(t)
	perms := jwt.MapClaims{"publish": []string{"chat:>"}, "subscribe": []string{"chat:>"}}
	ann := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(token(t, "ann", time.Hour, perms)))
	bobTok := token(t, "bob", time.Hour, perms)
	bob := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(bobTok))
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	ev := mustPublish(t, ann.events, "chat:room", "mine")
	if ev.Author != "user:ann" {
		t.Fatalf("author %q", ev.Author)
	}
	// bob may publish to the room but not change ann's message.
	_, err := bob.history.UpdateEvent(t.Context(), connect.NewRequest(&heraldv1.UpdateEventRequest{Channel: "chat:room", Position: ev.Position, Data: []byte("bob was here")}))
	if codeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "author") {
		t.Fatalf("bob's edit: %v", err)
	}
	_, err = bob.history.DeleteEvent(t.Context(), connect.NewRequest(&heraldv1.DeleteEventRequest{Channel: "chat:room", Position: ev.Position}))
	if codeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("bob's delete: %v", err)
	}
	u := in.base + "/v1/channels/chat:room/events/" + strconv.FormatInt(ev.Position, 10)
	restCall(t, "PATCH", u, "text/plain", []byte("x"), "Authorization", "Bearer "+bobTok).fails(t, 403, "permission_denied", "author")
	restCall(t, "DELETE", u, "", nil, "Authorization", "Bearer "+bobTok).fails(t, 403, "permission_denied")
	// Anonymous callers are told to authenticate.
	restCall(t, "DELETE", u, "", nil).fails(t, 401, "unauthenticated")
	// ann may.
	up, err := ann.history.UpdateEvent(t.Context(), connect.NewRequest(&heraldv1.UpdateEventRequest{Channel: "chat:room", Position: ev.Position, Data: []byte("mine, edited")}))
	if err != nil || string(up.Msg.Event.Data) != "mine, edited" || up.Msg.Entry.Author != "user:ann" {
		t.Fatalf("ann's edit: %v %v", up, err)
	}
	// The service moderates.
	del, err := svc.history.DeleteEvent(t.Context(), connect.NewRequest(&heraldv1.DeleteEventRequest{Channel: "chat:room", Position: ev.Position}))
	if err != nil || del.Msg.Entry.Author != "key:backend" {
		t.Fatalf("service delete: %v %v", del, err)
	}
	// An event that does not exist: not_found for its would-be author too.
	_, err = ann.history.DeleteEvent(t.Context(), connect.NewRequest(&heraldv1.DeleteEventRequest{Channel: "chat:room", Position: 1 << 40}))
	if codeOf(err) != connect.CodeNotFound {
		t.Fatalf("delete of a missing event: %v", err)
	}
}

// TestRefusedPublishCreatesNoChannel: a publish refused as too large for
// the channel it would create (a namespace with retention but no size)
// creates nothing.
func TestRefusedPublishCreatesNoChannel(t *testing.T) {
	t.Parallel()
	set, err := namespace.Parse([]byte(`{"namespaces":{"chat":{"maxEvents":500}}}`))
	if err != nil {
		t.Fatal(err)
	}
	in, key := authInstance(t, func(c *server.Config) { c.Services.Namespaces = set })
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	admin := newClients(in.base, h2cClient(), connect.WithGRPC(),
		bearer(token(t, "root", time.Hour, jwt.MapClaims{"scopes": []string{"admin"}})))
	_, err = svc.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "chat:new", Data: []byte(strings.Repeat("x", 70000))}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("oversized publish: %v", err)
	}
	if _, err := admin.channels.GetChannel(t.Context(), connect.NewRequest(&heraldv1.GetChannelRequest{Name: "chat:new"})); err == nil {
		t.Errorf("a refused publish created channel chat:new")
	}
}

// TestNamespaceChannelRecreatedAfterDelete: a namespace channel deleted and
// published to again (on the same instance) is created again with the
// namespace's settings, not the server defaults.
func TestNamespaceChannelRecreatedAfterDelete(t *testing.T) {
	t.Parallel()
	set, err := namespace.Parse([]byte(`{"namespaces":{"chat":{"maxEvents":500,"maxAge":"24h","maxEventSize":4096}}}`))
	if err != nil {
		t.Fatal(err)
	}
	in, key := authInstance(t, func(c *server.Config) { c.Services.Namespaces = set })
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	admin := newClients(in.base, h2cClient(), connect.WithGRPC(),
		bearer(token(t, "root", time.Hour, jwt.MapClaims{"scopes": []string{"admin"}})))
	settings := func() *heraldv1.ChannelSettings {
		r, err := admin.channels.GetChannel(t.Context(), connect.NewRequest(&heraldv1.GetChannelRequest{Name: "chat:x"}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Channel.Settings
	}
	mustPublish(t, svc.events, "chat:x", "one")
	before := settings()
	if before.GetMaxEvents() != 500 {
		t.Fatalf("first creation: %v", before)
	}
	if _, err := admin.channels.DeleteChannel(t.Context(), connect.NewRequest(&heraldv1.DeleteChannelRequest{Name: "chat:x"})); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, svc.events, "chat:x", "two")
	if after := settings(); after.GetMaxEvents() != before.GetMaxEvents() || after.GetMaxAge().AsDuration() != before.GetMaxAge().AsDuration() || after.GetMaxEventSize() != before.GetMaxEventSize() {
		t.Errorf("recreated on the same instance with %v; the namespace gives %v", after, before)
	}
}
