package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// Signals against stored events (issue 13). docs/benchmarks.md has the
// method and the figures. From internal/server:
//
//	go test -c -o /tmp/server.test .
//	/tmp/server.test -test.run '^$' -test.bench BenchmarkSignalLatency -test.benchtime 2000x -test.count 3
//	/tmp/server.test -test.run '^$' -test.bench BenchmarkStoredWithSignals -test.benchtime 40000x -test.count 3

// signalBenchConfig: "room" allows signals, without a rate limit.
func signalBenchConfig(tb testing.TB, dsn, schema string) server.Config {
	set, err := namespace.Parse([]byte(`{"namespaces": {"room": {"signals": true}}}`))
	if err != nil {
		tb.Fatal(err)
	}
	cfg := server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}}
	cfg.Services.Namespaces = set
	cfg.Services.SignalRate = limits.Rate{PerSecond: 1e9, Burst: 1 << 30}
	return cfg
}

// BenchmarkSignalLatency: two instances on one PostgreSQL schema; a gRPC
// Subscribe stream on B; a publisher on A sends, one at a time, a stored
// event (Publish) or a signal (Signal), 64 bytes, and waits until B's
// subscriber has it. Latency is from the call on A to the message on B;
// b.N messages per kind.
func BenchmarkSignalLatency(b *testing.B) {
	for _, kind := range []string{"event", "signal"} {
		b.Run("kind="+kind, func(b *testing.B) {
			_, schema := pgtest.Schema(b)
			dsn := pgtest.SchemaURL(b, schema)
			_, addrA := benchInstance(b, signalBenchConfig(b, dsn, schema))
			_, addrB := benchInstance(b, signalBenchConfig(b, dsn, schema))
			waitReady(b, addrA, addrB) // the signal listeners are up
			a := heraldv1.NewEventServiceClient(grpcConn(b, addrA))
			bc := heraldv1.NewEventServiceClient(grpcConn(b, addrB))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			const ch = "room:latency"
			if _, err := a.Publish(ctx, &heraldv1.PublishRequest{Channel: ch}); err != nil {
				b.Fatal(err)
			}
			st, err := bc.Subscribe(ctx, &heraldv1.SubscribeRequest{Channels: []string{ch}})
			if err != nil {
				b.Fatal(err)
			}
			if m, err := st.Recv(); err != nil || m.GetSubscribed() == nil {
				b.Fatalf("subscribe: %v", err)
			}
			got := make(chan struct{}, 1)
			go func() {
				for {
					m, err := st.Recv()
					if err != nil {
						return
					}
					if (kind == "event") == (m.GetEvent() != nil) && (kind == "signal") == (m.GetSignal() != nil) {
						got <- struct{}{}
					}
				}
			}()
			payload := make([]byte, 64)
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				if kind == "event" {
					_, err = a.Publish(ctx, &heraldv1.PublishRequest{Channel: ch, Data: payload})
				} else {
					_, err = a.Signal(ctx, &heraldv1.SignalRequest{Channel: ch, Data: payload})
				}
				if err != nil {
					b.Fatal(err)
				}
				select {
				case <-got:
				case <-time.After(10 * time.Second):
					b.Fatalf("message %d not delivered within 10s", i)
				}
				lat[i] = time.Since(t0)
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
	}
}

// BenchmarkStoredWithSignals: the unary publish workload of
// BenchmarkPublishGRPC (64 publishers, 256-byte events, 100 channels, one
// instance on PostgreSQL), alone and while 1,000 signals/s of 64 bytes
// flow through the same instance to a subscriber (a ticker paces them;
// signals/s reports the rate achieved).
func BenchmarkStoredWithSignals(b *testing.B) {
	for _, rate := range []int{0, 1000} {
		b.Run(fmt.Sprintf("signals=%d", rate), func(b *testing.B) {
			_, schema := pgtest.Schema(b)
			srv, addr := benchInstance(b, signalBenchConfig(b, pgtest.SchemaURL(b, schema), schema))
			events := heraldv1.NewEventServiceClient(grpcConn(b, addr))
			channels := benchChannelNames()
			payload := make([]byte, benchEventBytes)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			head0 := warmChannels(b, events, srv, channels)
			waitReady(b, addr)

			var sent, received atomic.Int64
			sigCtx, stopSignals := context.WithCancel(ctx)
			var wg sync.WaitGroup
			if rate > 0 {
				sigc := heraldv1.NewEventServiceClient(grpcConn(b, addr))
				st, err := sigc.Subscribe(sigCtx, &heraldv1.SubscribeRequest{Channels: []string{"room:signals"}})
				if err != nil {
					b.Fatal(err)
				}
				wg.Go(func() {
					for {
						m, err := st.Recv()
						if err != nil {
							return
						}
						if m.GetSignal() != nil {
							received.Add(1)
						}
					}
				})
				// 32 senders, each paced at rate/32 per second.
				for range 32 {
					wg.Go(func() {
						t := time.NewTicker(time.Second * 32 / time.Duration(rate))
						defer t.Stop()
						for {
							select {
							case <-sigCtx.Done():
								return
							case <-t.C:
							}
							if _, err := sigc.Signal(sigCtx, &heraldv1.SignalRequest{Channel: "room:signals", Data: make([]byte, 64)}); err != nil {
								if !errors.Is(sigCtx.Err(), context.Canceled) {
									b.Errorf("signal: %v", err)
								}
								return
							}
							sent.Add(1)
						}
					})
				}
				time.Sleep(500 * time.Millisecond) // flowing before the measurement
			}
			s0 := sent.Load()
			t0 := time.Now()
			publishUnary(b, srv, events, func(int) context.Context { return ctx }, cancel, channels, payload, head0)
			if rate > 0 {
				b.ReportMetric(float64(sent.Load()-s0)/time.Since(t0).Seconds(), "signals/s")
			}
			stopSignals()
			wg.Wait()
			if rate > 0 && received.Load() == 0 {
				b.Fatal("no signal received")
			}
		})
	}
}

// waitReady waits until every instance answers /readyz with 200.
func waitReady(tb testing.TB, addrs ...string) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, addr := range addrs {
		for {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				tb.Fatalf("%s not ready within 15s", addr)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
