package eventlog_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/migrations"
)

// BenchmarkSeqCost measures what per-channel seq (0007_seq_tags.sql) costs
// the writer's statement: one batch of 64 events of 256 bytes, committed,
// through herald_publish of the schema before 0007 (migrated to the end,
// then 0007's Down applied) and of the schema with it, alternating batch by
// batch on one connection each, so that both see the same machine load.
// The writer runs batches one after another, so its throughput is the
// batch size over this latency. channels=64 spreads a batch over 64
// channels (as BenchmarkAppend's publishers do), channels=1 puts it in one.
// Reported: ms per batch of each (medians), and after/before (> 1:
// slower). Knobs for checking the method and trying a variant:
// SEQBENCH_AA=1 runs the 0007 writer on both sides (an A/A run: expect
// about 1); SEQBENCH_NOINDEX=1 drops the (channel, seq) index on the after
// side and reads a channel's last seq through the (channel, id) index
// instead (what from_seq would then lack: its index).
func BenchmarkSeqCost(b *testing.B) {
	for _, nch := range []int{64, 1} {
		b.Run(fmt.Sprintf("channels=%d", nch), func(b *testing.B) {
			ctx := context.Background()
			before, _ := pgtest.Schema(b)
			down := migrationDown(b, "0007_seq_tags.sql")
			aa := os.Getenv("SEQBENCH_AA") != ""
			if aa {
				down = "SELECT 1"
			}
			if _, err := before.Exec(ctx, down); err != nil {
				b.Fatalf("0007 down: %v", err)
			}
			after, _ := pgtest.Schema(b)
			if os.Getenv("SEQBENCH_NOINDEX") != "" {
				src, _ := fs.ReadFile(migrations.FS, "0007_seq_tags.sql")
				up, _, _ := strings.Cut(string(src), "-- +goose Down")
				i := strings.LastIndex(up, "CREATE FUNCTION herald_publish(")
				fn := up[i:strings.LastIndex(up, "-- +goose StatementEnd")]
				fn = strings.Replace(fn, "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
				fn = strings.Replace(fn, "(SELECT max(s.seq) FROM herald_events s WHERE s.channel = i.channel)",
					"(SELECT s.seq FROM herald_events s WHERE s.channel = i.channel ORDER BY s.id DESC LIMIT 1)", 1)
				if _, err := after.Exec(ctx, "DROP INDEX herald_events_channel_seq"); err != nil {
					b.Fatal(err)
				}
				if _, err := after.Exec(ctx, fn); err != nil {
					b.Fatal(err)
				}
			}

			const n = 64
			channels := make([]string, n)
			types, keys, authors := make([]string, n), make([]string, n), make([]string, n)
			data, digests := make([][]byte, n), make([][]byte, n)
			formats := make([]int16, n)
			tags := make([]*string, n)
			for i := range n {
				channels[i] = fmt.Sprintf("bench-%d", i%nch)
				data[i] = make([]byte, 256)
			}
			run := func(p *pgxpool.Pool, withSeq bool) time.Duration {
				start := time.Now()
				var err error
				if withSeq {
					_, err = p.Exec(ctx, `SELECT count(*) FROM herald_publish($1, $2, $3, $4, $5, $6, $7, $8, true)`,
						channels, types, data, keys, authors, digests, formats, tags)
				} else {
					_, err = p.Exec(ctx, `SELECT count(*) FROM herald_publish($1, $2, $3, $4, $5, $6, $7, true)`,
						channels, types, data, keys, authors, digests, formats)
				}
				if err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			for range 20 { // channels created, plans cached, pages warm
				run(before, aa)
				run(after, true)
			}
			var tb, ta []time.Duration
			b.ResetTimer()
			for i := range b.N {
				if i%2 == 0 {
					tb = append(tb, run(before, aa))
					ta = append(ta, run(after, true))
				} else {
					ta = append(ta, run(after, true))
					tb = append(tb, run(before, aa))
				}
			}
			b.StopTimer()
			mb, ma := median(tb), median(ta)
			b.ReportMetric(float64(mb.Microseconds())/1000, "before-ms/batch")
			b.ReportMetric(float64(ma.Microseconds())/1000, "after-ms/batch")
			b.ReportMetric(float64(ma)/float64(mb), "after/before")
		})
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// migrationDown returns the Down section of a migration.
func migrationDown(tb testing.TB, name string) string {
	tb.Helper()
	src, err := fs.ReadFile(migrations.FS, name)
	if err != nil {
		tb.Fatal(err)
	}
	_, down, ok := strings.Cut(string(src), "-- +goose Down")
	if !ok {
		tb.Fatalf("%s has no Down section", name)
	}
	return down
}
