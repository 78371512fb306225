package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

const testPassword = "hunter2-not-shown"

// logBuffer collects a logger's lines for the test to read while another
// goroutine writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// testURL returns the test database's URL with another user or database
// (empty: keep) and a password: the URL's own when it has one and the user
// is kept (the server may check it), otherwise testPassword (a server that
// trusts the user ignores it). The password is returned too, for checking
// that no error or log line shows it.
func testURL(t *testing.T, user, database string) (string, string) {
	t.Helper()
	u, err := url.Parse(pgtest.URL(t))
	if err != nil || u.Scheme == "" {
		t.Skipf("these cases need a postgres:// test URL: %v", err)
	}
	password, ok := u.User.Password()
	if user != "" || !ok {
		password = testPassword
	}
	if user == "" {
		user = u.User.Username()
	}
	u.User = url.UserPassword(user, password)
	if database != "" {
		u.Path = "/" + database
	}
	return u.String(), password
}

// showsPassword reports whether s shows password as URLs and connection
// strings carry it (a bare search would also find a password such as
// "postgres" in every URL).
func showsPassword(s, password string) bool {
	return strings.Contains(s, ":"+password+"@") || strings.Contains(s, "password="+password) ||
		len(password) >= 12 && strings.Contains(s, password)
}

// refusedURL is the test database's URL (see testURL) on a port nothing
// listens on.
func refusedURL(t *testing.T) (string, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dsn, password := testURL(t, "", "")
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String(), password
}

// TestConnectFailsFastWhenRetryingCannotHelp: a malformed URL, a login the
// server refuses and a database that does not exist stop at once, even
// with a long wait, with an error that says what to check and no password.
func TestConnectFailsFastWhenRetryingCannotHelp(t *testing.T) {
	t.Parallel()
	noDB, noDBPassword := testURL(t, "", "herald_no_such_database")
	noRole, _ := testURL(t, "herald_no_such_role", "")
	for _, tc := range []struct {
		name, url, password string
		words               []string
	}{
		{"bad port", "postgres://postgres:" + testPassword + "@127.0.0.1:54x2/test", testPassword,
			[]string{"not valid", "invalid port", "postgres://USER:PASSWORD@HOST:PORT/DATABASE"}},
		{"bad scheme", "mysql://postgres:" + testPassword + "@127.0.0.1/test", testPassword,
			[]string{"not valid", "postgres://USER:PASSWORD@HOST:PORT/DATABASE"}},
		{"bad sslmode", "postgres://postgres:" + testPassword + "@127.0.0.1/test?sslmode=sometimes", testPassword,
			[]string{"not valid", "sslmode"}},
		{"no such database", noDB, noDBPassword,
			[]string{`database "herald_no_such_database" does not exist`, "createdb -h ", " herald_no_such_database"}},
		{"no such role", noRole, testPassword,
			[]string{`refused user "herald_no_such_role"`, "check the user and password", "pg_hba.conf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs logBuffer
			start := time.Now()
			pool, err := server.Connect(t.Context(), tc.url, time.Minute, logs.logger())
			if err == nil {
				pool.Close()
				t.Fatal("connected")
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v: retried an error retrying cannot fix", d)
			}
			if strings.Contains(logs.String(), "retrying") {
				t.Errorf("retried:\n%s", logs.String())
			}
			msg := err.Error()
			for _, w := range tc.words {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not say %q:\n%s", w, msg)
				}
			}
			if showsPassword(msg+logs.String(), tc.password) {
				t.Errorf("the password is shown:\n%s\n%s", msg, logs.String())
			}
		})
	}
}

// TestConnectGivesUpAfterWait: a database nobody listens for is retried,
// each attempt logged with its error and the next retry, until the wait
// ends; the error says where PostgreSQL was expected and what to check.
// Without a wait it fails at once.
func TestConnectGivesUpAfterWait(t *testing.T) {
	t.Parallel()
	dsn, password := refusedURL(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	t.Run("wait", func(t *testing.T) {
		t.Parallel()
		var logs logBuffer
		start := time.Now()
		_, err := server.Connect(t.Context(), dsn, 1500*time.Millisecond, logs.logger())
		took := time.Since(start)
		if err == nil {
			t.Fatal("connected to nothing")
		}
		if took < 1500*time.Millisecond || took > 15*time.Second {
			t.Errorf("gave up after %v, want about 1.5s", took)
		}
		retries := strings.Count(logs.String(), "PostgreSQL is not reachable; retrying")
		if retries < 2 || !strings.Contains(logs.String(), "connection refused") || !strings.Contains(logs.String(), "retry_in=") {
			t.Errorf("want every retry logged with its error and the next retry:\n%s", logs.String())
		}
		for _, w := range []string{"connection refused", "gave up after", "is PostgreSQL running", "pg_isready -h 127.0.0.1 -p ", host, "--database-wait"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error does not say %q:\n%v", w, err)
			}
		}
		if showsPassword(err.Error()+logs.String(), password) {
			t.Errorf("the password is shown:\n%v\n%s", err, logs.String())
		}
	})
	t.Run("no wait", func(t *testing.T) {
		t.Parallel()
		var logs logBuffer
		_, err := server.Connect(t.Context(), dsn, 0, logs.logger())
		if err == nil || !strings.Contains(err.Error(), "is PostgreSQL running") || !strings.Contains(err.Error(), "--database-wait") {
			t.Fatalf("want the hints, got %v", err)
		}
		if logs.String() != "" {
			t.Errorf("logged a retry without a wait:\n%s", logs.String())
		}
	})
	t.Run("canceled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		var logs logBuffer
		done := make(chan error, 1)
		go func() {
			_, err := server.Connect(ctx, dsn, time.Minute, logs.logger())
			done <- err
		}()
		waitFor(t, func() bool { return strings.Contains(logs.String(), "retrying") })
		cancel()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "canceled") {
				t.Fatalf("want the cancellation, got %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Connect did not return after its context ended")
		}
	})
}

// TestConnectWaitsForDatabase: PostgreSQL that comes up during the wait
// (here: a proxy that refuses connections, then lets them through) is
// connected to, and the server starts on it.
func TestConnectWaitsForDatabase(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.Schema(t)
	proxy := pgtest.NewProxy(t)
	proxy.Cut()
	dsn := proxy.URL(t, pgtest.SchemaURL(t, schema))
	var logs logBuffer
	type result struct {
		srv *server.Server
		err error
	}
	done := make(chan result, 1)
	go func() {
		srv, err := server.New(t.Context(), server.Config{Addr: "127.0.0.1:0", DatabaseURL: dsn, DatabaseWait: time.Minute, Logger: logs.logger(), Postgres: eventlog.PostgresOptions{NotifyChannel: schema}})
		done <- result{srv, err}
	}()
	waitFor(t, func() bool { return strings.Count(logs.String(), "retrying") >= 2 })
	proxy.Restore()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("not connected 30s after the database came up:\n%s", logs.String())
	}
	if r.err != nil {
		t.Fatalf("server.New: %v\n%s", r.err, logs.String())
	}
	in := runInstance(t, r.srv)
	mustPublish(t, newClients(in.base, http.DefaultClient).events, "db", "up")
	if !strings.Contains(logs.String(), "connected to PostgreSQL") {
		t.Errorf("the connection after retries is not logged:\n%s", logs.String())
	}
}
