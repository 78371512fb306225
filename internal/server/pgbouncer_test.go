package server_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// pgbouncer runs Debian's PgBouncer in transaction mode on a spare port,
// with its own configuration, in front of the test database with
// search_path set to schema (connect_query: PgBouncer 1.18 passes no
// search_path from clients). It returns the URL to connect through it.
func pgbouncer(t *testing.T, schema string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/pgbouncer"); err2 != nil {
			t.Skip("pgbouncer not installed (Debian package pgbouncer; scripts/test installs it): skipping the pooler test")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	pc, err := pgconn.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "herald-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("host=%s port=%d dbname=%s user=%s", pc.Host, pc.Port, pc.Database, pc.User)
	if pc.Password != "" {
		server += " password=" + pc.Password
	}
	ini := fmt.Sprintf(`[databases]
herald = %s connect_query='SET search_path TO %s'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
ignore_startup_parameters = extra_float_digits
logfile = %s
`, server, pgx.Identifier{schema}.Sanitize(), port, filepath.Join(dir, "pgbouncer.log"))
	cfgPath := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(cfgPath, []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{cfgPath}
	if os.Geteuid() == 0 { // PgBouncer refuses to run as root
		if _, err := user.Lookup("postgres"); err != nil {
			t.Skip("running as root without a postgres user to run pgbouncer as")
		}
		args = []string{"-u", "postgres", cfgPath}
	}
	cmd := exec.Command(bin, args...)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Logf("pgbouncer output:\n%s\nlog:\n%s", out, log)
		}
	})
	u := url.URL{Scheme: "postgres", User: url.User(pc.User), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/herald"}
	// No named prepared statements: a transaction pooler does not keep
	// them between transactions (PgBouncer < 1.21).
	u.RawQuery = "sslmode=disable&default_query_exec_mode=exec"
	waitFor(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, u.String())
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx) == nil
	})
	return u.String()
}

// TestPgBouncer runs an instance whose pool goes through PgBouncer in
// transaction mode. With --listen-database-url (a direct connection for
// LISTEN and migrations) events reach a subscriber at once; without it
// LISTEN goes through the pooler and hears nothing, so events arrive only
// at the safety poll, and the metrics say so (polls that found events).
func TestPgBouncer(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.Schema(t)
	bouncer := pgbouncer(t, schema)
	direct := pgtest.SchemaURL(t, schema)
	const poll = 3 * time.Second
	for _, tc := range []struct {
		name   string
		listen string
	}{{"with-listen-url", direct}, {"without", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			in := startInstance(t, server.Config{
				DatabaseURL: bouncer, ListenDatabaseURL: tc.listen,
				Postgres: eventlog.PostgresOptions{NotifyChannel: schema}, Hub: fanout.Options{PollInterval: poll},
				AdminAddr: "127.0.0.1:0", Metrics: m,
			})
			c := newClients(in.base, h2cClient(), protocols[1].opts...)
			ch := "pgb-" + tc.name
			st := subscribe(t, c.events, []string{ch}, nil)
			st.next(t)
			var slowest time.Duration
			for i := range 5 {
				start := time.Now()
				ev := mustPublish(t, c.events, ch, strconv.Itoa(i))
				got := st.events(t, 1)
				if got[0].Position != ev.Position {
					t.Fatalf("got position %d, want %d", got[0].Position, ev.Position)
				}
				slowest = max(slowest, time.Since(start))
			}
			s := scrapeMetrics(t, in.srv.AdminAddr())
			found, _ := s.value("herald_hub_poll_found_events_total")
			t.Logf("slowest publish-to-delivery %v; polls that found events: %v", slowest.Round(time.Millisecond), found)
			if tc.listen != "" {
				if slowest > poll/2 {
					t.Errorf("with a direct LISTEN connection an event took %v to arrive (poll interval %v): notifications were not heard", slowest, poll)
				}
				return
			}
			if slowest < poll/3 || found < 1 {
				t.Errorf("without a direct LISTEN connection behind PgBouncer: slowest %v, polls that found events %v; "+
					"expected delivery only at the safety poll (%v)", slowest, found, poll)
			}
		})
	}
}
