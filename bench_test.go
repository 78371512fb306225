package herald_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldrt/herald"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// BenchmarkOutboxDelivery measures commit -> delivered: applications
// commit transactions that publish one event each (herald_publish_tx) at a
// fixed rate (open loop: transaction i is due at start + i/rate, from 16
// connections), and one subscriber (this package's Subscribe, gRPC)
// receives them from a Herald instance on the same database. Latency is
// the time from Commit returning to the event arriving, on one clock.
// wake=poll leaves the wake-up to the drain's timer; wake=notify also
// NOTIFYs Herald's channel in each transaction. b.N transactions at
// 1,000/s.
func BenchmarkOutboxDelivery(b *testing.B) {
	const (
		rate    = 1000
		clients = 16
	)
	for _, wake := range []string{"poll", "notify"} {
		b.Run("wake="+wake, func(b *testing.B) {
			pool, schema := pgtest.Schema(b)
			in := start(b, server.Config{
				DatabaseURL: pgtest.SchemaURL(b, schema),
				Postgres:    eventlog.PostgresOptions{NotifyChannel: schema},
			})
			ctx := context.Background()
			if _, err := pool.Exec(ctx, "CREATE TABLE bench_orders (id bigint PRIMARY KEY, paid boolean NOT NULL)"); err != nil {
				b.Fatal(err)
			}
			stmt := "SELECT herald_publish_tx('bench', 'order.paid', $1::text)"
			if wake == "notify" {
				stmt = "SELECT herald_publish_tx('bench', 'order.paid', $1::text), pg_notify('" + schema + "', '')"
			}
			c, err := herald.NewClient(in.url)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sub, err := c.Subscribe(ctx, []string{"bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()

			committed := make([]atomic.Int64, b.N) // unix ns when Commit returned
			received := make([]int64, b.N)
			recvDone := make(chan error, 1)
			go func() {
				rctx, cancel := context.WithTimeout(ctx, time.Duration(b.N)*time.Second/rate+time.Minute)
				defer cancel()
				for range b.N {
					ev, err := sub.Next(rctx)
					if err != nil {
						recvDone <- err
						return
					}
					now := time.Now().UnixNano()
					i, err := strconv.Atoi(string(ev.Data))
					if err != nil || i < 0 || i >= b.N || received[i] != 0 {
						recvDone <- fmt.Errorf("unexpected or repeated event %q", ev.Data)
						return
					}
					received[i] = now
				}
				recvDone <- nil
			}()

			var (
				next, late atomic.Int64
				wg         sync.WaitGroup
				fail       atomic.Pointer[error]
			)
			b.ResetTimer()
			begin := time.Now()
			for range clients {
				wg.Go(func() {
					conn, err := pool.Acquire(ctx)
					if err != nil {
						fail.CompareAndSwap(nil, &err)
						return
					}
					defer conn.Release()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						due := begin.Add(time.Duration(i) * time.Second / rate)
						if d := time.Until(due); d > 0 {
							time.Sleep(d)
						} else if d < -10*time.Millisecond {
							late.Add(1)
						}
						err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
							if _, err := tx.Exec(ctx, "INSERT INTO bench_orders (id, paid) VALUES ($1, true)", i); err != nil {
								return err
							}
							_, err := tx.Exec(ctx, stmt, strconv.FormatInt(i, 10))
							return err
						})
						committed[i].Store(time.Now().UnixNano())
						if err != nil {
							fail.CompareAndSwap(nil, &err)
							return
						}
					}
				})
			}
			wg.Wait()
			sent := time.Since(begin)
			if p := fail.Load(); p != nil {
				b.Fatal(*p)
			}
			if err := <-recvDone; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			lat := make([]time.Duration, b.N)
			for i := range lat {
				lat[i] = time.Duration(received[i] - committed[i].Load())
			}
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
			b.ReportMetric(float64(b.N)/sent.Seconds(), "tx/s")
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(float64(late.Load()), "late-tx")
		})
	}
}
