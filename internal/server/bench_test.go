package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// Benchmarks of the whole server through its real gRPC API. They run only
// with -bench; docs/benchmarks.md has the method and the results. From
// internal/server:
//
//	go test -c -o /tmp/server.test .
//	/tmp/server.test -test.run '^$' -test.benchmem -test.bench BenchmarkPublishGRPC -test.benchtime 40000x -test.count 3
//	/tmp/server.test -test.run '^$' -test.benchmem -test.bench BenchmarkSubscribeStream/grpc-go -test.benchtime 200000x -test.count 5
//	/tmp/server.test -test.run '^$' -test.benchmem -test.bench BenchmarkSubscribeStream/connect-go -test.benchtime 20000x

const (
	benchPublishers = 64
	benchChannels   = 100
	benchEventBytes = 256
)

// benchObservability turns on, in every benchmark instance, what
// HERALD_BENCH_OBS names: "metrics" (Prometheus metrics recorded, as with
// --admin-addr), "tracing" (metrics, and every RPC traced: spans sampled
// and handed to a batch processor whose exporter drops them), or nothing
// ("" or "off"), to measure their cost with the same benchmarks.
func benchObservability(tb testing.TB, cfg *server.Config) {
	switch v := os.Getenv("HERALD_BENCH_OBS"); v {
	case "", "off":
	case "metrics", "tracing":
		cfg.Metrics = metrics.New()
		if v == "tracing" {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			tb.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			cfg.TracerProvider = tp
		}
	default:
		tb.Fatalf("HERALD_BENCH_OBS=%q: want off, metrics or tracing", v)
	}
}

