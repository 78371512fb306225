package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/metadata"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// benchNamespaces is the policy of the jwt-user+namespaces variant: the
// benchmark's channels are in "chat", which anyone may read, whose events
// only their author may change, and where the credential's own claims
// decide who publishes (the default "token" rule).
const benchNamespaces = `{"namespaces": {"chat": {"subscribe": "anonymous", "edit": "author"}}}`

// BenchmarkPublishAuth measures what authentication and authorization add
// to a unary Publish over gRPC: BenchmarkPublishGRPC/unary's workload (64
// concurrent publishers on one google.golang.org/grpc ClientConn, 256-byte
// events over 100 channels, here named chat:bench-N) on the memory log, so
// that the database does not hide the per-request cost. Each publisher
// sends its credential in the "authorization" metadata of every call, and
// the server verifies it on every call (each unary RPC is an HTTP request).
//
//   - auth-off: no Config.Auth; no credential is sent.
//   - api-key: an API key with the publish scope on every channel
//     (SHA-256 and a map lookup per call).
//   - jwt-user: each publisher is its own end user with an HS256 token
//     (sub, iat, exp, publish and subscribe claims "chat:*"); per call:
//     HS256 verification, the claims' patterns, the publish check and the
//     per-user publish bucket, whose rate is set high enough never to
//     refuse.
//   - jwt-user+namespaces: jwt-user with benchNamespaces, so each publish
//     also looks up the channel's namespace policy.
//
// b.N is the number of events; events/s is b.N over the wall time, latency
// is from call to acknowledgement. Allocations count client and server.
// docs/benchmarks.md runs one variant per process in alternating rounds;
// from internal/server:
//
//	go test -c -o /tmp/server.test .
//	/tmp/server.test -test.run '^$' -test.benchmem -test.bench 'BenchmarkPublishAuth/^jwt-user$' -test.benchtime 60000x
func BenchmarkPublishAuth(b *testing.B) {
	noLimit := limits.Rate{PerSecond: 1e9, Burst: 1 << 30}
	for _, bc := range []struct {
		name       string
		auth       bool
		namespaces string
		cred       func(b *testing.B, apiKey string, publisher int) string // the bearer token
	}{
		{name: "auth-off"},
		{name: "api-key", auth: true, cred: func(_ *testing.B, key string, _ int) string { return key }},
		{name: "jwt-user", auth: true, cred: benchUserToken},
		{name: "jwt-user+namespaces", auth: true, namespaces: benchNamespaces, cred: benchUserToken},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := server.Config{Services: services.Config{UserPublishRate: noLimit, ConnectionPublishRate: noLimit}}
			var apiKey string
			if bc.auth {
				var err error
				if apiKey, err = auth.GenerateKey(); err != nil {
					b.Fatal(err)
				}
				keys, err := auth.NewKeys([]auth.KeyConfig{{Name: "backend", Hash: auth.HashKey(apiKey), Scopes: []auth.Scope{auth.ScopePublish}}})
				if err != nil {
					b.Fatal(err)
				}
				v, err := auth.NewVerifier(auth.JWTConfig{HS256Secret: []byte(testSecret)})
				if err != nil {
					b.Fatal(err)
				}
				cfg.Services.Auth = auth.NewAuthenticator(keys, v)
			}
			if bc.namespaces != "" {
				set, err := namespace.Parse([]byte(bc.namespaces))
				if err != nil {
					b.Fatal(err)
				}
				cfg.Services.Namespaces = set
			}
			srv, addr := benchInstance(b, cfg)
			events := heraldv1.NewEventServiceClient(grpcConn(b, addr))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// One outgoing context per publisher, made before the timer.
			pctx := make([]context.Context, benchPublishers)
			for p := range pctx {
				pctx[p] = ctx
				if bc.cred != nil {
					pctx[p] = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bc.cred(b, apiKey, p))
				}
			}
			channels := make([]string, benchChannels)
			for i := range channels {
				channels[i] = fmt.Sprintf("chat:bench-%d", i)
			}
			payload := make([]byte, benchEventBytes)
			for _, ch := range channels { // create the channels and the connection outside the measurement
				if _, err := events.Publish(pctx[0], &heraldv1.PublishRequest{Channel: ch, Data: payload}); err != nil {
					b.Fatalf("warm up %s: %v", ch, err)
				}
			}
			head0, err := srv.Log().Head(ctx)
			if err != nil {
				b.Fatal(err)
			}

			publishUnary(b, srv, events, func(p int) context.Context { return pctx[p] }, cancel, channels, payload, head0)
		})
	}
}

// benchUserToken signs an HS256 token for end user bench-user-N that may
// publish to and subscribe to chat:*, valid for an hour.
func benchUserToken(b *testing.B, _ string, publisher int) string {
	return token(b, fmt.Sprintf("bench-user-%d", publisher), time.Hour, jwt.MapClaims{
		"iat": time.Now().Unix(), "publish": []string{"chat:*"}, "subscribe": []string{"chat:*"},
	})
}
