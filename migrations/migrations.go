// Package migrations owns Herald's PostgreSQL schema: versioned goose SQL
// files embedded in FS, applied by Up. Every object is created unqualified,
// in the first schema of the connection's search_path, and named herald_*.
package migrations

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the migrations, 0001_init.sql onwards.
//
//go:embed *.sql
var FS embed.FS

// VersionTable records the applied migrations.
const VersionTable = "herald_schema_migrations"

// lockBase is mixed with the schema's hash into the session lock that
// serialises concurrent Up calls (instances starting together) on one schema
// while letting different schemas (parallel tests) migrate at once.
const lockBase int64 = 0x6865726c64 << 24 // "herld"

// Up applies every pending migration to the schema the pool's connections
// use (the first of their search_path). Concurrent calls on one schema wait
// for each other. It is safe to call on an up-to-date schema.
func Up(ctx context.Context, pool *pgxpool.Pool) error {
	var schemaHash int32
	if err := pool.QueryRow(ctx, "SELECT hashtext(current_schema())").Scan(&schemaHash); err != nil {
		return fmt.Errorf("migrations: find the current schema: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(lockBase^int64(uint32(schemaHash))),
		lock.WithLockTimeout(1, 300),
	)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, FS,
		goose.WithTableName(VersionTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	return nil
}
