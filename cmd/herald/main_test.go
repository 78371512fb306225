package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// syncBuffer is written by tail's goroutine and read by the test.
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

func TestPublishAndTail(t *testing.T) {
	srv, err := server.New(t.Context(), server.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { stop(); <-done }()
	addr := "--server=" + srv.Addr()

	for _, proto := range []string{"grpc", "connect", "grpcweb"} {
		var out bytes.Buffer
		if err := publish(t.Context(), []string{addr, "--protocol=" + proto, "chat", "hello " + proto}, nil, &out); err != nil {
			t.Fatalf("publish over %s: %v", proto, err)
		}
		if !strings.HasPrefix(out.String(), "published chat at position ") {
			t.Fatalf("publish printed %q", out.String())
		}
	}
	var out bytes.Buffer
	stdin := strings.NewReader("{\"text\":\"hi\"}\n")
	if err := publish(t.Context(), []string{addr, "--key=k1", "--type=message.created", "chat"}, stdin, &out); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := publish(t.Context(), []string{addr, "--key=k1", "--type=message.created", "chat"}, strings.NewReader("{\"text\":\"hi\"}\n"), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "duplicate") {
		t.Fatalf("retry with the same key printed %q, want a duplicate notice", out.String())
	}
	if err := publish(t.Context(), []string{addr, "bad channel", "x"}, nil, io.Discard); err == nil || !strings.Contains(err.Error(), "invalid_argument") {
		t.Fatalf("bad channel: %v", err)
	}

	tailCtx, stopTail := context.WithCancel(t.Context())
	var lines syncBuffer
	tailDone := make(chan error, 1)
	go func() { tailDone <- tail(tailCtx, []string{addr, "--from=0", "chat"}, &lines) }()
	want := "1\tchat\tmessage\thello grpc\n2\tchat\tmessage\thello connect\n3\tchat\tmessage\thello grpcweb\n4\tchat\tmessage.created\t{\"text\":\"hi\"}\n"
	deadline := time.Now().Add(10 * time.Second)
	for lines.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("tail printed %q, want %q", lines.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopTail()
	if err := <-tailDone; err != nil {
		t.Fatalf("tail: %v", err)
	}
}

func TestMigrate(t *testing.T) {
	admin := pgtest.OpenPool(t, pgtest.URL(t))
	schema := fmt.Sprintf("herald_migrate_%d", time.Now().UnixNano())
	if _, err := admin.Exec(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	url := "--database-url=" + pgtest.SchemaURL(t, schema)
	for range 2 { // applying twice is a no-op
		if err := migrate(t.Context(), []string{url}, io.Discard); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	var n int
	if err := admin.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = $1 AND table_name IN ('herald_events', 'herald_channels')`, schema).Scan(&n); err != nil || n != 2 {
		t.Fatalf("tables after migrate: %d, %v", n, err)
	}
	t.Setenv("DATABASE_URL", "")
	t.Setenv("HERALD_DATABASE_URL", "")
	if err := migrate(t.Context(), nil, io.Discard); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("migrate without a database: %v", err)
	}
}

// TestServeNamespacesFile: a namespaces file with mistakes stops the
// server before it listens, naming every mistake.
func TestServeNamespacesFile(t *testing.T) {
	path := t.TempDir() + "/ns.json"
	if err := os.WriteFile(path, []byte(`{"namespaces": {"news": {"publsh": "services"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := serve(t.Context(), []string{"--addr=127.0.0.1:0", "--namespaces=" + path}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "publsh") || !strings.Contains(err.Error(), path) {
		t.Fatalf("serve with a misspelt field: %v", err)
	}
	if err := os.WriteFile(path, []byte(`{"namespaces": {"news": {"publish": "nobody", "maxAge": "soon"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err = serve(t.Context(), []string{"--addr=127.0.0.1:0", "--namespaces=" + path}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "publish") || !strings.Contains(err.Error(), "maxAge") {
		t.Fatalf("serve with bad values: %v", err)
	}
}
