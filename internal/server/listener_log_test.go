package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// syncBuffer collects a handler's output; slog handlers may write from
// several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestListenerReconnectIsLoggedByTheServersLogger: when the event log's
// LISTEN connection is cut, the reconnect is reported once, through the
// logger the server was configured with (here JSON, as --log-format json
// gives), not the standard library's logger.
func TestListenerReconnectIsLoggedByTheServersLogger(t *testing.T) {
	t.Parallel()
	dsn, schema := database(t)
	var out syncBuffer
	logger := slog.New(slog.NewJSONHandler(&out, nil))
	startInstance(t, server.Config{DatabaseURL: dsn, Logger: logger, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}})

	admin, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	// The listener's connection is the one that ran LISTEN on this test's
	// channel (the schema name).
	listener := func() (pid int32) {
		err := admin.QueryRow(t.Context(), `
			SELECT coalesce(max(pid), 0) FROM pg_stat_activity
			WHERE application_name = 'herald-listener' AND query ILIKE '%' || $1 || '%'`, schema).Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	var first int32
	waitFor(t, func() bool { first = listener(); return first != 0 })
	if _, err := admin.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, first); err != nil {
		t.Fatal(err)
	}
	// The warning is written before the reconnect, so once a new listener
	// runs it is there.
	waitFor(t, func() bool { p := listener(); return p != 0 && p != first })

	var reconnects []map[string]any
	for line := range strings.Lines(out.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, "listener") && strings.Contains(msg, "reconnect") {
			reconnects = append(reconnects, rec)
		}
	}
	if len(reconnects) != 1 {
		t.Fatalf("%d reconnect lines, want 1; the log:\n%s", len(reconnects), out.String())
	}
	if r := reconnects[0]; r["level"] != "WARN" || r["channel"] != schema || r["err"] == nil || r["retry_in"] == nil {
		t.Errorf("reconnect line %v: want level WARN, channel %q, err and retry_in", r, schema)
	}
}
