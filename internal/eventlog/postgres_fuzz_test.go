package eventlog_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
)

// FuzzPostgres runs FuzzMemory's operations on a Postgres log and a Memory
// log side by side: each must keep its own promises (checkViews), and the
// two must agree step by step on positions, results, error texts and the
// entries they hold. The schema is emptied before each input.
func FuzzPostgres(f *testing.F) {
	for _, ops := range fuzzSeeds() {
		f.Add(ops)
	}
	pool, schema := pgtest.Schema(f)
	pg := runPostgres(f, pool, schema, eventlog.PostgresOptions{
		Options: eventlog.Options{AutoCreate: true},
		Logger:  slog.New(slog.DiscardHandler),
	})
	f.Fuzz(func(t *testing.T, ops []byte) {
		// Positions start at 1 again, as in a fresh Memory.
		if _, err := pool.Exec(context.Background(), `TRUNCATE herald_events, herald_channels RESTART IDENTITY`); err != nil {
			t.Fatal(err)
		}
		runOps(t, []eventlog.Log{eventlog.NewMemory(eventlog.Options{AutoCreate: true}), pg}, ops)
	})
}
