package eventlog_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldrt/herald/internal/pgtest"
)

// BenchmarkOutboxTx measures what publishing costs an application's
// transaction. Each op is one transaction of C concurrent clients (own
// connections, durable commits): BEGIN; INSERT the application's row;
// [second statement]; COMMIT. The second statement is nothing (insert), a
// plain one-row INSERT of the same data into a table shaped like the
// outbox (insert+insert), herald_publish_tx (insert+publish_tx), or
// herald_publish_tx and a NOTIFY (insert+publish_tx+notify: waking the
// drain from the transaction). A Herald writer drains the outbox
// meanwhile, as in production. stmt-us is the median time of the second
// statement, as the client sees it.
func BenchmarkOutboxTx(b *testing.B) {
	data := `{"order":42,"total":12,"note":"` + strings.Repeat("x", 200) + `"}`
	for _, clients := range []int{1, 16} {
		for _, v := range []struct{ name, stmt string }{
			{"insert", ""},
			{"insert+insert", "INSERT INTO bench_audit (channel, type, data, idempotency_key) VALUES ($1, 'order.paid', $2::jsonb, $3)"},
			{"insert+publish_tx", "SELECT herald_publish_tx($1, 'order.paid', $2::jsonb, $3)"},
			{"insert+publish_tx+notify", "SELECT herald_publish_tx($1, 'order.paid', $2::jsonb, $3), pg_notify('bench_wake', '')"},
		} {
			b.Run(fmt.Sprintf("clients=%d/%s", clients, v.name), func(b *testing.B) {
				pool, schema := pgtest.Schema(b)
				ctx := context.Background()
				if _, err := pool.Exec(ctx, `
					CREATE TABLE bench_orders (id bigint PRIMARY KEY, data jsonb NOT NULL);
					CREATE TABLE bench_audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, channel text NOT NULL,
						type text NOT NULL, data jsonb NOT NULL, idempotency_key text, created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
					b.Fatal(err)
				}
				runPostgres(b, pool, schema, autoCreate()) // drains meanwhile
				conns := make([]*pgx.Conn, clients)
				for i := range conns {
					c, err := pgx.Connect(ctx, pgtest.SchemaURL(b, schema))
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close(ctx)
					conns[i] = c
				}
				var (
					next  atomic.Int64
					wg    sync.WaitGroup
					mu    sync.Mutex
					stmts []time.Duration
					fail  atomic.Pointer[error]
				)
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for _, c := range conns {
					wg.Go(func() {
						var mine []time.Duration
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								break
							}
							err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
								if _, err := tx.Exec(ctx, "INSERT INTO bench_orders (id, data) VALUES ($1, $2::jsonb)", i, data); err != nil {
									return err
								}
								if v.stmt == "" {
									return nil
								}
								t0 := time.Now()
								_, err := tx.Exec(ctx, v.stmt, fmt.Sprintf("orders:%d", i%100), data, fmt.Sprintf("pay-%d", i))
								mine = append(mine, time.Since(t0))
								return err
							})
							if err != nil {
								fail.CompareAndSwap(nil, &err)
								break
							}
						}
						mu.Lock()
						stmts = append(stmts, mine...)
						mu.Unlock()
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if p := fail.Load(); p != nil {
					b.Fatal(*p)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tx/s")
				if len(stmts) > 0 {
					slices.Sort(stmts)
					b.ReportMetric(float64(stmts[len(stmts)/2].Nanoseconds())/1e3, "stmt-us")
				}
			})
		}
	}
}

// BenchmarkOutboxDrain measures how fast one writer drains the outbox:
// b.N events (256 bytes over 100 channels) are committed to the outbox by
// 64 transactions first, then a log starts and drains them (MaxBatch
// rows per statement, as BenchmarkAppend/batched writes). Compare its
// events/s with BenchmarkAppend/batched in the same session.
func BenchmarkOutboxDrain(b *testing.B) {
	pool, schema := pgtest.Schema(b)
	ctx := context.Background()
	// Channels exist, as in BenchmarkAppend.
	if _, err := pool.Exec(ctx, `INSERT INTO herald_channels (name) SELECT 'bench-' || g FROM generate_series(0, 99) g`); err != nil {
		b.Fatal(err)
	}
	const txs = 64
	var wg sync.WaitGroup
	errc := make(chan error, txs)
	for t := range txs {
		wg.Go(func() {
			n := b.N / txs
			if t < b.N%txs {
				n++
			}
			_, err := pool.Exec(ctx, `SELECT herald_publish_tx('bench-' || (g % 100), '', convert_to(repeat('x', 256), 'UTF8'))
				FROM generate_series(1, $1) g`, n)
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	lg := runPostgres(b, pool, schema, autoCreate())
	for {
		head, err := lg.Head(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if head >= int64(b.N) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM herald_outbox").Scan(&left); err != nil || left != 0 {
		b.Fatalf("%d rows left in the outbox (%v)", left, err)
	}
}
