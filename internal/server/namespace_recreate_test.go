package server_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
)

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
