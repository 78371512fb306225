package services_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/services"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// runHub runs a hub over log until the test ends and waits until it is
// ready.
func runHub(t *testing.T, log eventlog.Log) *fanout.Hub {
	t.Helper()
	hub := fanout.NewHub(log, fanout.Options{Logger: quiet})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = hub.Run(ctx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	<-hub.Ready()
	return hub
}

// newApp returns the application over log and hub with cfg.
func newApp(t testing.TB, log eventlog.Log, hub *fanout.Hub, cfg services.Config) *services.App {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	app, err := services.New(log, hub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

const testSecret = "0123456789abcdef0123456789abcdef-services"

// testAuthn is an authenticator of HS256 tokens signed by userToken.
func testAuthn(t *testing.T) *auth.Authenticator {
	t.Helper()
	v, err := auth.NewVerifier(auth.JWTConfig{HS256Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewAuthenticator(nil, v)
}

// userToken signs a token for user ann valid for d, with claims.
func userToken(t *testing.T, d time.Duration, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(d).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