// benchInstance runs a server on a random port until the benchmark ends
// (startInstance for testing.TB) and returns it with its host:port.
func benchInstance(tb testing.TB, cfg server.Config) (*server.Server, string) {
	tb.Helper()
	benchObservability(tb, &cfg)
	cfg.Addr = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("server.Run: %v", err)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + srv.Addr() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			tb.Fatal("server not healthy within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return srv, srv.Addr()
}

// pgBenchInstance runs a server on a fresh migrated schema.
func pgBenchInstance(tb testing.TB) (*server.Server, string) {
	tb.Helper()
	_, schema := pgtest.Schema(tb)
	return benchInstance(tb, server.Config{DatabaseURL: pgtest.SchemaURL(tb, schema), Postgres: eventlog.PostgresOptions{NotifyChannel: schema}})
}

func grpcConn(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

func benchChannelNames() []string {
	chs := make([]string, benchChannels)
	for i := range chs {
		chs[i] = fmt.Sprintf("bench-%d", i)
	}
	return chs
}

// reportLatency reports the p50 and p99 of lat (one entry per event) in ms.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p int) float64 {
		return float64(lat[min(len(lat)-1, len(lat)*p/100)]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(50), "p50-ms")
	b.ReportMetric(q(99), "p99-ms")
}

// publishUnary is the unary workload: benchPublishers goroutines call
// Publish (publisher p with ctxOf(p), which carries its credential) until
// b.N events are acknowledged, round robin over channels. It reports
// events/s and the publish→ack latency, and checks the log head moved by
// exactly b.N from head0. cancel stops the others at the first error.
func publishUnary(b *testing.B, srv *server.Server, events heraldv1.EventServiceClient, ctxOf func(p int) context.Context,
	cancel context.CancelFunc, channels []string, payload []byte, head0 int64) {
	lat := make([]time.Duration, b.N)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
	)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for p := range benchPublishers {
		ctx := ctxOf(p)
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				_, err := events.Publish(ctx, &heraldv1.PublishRequest{Channel: channels[i%int64(len(channels))], Data: payload})
				lat[i] = time.Since(t0)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if p := firstErr.Load(); p != nil {
		b.Fatalf("publish: %v", *p)
	}
	checkHead(b, srv, head0+int64(b.N))
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	reportLatency(b, lat)
}

// BenchmarkPublishGRPC measures publishing through the real gRPC API of one
// instance on PostgreSQL (durable commits as configured on the server): 64
// concurrent publishers, 256-byte events over 100 channels, one
// google.golang.org/grpc ClientConn (one HTTP/2 connection) shared by all.
// b.N is the number of events; events/s is b.N over the wall time, latency
// is from call to acknowledgement (after commit).
//
//   - unary: each publisher calls Publish and waits for the answer, so at
//     most 64 events are in flight.
//   - connect-pipelined/window=W: each publisher has its own bidirectional
//     Connect stream and keeps up to W unacknowledged publishes in flight
//     (W=4: 256 in all, as many as the 4 × 64 of the design's target;
//     W=16: 1,024); latency then includes the wait in the session's queue.
func BenchmarkPublishGRPC(b *testing.B) {
	b.Run("unary", func(b *testing.B) {
		srv, addr := pgBenchInstance(b)
		events := heraldv1.NewEventServiceClient(grpcConn(b, addr))
		channels := benchChannelNames()
		payload := make([]byte, benchEventBytes)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		head0 := warmChannels(b, events, srv, channels)

		publishUnary(b, srv, events, func(int) context.Context { return ctx }, cancel, channels, payload, head0)
	})

	for _, window := range []int{4, 16} { // unacknowledged publishes per stream
		b.Run(fmt.Sprintf("connect-pipelined/window=%d", window), func(b *testing.B) {
			srv, addr := pgBenchInstance(b)
			events := heraldv1.NewEventServiceClient(grpcConn(b, addr))
			channels := benchChannelNames()
			payload := make([]byte, benchEventBytes)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			head0 := warmChannels(b, events, srv, channels)

			lat := make([]time.Duration, b.N)
			sentAt := make([]atomic.Int64, b.N) // ns since start; written by the sender, read by the receiver
			var (
				next     atomic.Int64
				wg       sync.WaitGroup
				firstErr atomic.Pointer[error]
			)
			fail := func(err error) {
				firstErr.CompareAndSwap(nil, &err)
				cancel()
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range benchPublishers {
				wg.Go(func() {
					st, err := events.Connect(ctx)
					if err != nil {
						fail(err)
						return
					}
					sem := make(chan struct{}, window)
					var sent atomic.Int64
					sendDone := make(chan struct{})
					go func() {
						defer close(sendDone)
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								break
							}
							select {
							case sem <- struct{}{}:
							case <-ctx.Done():
								return
							}
							sentAt[i].Store(int64(time.Since(start)))
							if err := st.Send(&heraldv1.ConnectRequest{Id: strconv.FormatInt(i, 10), Command: &heraldv1.ConnectRequest_Publish{
								Publish: &heraldv1.PublishRequest{Channel: channels[i%benchChannels], Data: payload},
							}}); err != nil {
								fail(fmt.Errorf("send: %w", err))
								return
							}
							sent.Add(1)
						}
						if err := st.CloseSend(); err != nil {
							fail(fmt.Errorf("close send: %w", err))
						}
					}()
					acked := int64(0)
					for {
						m, err := st.Recv()
						if errors.Is(err, io.EOF) {
							break
						}
						if err != nil {
							fail(fmt.Errorf("receive: %w", err))
							break
						}
						if m.GetPublished() == nil {
							fail(fmt.Errorf("want a Published ack, got %v", m))
							break
						}
						i, err := strconv.ParseInt(m.Id, 10, 64)
						if err != nil || i < 0 || i >= int64(b.N) {
							fail(fmt.Errorf("ack with id %q", m.Id))
							break
						}
						lat[i] = time.Since(start) - time.Duration(sentAt[i].Load())
						acked++
						<-sem
					}
					<-sendDone
					if firstErr.Load() == nil && acked != sent.Load() {
						fail(fmt.Errorf("stream ended after %d acks for %d publishes", acked, sent.Load()))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if p := firstErr.Load(); p != nil {
				b.Fatalf("publish: %v", *p)
			}
			checkHead(b, srv, head0+int64(b.N))
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			reportLatency(b, lat)
		})
	}
}

// warmChannels creates the channels (and the connection) outside the
// measurement and returns the log's head.
func warmChannels(b *testing.B, events heraldv1.EventServiceClient, srv *server.Server, channels []string) int64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	payload := make([]byte, benchEventBytes)
	for _, ch := range channels {
		if _, err := events.Publish(ctx, &heraldv1.PublishRequest{Channel: ch, Data: payload}); err != nil {
			b.Fatalf("warm up %s: %v", ch, err)
		}
	}
	head, err := srv.Log().Head(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return head
}

// checkHead checks that exactly the benchmark's events were written.
func checkHead(b *testing.B, srv *server.Server, want int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	head, err := srv.Log().Head(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if head != want {
		b.Fatalf("log head %d after the run, want %d", head, want)
	}
}

// BenchmarkSubscribeStream measures one Subscribe stream replaying b.N
// stored events of one channel (memory log, so the figure is the server's
// per-stream cost plus the client's, not the database's). The events are
// stored before the timer starts; the timer covers subscribing and reading
// every event. Allocations count both ends (one process).
//
//   - grpc-go/size=N: the real server and a google.golang.org/grpc client
//     (which advertises no compression unless a compressor is registered).
//   - connect-go/gzip=...: a connect-go client with the gRPC protocol, which
//     accepts gzip by default. gzip=min4KiB is the real server (handlers
//     compress only messages of 4 KiB or more); gzip=every-message is the
//     same event service mounted without WithCompressMinBytes, as the
//     server was before; gzip=every-message,client-identity is that handler
//     with a client that does not accept gzip.
func BenchmarkSubscribeStream(b *testing.B) {
	for _, size := range []int{10, benchEventBytes} {
		b.Run(fmt.Sprintf("grpc-go/size=%d", size), func(b *testing.B) {
			srv, addr := benchInstance(b, server.Config{})
			events := heraldv1.NewEventServiceClient(grpcConn(b, addr))
			storeEvents(b, srv, size)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			b.ReportAllocs()
			b.ResetTimer()
			st, err := events.Subscribe(ctx, &heraldv1.SubscribeRequest{Channels: []string{"replay"}, Cursor: ptr(int64(0))})
			if err != nil {
				b.Fatal(err)
			}
			readEvents(b, st.Recv)
			b.StopTimer()
			cancel()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}

	for _, bc := range []struct {
		name       string
		everyMsg   bool // mount the service without WithCompressMinBytes
		clientOpts []connect.ClientOption
	}{
		{"gzip=min4KiB", false, nil},
		{"gzip=every-message", true, nil},
		{"gzip=every-message,client-identity", true, []connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}},
	} {
		b.Run("connect-go/"+bc.name+"/size=10", func(b *testing.B) {
			srv, addr := benchInstance(b, server.Config{})
			if bc.everyMsg {
				addr = compressEveryMessage(b, srv)
			}
			opts := append([]connect.ClientOption{connect.WithGRPC()}, bc.clientOpts...)
			events := heraldv1connect.NewEventServiceClient(h2cClient(), "http://"+addr, opts...)
			storeEvents(b, srv, 10)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			b.ReportAllocs()
			b.ResetTimer()
			st, err := events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"replay"}, Cursor: ptr(int64(0))}))
			if err != nil {
				b.Fatal(err)
			}
			readEvents(b, func() (*heraldv1.SubscribeResponse, error) {
				if st.Receive() {
					return st.Msg(), nil
				}
				if err := st.Err(); err != nil {
					return nil, err
				}
				return nil, io.EOF
			})
			b.StopTimer()
			cancel()
			_ = st.Close()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// storeEvents appends b.N events of size bytes to channel "replay".
func storeEvents(b *testing.B, srv *server.Server, size int) {
	b.Helper()
	data := make([]byte, size)
	const batch = 1000
	for n := 0; n < b.N; n += batch {
		ps := make([]eventlog.Publish, min(batch, b.N-n))
		for i := range ps {
			ps[i] = eventlog.Publish{Channel: "replay", Data: data}
		}
		_, errs, err := srv.Log().Append(context.Background(), ps)
		if err == nil {
			err = errors.Join(errs...)
		}
		if err != nil {
			b.Fatalf("store events: %v", err)
		}
	}
}

// readEvents reads the Subscribed notice and then b.N events, checking
// that positions rise.
func readEvents(b *testing.B, recv func() (*heraldv1.SubscribeResponse, error)) {
	b.Helper()
	m, err := recv()
	if err != nil || m.GetSubscribed() == nil {
		b.Fatalf("first message %v, %v; want Subscribed", m, err)
	}
	last := int64(0)
	for n := 0; n < b.N; n++ {
		m, err := recv()
		if err != nil {
			b.Fatalf("after %d events: %v", n, err)
		}
		ev := m.GetEvent()
		if ev == nil || ev.Position <= last {
			b.Fatalf("after %d events (position %d): got %v", n, last, m)
		}
		last = ev.Position
	}
}

// compressEveryMessage serves srv's event service on another port with the
// handler options server.New uses except WithCompressMinBytes, so that every
// message is gzipped when the client accepts gzip (as before that option was
// added). It returns the address.
func compressEveryMessage(b *testing.B, srv *server.Server) string {
	b.Helper()
	mux := http.NewServeMux()
	srv.App().Register(mux, connect.WithCompressMinBytes(0))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: &protocols}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	b.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return ln.Addr().String()
}
