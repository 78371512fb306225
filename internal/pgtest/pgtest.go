// Package pgtest gives tests a real PostgreSQL: each test gets its own
// freshly migrated schema, dropped when the test ends, so tests run in
// parallel without seeing each other's rows or notifications.
//
// The database is TEST_DATABASE_URL, else DATABASE_URL, else
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. A database that
// cannot be reached fails the test: these tests are never skipped.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/migrations"
)

// DefaultURL is used when neither TEST_DATABASE_URL nor DATABASE_URL is set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

var reach struct {
	once sync.Once
	url  string
	err  error
}

// URL returns the test database's connection string, after checking once
// per process that the database answers; it fails tb otherwise.
func URL(tb testing.TB) string {
	tb.Helper()
	reach.once.Do(func() {
		reach.url = DefaultURL
		for _, k := range []string{"TEST_DATABASE_URL", "DATABASE_URL"} {
			if v := os.Getenv(k); v != "" {
				reach.url = v
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, reach.url)
		if err != nil {
			reach.err = err
			return
		}
		reach.err = conn.Ping(ctx)
		_ = conn.Close(ctx)
	})
	if reach.err != nil {
		tb.Fatalf("pgtest: PostgreSQL at %s is not reachable (set TEST_DATABASE_URL, or start it: "+
			"pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start): %v",
			redact(reach.url), reach.err)
	}
	return reach.url
}

// Pool returns a pool on a fresh migrated schema; see Schema.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool, _ := Schema(tb)
	return pool
}

// Schema creates a schema named herald_test_<random>, migrates it and
// returns a pool whose connections use it (search_path) and its name, which
// also makes a good unique LISTEN/NOTIFY channel. When the test ends the
// pool is closed and the schema dropped; close anything else that uses the
// schema in a t.Cleanup registered after Schema (cleanups run last first).
func Schema(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	pool, schema := EmptySchema(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := migrations.Up(ctx, pool); err != nil {
		tb.Fatalf("pgtest: migrate schema %s: %v", schema, err)
	}
	return pool, schema
}

// EmptySchema is Schema without the migrations, for tests of the
// migrations themselves.
func EmptySchema(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	base := URL(tb)
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := "herald_test_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	defer func() { _ = admin.Close(context.Background()) }()
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create schema: %v", err)
	}
	tb.Cleanup(func() { dropSchema(tb, base, schema) })
	return OpenPool(tb, SchemaURL(tb, schema)), schema
}

// SchemaURL returns the test database's connection string with search_path
// set to schema, for opening more pools on one schema (two instances of a
// server on one database).
func SchemaURL(tb testing.TB, schema string) string {
	tb.Helper()
	base := URL(tb)
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		return base + " search_path=" + schema // keyword/value form
	}
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("pgtest: parse the database URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// OpenPool opens a pool on connString and closes it when the test ends.
func OpenPool(tb testing.TB, connString string) *pgxpool.Pool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, connString)
	if err != nil {
		tb.Fatalf("pgtest: open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("pgtest: ping: %v", err)
	}
	return pool
}

func dropSchema(tb testing.TB, base, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Errorf("pgtest: drop schema %s: %v", schema, err)
		return
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		tb.Errorf("pgtest: drop schema %s: %v", schema, err)
	}
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
