package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	neturl "net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/migrations"
)

// The examples share one Herald on PostgreSQL, started here (examples have
// no *testing.T): serverURL and appDatabase give them its address and a
// pool on its database, as an application has.
var shared struct {
	url  string
	pool *pgxpool.Pool
}

func serverURL() string          { return shared.url }
func appDatabase() *pgxpool.Pool { return shared.pool }

func TestMain(m *testing.M) {
	stop, err := startShared()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the examples' server:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
			goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool).Acquire.func1"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startShared makes a schema of the test database (as internal/pgtest
// does, without a *testing.T), migrates it and runs a server on it.
func startShared() (func(), error) {
	ctx := context.Background()
	base := pgtest.DefaultURL
	for _, k := range []string{"TEST_DATABASE_URL", "DATABASE_URL"} {
		if v := os.Getenv(k); v != "" {
			base = v
			break
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := "herald_test_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return nil, err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return nil, err
	}
	drop := func() {
		conn, err := pgx.Connect(ctx, base)
		if err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			_ = conn.Close(ctx)
		}
	}
	url := base + " search_path=" + schema // keyword/value form
	if u, err := neturl.Parse(base); err == nil && u.Scheme != "" {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		url = u.String()
	}
	pool, err := pgxpool.New(ctx, url)
	if err == nil {
		err = migrations.Up(ctx, pool)
	}
	if err != nil {
		drop()
		return nil, err
	}
	srv, err := server.New(ctx, server.Config{
		Addr: "127.0.0.1:0", DatabaseURL: url, Logger: quiet(),
		Postgres: eventlog.PostgresOptions{NotifyChannel: schema},
	})
	if err != nil {
		pool.Close()
		drop()
		return nil, err
	}
	in := run(srv)
	stop := func() {
		in.shutdown()
		pool.Close()
		drop()
	}
	if err := in.healthy(); err != nil {
		stop()
		return nil, err
	}
	shared.url, shared.pool = in.url, pool
	return stop, nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// instance is a server run by a test.
type instance struct {
	srv  *server.Server
	url  string
	once sync.Once
	stop context.CancelFunc
	done chan error
}

// start runs a server until the test ends and waits until it is healthy.
func start(t testing.TB, cfg server.Config) *instance {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	in := run(srv)
	t.Cleanup(in.shutdown)
	if err := in.healthy(); err != nil {
		t.Fatal(err)
	}
	return in
}

func run(srv *server.Server) *instance {
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{srv: srv, url: "http://" + srv.Addr(), stop: cancel, done: make(chan error, 1)}
	go func() { in.done <- srv.Run(ctx) }()
	return in
}

func (in *instance) healthy() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(in.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy within 10s", in.url)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shutdown stops the server gracefully and waits for it.
func (in *instance) shutdown() {
	in.once.Do(func() {
		in.stop()
		<-in.done
	})
}

// kill drops the server like a crash.
func (in *instance) kill() {
	in.once.Do(func() {
		in.srv.Kill()
		<-in.done
		in.stop()
	})
}

// pgServers runs n servers on one fresh schema and returns them with a
// pool on the schema (the application's).
func pgServers(t *testing.T, n int) ([]*instance, *pgxpool.Pool) {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	var out []*instance
	for range n {
		out = append(out, start(t, server.Config{
			DatabaseURL: pgtest.SchemaURL(t, schema),
			Postgres:    eventlog.PostgresOptions{NotifyChannel: schema},
		}))
	}
	return out, pool
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
