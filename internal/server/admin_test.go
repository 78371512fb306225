package server_test

import (
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

func adminClient(in *instance, opts ...connect.ClientOption) heraldv1connect.AdminServiceClient {
	return heraldv1connect.NewAdminServiceClient(http.DefaultClient, "http://"+in.srv.AdminAddr(), opts...)
}

// TestAdminAPI runs two instances on one database and checks the admin
// API of one: both instances listed (and the killed one dropping out),
// channel figures, this instance's connections and disconnecting one, the
// instance's stats.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.Schema(t)
	dsn := pgtest.SchemaURL(t, schema)
	cfg := func() server.Config {
		return server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema},
			AdminAddr: "127.0.0.1:0", Metrics: metrics.New(), Version: "v-test", HeartbeatInterval: 200 * time.Millisecond}
	}
	a, b := startInstance(t, cfg()), startInstance(t, cfg())
	admin := adminClient(a)
	ctx := t.Context()

	var ins []*heraldv1.Instance
	waitFor(t, func() bool {
		resp, err := admin.ListInstances(ctx, connect.NewRequest(&heraldv1.ListInstancesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		ins = resp.Msg.Instances
		return len(ins) == 2
	})
	if !ins[0].Self || ins[0].Addr != a.srv.Addr() || ins[1].Addr != b.srv.Addr() || ins[1].Version != "v-test" || ins[1].Self {
		t.Errorf("instances: %v", ins)
	}

	c := newClients(a.base, http.DefaultClient)
	var last *heraldv1.Event
	for range 3 {
		last = mustPublish(t, c.events, "adm.c1", `"x"`)
	}
	chs, err := admin.ListChannelStats(ctx, connect.NewRequest(&heraldv1.ListChannelStatsRequest{Prefix: "adm."}))
	if err != nil {
		t.Fatal(err)
	}
	if got := chs.Msg.Channels; len(got) != 1 || got[0].Channel.Name != "adm.c1" || got[0].Events != 3 || got[0].Head != last.Position || got[0].LastActivityTime == nil {
		t.Errorf("channel stats: %v", got)
	}

	sse := getSSE(t, http.DefaultClient, a.base+"/v1/sse?channel=adm.c1", nil)
	for sse.next(t).event != "@subscribed" {
	}
	conns, err := admin.ListConnections(ctx, connect.NewRequest(&heraldv1.ListConnectionsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := conns.Msg.Connections; len(got) != 1 || got[0].Transport != "sse" || got[0].Subscriptions != 1 || got[0].Channels != 1 {
		t.Fatalf("connections: %v", got)
	}
	var stats *connect.Response[heraldv1.GetStatsResponse]
	waitFor(t, func() bool { // the hub dispatches the last publish a moment after its ack
		var err error
		if stats, err = admin.GetStats(ctx, connect.NewRequest(&heraldv1.GetStatsRequest{})); err != nil {
			t.Fatal(err)
		}
		return stats.Msg.HubHead == last.Position
	})
	if s := stats.Msg; s.Connections["sse"] != 1 || s.EventsPublished != 3 || s.HubHead != last.Position || s.Version != "v-test" {
		t.Errorf("stats: %v", s)
	}
	if _, err := admin.Disconnect(ctx, connect.NewRequest(&heraldv1.DisconnectRequest{Id: conns.Msg.Connections[0].Id})); err != nil {
		t.Fatal(err)
	}
	for ev := sse.next(t); ev.event != "@end"; ev = sse.next(t) {
	}
	waitFor(t, func() bool {
		resp, err := admin.ListConnections(ctx, connect.NewRequest(&heraldv1.ListConnectionsRequest{}))
		return err == nil && len(resp.Msg.Connections) == 0
	})
	if _, err := admin.Disconnect(ctx, connect.NewRequest(&heraldv1.DisconnectRequest{Id: 99999})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("disconnect of no connection: %v, want not_found", err)
	}
	if _, err := admin.Disconnect(ctx, connect.NewRequest(&heraldv1.DisconnectRequest{})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("disconnect without an id: %v, want invalid_argument", err)
	}

	// The admin API is on the admin listener only.
	if _, err := heraldv1connect.NewAdminServiceClient(http.DefaultClient, a.base).GetStats(ctx, connect.NewRequest(&heraldv1.GetStatsRequest{})); connect.CodeOf(err) != connect.CodeNotFound && connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Errorf("AdminService on the public port: %v, want not found", err)
	}

	b.kill()
	waitFor(t, func() bool {
		resp, err := admin.ListInstances(ctx, connect.NewRequest(&heraldv1.ListInstancesRequest{}))
		return err == nil && len(resp.Msg.Instances) == 1 && resp.Msg.Instances[0].Self
	})
}

// TestAdminAuth: with authentication on, the admin API needs the admin
// scope; the console page itself loads without a credential (it asks for
// one), and /metrics stays open on the admin listener.
func TestAdminAuth(t *testing.T) {
	t.Parallel()
	in, key := authInstance(t, func(c *server.Config) { c.AdminAddr = "127.0.0.1:0"; c.Metrics = metrics.New() })
	ctx := t.Context()
	req := func() *connect.Request[heraldv1.GetStatsRequest] {
		return connect.NewRequest(&heraldv1.GetStatsRequest{})
	}
	if _, err := adminClient(in).GetStats(ctx, req()); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("without a credential: %v, want unauthenticated", err)
	}
	if _, err := adminClient(in, bearer(key)).GetStats(ctx, req()); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("with a key without the admin scope: %v, want permission_denied", err)
	}
	if _, err := adminClient(in, bearer("bad.token.here")).GetStats(ctx, req()); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("with a bad token: %v, want unauthenticated", err)
	}
	admin := token(t, "root", time.Hour, jwt.MapClaims{"scopes": []string{"admin"}})
	if _, err := adminClient(in, bearer(admin)).GetStats(ctx, req()); err != nil {
		t.Errorf("with an admin token: %v", err)
	}
	for _, path := range []string{"/admin/", "/admin/console.js", "/admin/vendor/uplot/uPlot.iife.min.js", "/metrics", "/readyz"} {
		if !httpOK(t, "http://"+in.srv.AdminAddr()+path) {
			t.Errorf("GET %s on the admin listener without a credential: not 200", path)
		}
	}
	s := scrapeMetrics(t, in.srv.AdminAddr())
	if v, _ := s.value("herald_auth_failures_total", "kind", "malformed"); v < 1 {
		t.Errorf("auth_failures_total{kind=malformed} = %v after a malformed token", v)
	}
}
