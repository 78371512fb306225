package server_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
)

// TestAnonymousPublishRate: where a namespace lets anonymous clients
// publish, their unary publishes (RPC and REST) are rate limited by
// address, like an end user's.
func TestAnonymousPublishRate(t *testing.T) {
	t.Parallel()
	set, err := namespace.Parse([]byte(`{"namespaces":{"lobby":{"subscribe":"anonymous","publish":"anonymous"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	rate := limits.Rate{PerSecond: 2, Burst: 10}
	in, _ := authInstance(t, func(c *server.Config) { c.Services.Namespaces, c.Services.UserPublishRate = set, rate })
	anon := newClients(in.base, h2cClient(), connect.WithGRPC())
	start := time.Now()
	ok, limited := 0, 0
	for range 30 {
		_, err := anon.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "lobby:1", Data: []byte("x")}))
		switch {
		case err == nil:
			ok++
		case connect.CodeOf(err) == connect.CodeResourceExhausted:
			limited++
		default:
			t.Fatal(err)
		}
	}
	refill := int(rate.PerSecond*time.Since(start).Seconds()) + 1
	if ok < rate.Burst || ok > rate.Burst+refill || limited == 0 {
		t.Fatalf("anonymous RPC: %d published, %d limited; want the burst of %d plus at most %d", ok, limited, rate.Burst, refill)
	}
	// REST shares the address's bucket (which refills a token every
	// 500 ms, so one attempt may pass).
	for i := 0; ; i++ {
		r := restCall(t, "POST", in.base+"/v1/channels/lobby:1/events", "text/plain", []byte("x"))
		if r.status == 429 {
			break
		}
		if i == 5 {
			t.Fatalf("6 anonymous REST publishes over the rate were accepted: %d %s", r.status, r.body)
		}
	}
}
