package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/grpchealth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

type readyAnswer struct {
	status int
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
}

func getReady(t *testing.T, base string) readyAnswer {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return readyAnswer{status: -1, Reason: err.Error()}
	}
	defer resp.Body.Close()
	var a readyAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("/readyz answered %d with no JSON: %v", resp.StatusCode, err)
	}
	a.status = resp.StatusCode
	return a
}

// healthStatus asks the gRPC health service (over gRPC) about the
// instance as a whole ("").
func healthStatus(t *testing.T, base string) grpchealth.Status {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		return grpchealth.StatusUnknown
	}
	return grpchealth.Status(resp.Status)
}

// TestReadinessDatabaseOutage cuts PostgreSQL: /readyz turns 503 with a
// JSON reason naming the database (gRPC health NOT_SERVING, herald_ready
// 0) while /livez stays 200, and everything comes back by itself when the
// database does.
func TestReadinessDatabaseOutage(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t)
	in := startInstance(t, server.Config{
		DatabaseURL: proxy.URL(t, pgtest.SchemaURL(t, schema)), Postgres: eventlog.PostgresOptions{NotifyChannel: schema},
		Hub: fanout.Options{PollInterval: 100 * time.Millisecond}, ProbeInterval: 100 * time.Millisecond,
	})
	waitFor(t, func() bool { return getReady(t, in.base).status == http.StatusOK })
	if s := healthStatus(t, in.base); s != grpchealth.StatusServing {
		t.Fatalf("gRPC health %v while ready, want SERVING", s)
	}

	proxy.Cut()
	var a readyAnswer
	waitFor(t, func() bool { a = getReady(t, in.base); return a.status == http.StatusServiceUnavailable })
	if a.Ready || !strings.HasPrefix(a.Reason, "database: ") {
		t.Errorf("/readyz during the outage: %+v, want not ready because of the database", a)
	}
	if s := healthStatus(t, in.base); s != grpchealth.StatusNotServing {
		t.Errorf("gRPC health %v during the outage, want NOT_SERVING", s)
	}
	if !httpOK(t, in.base+"/livez") {
		t.Error("/livez failed during the outage: the process still works")
	}

	proxy.Restore()
	waitFor(t, func() bool { a = getReady(t, in.base); return a.status == http.StatusOK })
	if !a.Ready || a.Reason != "" {
		t.Errorf("/readyz after the outage: %+v", a)
	}
	if s := healthStatus(t, in.base); s != grpchealth.StatusServing {
		t.Errorf("gRPC health %v after the outage, want SERVING", s)
	}
}

// TestReadinessDrain: a graceful shutdown makes /readyz 503 ("shutting
// down") and gRPC health NOT_SERVING first, while the instance still
// serves for ShutdownDelay.
func TestReadinessDrain(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{ShutdownDelay: 2 * time.Second, ProbeInterval: 50 * time.Millisecond})
	waitFor(t, func() bool { return getReady(t, in.base).status == http.StatusOK })
	in.cancel() // graceful: what SIGTERM does
	var a readyAnswer
	waitFor(t, func() bool { a = getReady(t, in.base); return a.status == http.StatusServiceUnavailable })
	if a.Reason != "shutting down" {
		t.Errorf("/readyz while draining: %+v, want reason \"shutting down\"", a)
	}
	if s := healthStatus(t, in.base); s != grpchealth.StatusNotServing {
		t.Errorf("gRPC health %v while draining, want NOT_SERVING", s)
	}
	// Still serving: a publish goes through during the delay.
	mustPublish(t, newClients(in.base, http.DefaultClient).events, "d", `"still"`)
	in.stop()
}

func httpOK(t *testing.T, url string) bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
