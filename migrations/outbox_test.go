package migrations_test

import (
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/migrations"
)

// TestOutboxDownAndUp: 0006 goes down to 0005 leaving none of its objects,
// and up again.
func TestOutboxDownAndUp(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithTableName(migrations.VersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(t.Context(), 5); err != nil {
		t.Fatalf("down to 5: %v", err)
	}
	var left int
	if err := pool.QueryRow(t.Context(), `SELECT
		(SELECT count(*) FROM pg_proc WHERE pronamespace = $1::regnamespace AND (proname LIKE 'herald_outbox%' OR proname = 'herald_publish_tx')) +
		(SELECT count(*) FROM pg_class WHERE relnamespace = $1::regnamespace AND relname LIKE 'herald_outbox%')`, schema).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d outbox objects left after going down", left)
	}
	if err := migrations.Up(t.Context(), pool); err != nil {
		t.Fatalf("up again: %v", err)
	}
}
