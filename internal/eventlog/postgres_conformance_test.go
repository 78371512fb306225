package eventlog_test

import (
	"testing"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/eventlog/eventlogtest"
	"github.com/heraldrt/herald/internal/pgtest"
)

// TestPostgres runs the conformance suite over Postgres, each subtest on
// its own migrated schema and notify channel.
func TestPostgres(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, opts eventlog.Options) eventlog.Log {
		pool, schema := pgtest.Schema(t)
		return eventlogtest.Start(t, eventlog.OpenPostgres(pool, eventlog.PostgresOptions{
			Options:       opts,
			NotifyChannel: schema,
		}))
	})
}
