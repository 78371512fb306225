package server_test

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
)

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
