package eventlog_test

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/migrations"
)

// BenchmarkSeqCost measures what per-channel seq (0007_seq_tags.sql,
// 0009_seq_cache.sql) costs the writer's statement: one batch of 64 events
// of 256 bytes, committed, through herald_publish of the schema before 0007
// (migrated to the end, then 0009's and 0007's Down applied) and of the
// schema with it, alternating batch by batch on one connection each, so
// that both see the same machine load. The writer runs batches one after
// another, so its throughput is the batch size over this latency.
// channels=64 spreads a batch over 64 channels (as BenchmarkAppend's
// publishers do), channels=1 puts it in one. Every side reads each
// answer's ord and id (and seq), as the writer does. Reported: ms per batch
// of each (medians), and after/before (> 1: slower).
//
// SEQBENCH_AFTER picks the after side: cache (the default: the writer
// remembering each channel's last seq, as it does), lookup (0009's writer
// remembering nothing: every channel of a batch looked up, as when another
// instance writes in between) or 0007 (0009's Down applied: the full
// (channel, seq) index and the lookups, as before 0009). SEQBENCH_AA=1
// runs the after side's writer on both sides (an A/A run: expect about 1).
// SEQBENCH_AFTER_SQL=file runs that file's SQL on the after side's schema
// first (to try a variant: CREATE OR REPLACE FUNCTION ...).
func BenchmarkSeqCost(b *testing.B) {
	for _, nch := range []int{64, 1} {
		b.Run(fmt.Sprintf("channels=%d", nch), func(b *testing.B) {
			ctx := context.Background()
			mode := cmp.Or(os.Getenv("SEQBENCH_AFTER"), "cache")
			aa := os.Getenv("SEQBENCH_AA") != ""
			down9, down7 := migrationDown(b, "0009_seq_cache.sql"), migrationDown(b, "0007_seq_tags.sql")
			before, _ := pgtest.Schema(b)
			beforeMode := "none"
			switch {
			case aa && mode == "0007":
				beforeMode = "lookup"
				down7 = "SELECT 1"
			case aa:
				beforeMode, down9, down7 = mode, "SELECT 1", "SELECT 1"
			}
			for _, down := range []string{down9, down7} {
				if _, err := before.Exec(ctx, down); err != nil {
					b.Fatalf("down: %v", err)
				}
			}
			after, _ := pgtest.Schema(b)
			if mode == "0007" {
				if _, err := after.Exec(ctx, down9); err != nil {
					b.Fatalf("0009 down: %v", err)
				}
				mode = "lookup"
			}
			if f := os.Getenv("SEQBENCH_AFTER_SQL"); f != "" {
				sql, err := os.ReadFile(f)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := after.Exec(ctx, string(sql)); err != nil {
					b.Fatalf("%s: %v", f, err)
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
			bs := &seqBenchSide{pool: before, mode: beforeMode, lastSeq: map[string]int64{}}
			as := &seqBenchSide{pool: after, mode: mode, lastSeq: map[string]int64{}}
			lastSeqs := make([]*int64, n)
			run := func(sd *seqBenchSide) time.Duration {
				start := time.Now()
				var (
					rows pgx.Rows
					err  error
				)
				switch sd.mode {
				case "none":
					rows, err = sd.pool.Query(ctx, `SELECT ord, id, 0::bigint, false FROM herald_publish($1, $2, $3, $4, $5, $6, $7, true)`,
						channels, types, data, keys, authors, digests, formats)
				case "lookup":
					rows, err = sd.pool.Query(ctx, `SELECT ord, id, seq, false FROM herald_publish($1, $2, $3, $4, $5, $6, $7, $8, true)`,
						channels, types, data, keys, authors, digests, formats, tags)
				default:
					for i, ch := range channels {
						lastSeqs[i] = nil
						if s, ok := sd.lastSeq[ch]; ok {
							lastSeqs[i] = &s
						}
					}
					rows, err = sd.pool.Query(ctx, `SELECT ord, id, seq, seq_cached FROM herald_publish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true)`,
						channels, types, data, keys, authors, digests, formats, tags, lastSeqs, sd.lastID)
				}
				if err != nil {
					b.Fatal(err)
				}
				first := true
				for rows.Next() {
					var ord, id, seq int64
					var cached bool
					if err := rows.Scan(&ord, &id, &seq, &cached); err != nil {
						b.Fatal(err)
					}
					if first && cached {
						sd.hits++
					} else if first {
						clear(sd.lastSeq)
					}
					first = false
					sd.lastID = max(sd.lastID, id)
					sd.lastSeq[channels[ord-1]] = max(sd.lastSeq[channels[ord-1]], seq)
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			for range 20 { // channels created, plans cached, pages warm
				run(bs)
				run(as)
			}
			var tb, ta []time.Duration
			b.ResetTimer()
			for i := range b.N {
				if i%2 == 0 {
					tb = append(tb, run(bs))
					ta = append(ta, run(as))
				} else {
					ta = append(ta, run(as))
					tb = append(tb, run(bs))
				}
			}
			b.StopTimer()
			mb, ma := median(tb), median(ta)
			b.ReportMetric(float64(mb.Microseconds())/1000, "before-ms/batch")
			b.ReportMetric(float64(ma.Microseconds())/1000, "after-ms/batch")
			b.ReportMetric(float64(ma)/float64(mb), "after/before")
			if as.mode == "cache" {
				b.ReportMetric(float64(as.hits)/float64(b.N+20), "cached/batch")
			}
		})
	}
}

// seqBenchSide is one side of BenchmarkSeqCost: a schema, which overload it
// calls (none: before 0007's; lookup: 0007's, which remembers nothing;
// cache: 0009's, remembering) and, for cache, what the writer remembers.
type seqBenchSide struct {
	pool    *pgxpool.Pool
	mode    string
	lastSeq map[string]int64
	lastID  int64
	hits    int
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
