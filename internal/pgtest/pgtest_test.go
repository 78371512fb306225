package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/migrations"
)

func TestSchema(t *testing.T) {
	t.Parallel()
	var schema string
	t.Run("migrated", func(t *testing.T) {
		pool, s := pgtest.Schema(t)
		schema = s
		var got string
		if err := pool.QueryRow(t.Context(), "SELECT current_schema()").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != s {
			t.Fatalf("current_schema() = %q, want %q", got, s)
		}
		var n int
		if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM herald_events").Scan(&n); err != nil {
			t.Fatal(err)
		}
		// A second pool on the same schema sees the same tables; migrating
		// again is a no-op.
		other := pgtest.OpenPool(t, pgtest.SchemaURL(t, s))
		if err := migrations.Up(t.Context(), other); err != nil {
			t.Fatal(err)
		}
		if err := other.QueryRow(t.Context(), "SELECT count(*) FROM herald_channels").Scan(&n); err != nil {
			t.Fatal(err)
		}
	})
	conn, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(t.Context(),
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("schema %s still exists after the test", schema)
	}
}
