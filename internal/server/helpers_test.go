package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pgx pools close their background health checker asynchronously.
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool).Acquire.func1"),
	)
}

// database returns a URL of a fresh migrated schema, private to the test,
// and the notify channel to use with it.
func database(t *testing.T) (string, string) {
	t.Helper()
	_, schema := pgtest.Schema(t)
	return pgtest.SchemaURL(t, schema), schema
}

type instance struct {
	once   sync.Once
	srv    *server.Server
	base   string // http://addr
	cancel context.CancelFunc
	done   chan error
}

// startInstance runs a server on a random port until the test ends.
func startInstance(t *testing.T, cfg server.Config) *instance {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Hub.PollInterval == 0 {
		cfg.Hub.PollInterval = 200 * time.Millisecond
	}
	srv, err := server.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	return runInstance(t, srv)
}

// runInstance runs srv until the test ends and waits until it is ready.
func runInstance(t *testing.T, srv *server.Server) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{srv: srv, base: "http://" + srv.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- srv.Run(ctx) }()
	t.Cleanup(in.stop)
	waitFor(t, func() bool {
		resp, err := http.Get(in.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return in
}

// stop shuts the instance down gracefully and waits for it.
func (in *instance) stop() {
	in.once.Do(func() {
		in.cancel()
		if err := <-in.done; err != nil {
			panic(err)
		}
	})
}

// kill drops the instance like a crash.
func (in *instance) kill() {
	in.once.Do(func() {
		in.srv.Kill()
		<-in.done
		in.cancel()
	})
}

// memoryInstance runs an instance on the embedded log.
func memoryInstance(t *testing.T) *instance {
	return startInstance(t, server.Config{})
}

// pgInstance runs an instance on a fresh schema.
func pgInstance(t *testing.T) *instance {
	dsn, schema := database(t)
	return startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}})
}

// h2cClient speaks HTTP/2 without TLS (prior knowledge), as gRPC needs.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{}}}
}

// protocols are the connect-go client protocols every behaviour runs over.
var protocols = []struct {
	name string
	opts []connect.ClientOption
	http func() *http.Client
}{
	{"connect", nil, func() *http.Client { return http.DefaultClient }},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}, h2cClient},
	{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}, func() *http.Client { return http.DefaultClient }},
}

type clients struct {
	events   heraldv1connect.EventServiceClient
	history  heraldv1connect.HistoryServiceClient
	channels heraldv1connect.ChannelServiceClient
}

func newClients(base string, hc *http.Client, opts ...connect.ClientOption) clients {
	return clients{
		events:   heraldv1connect.NewEventServiceClient(hc, base, opts...),
		history:  heraldv1connect.NewHistoryServiceClient(hc, base, opts...),
		channels: heraldv1connect.NewChannelServiceClient(hc, base, opts...),
	}
}

func mustPublish(t *testing.T, c heraldv1connect.EventServiceClient, ch string, data string) *heraldv1.Event {
	t.Helper()
	resp, err := c.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: ch, Data: []byte(data)}))
	if err != nil {
		t.Fatalf("publish to %s: %v", ch, err)
	}
	return resp.Msg.Event
}

// stream reads a Subscribe stream on its own goroutine.
type stream struct {
	msgs chan *heraldv1.SubscribeResponse
	err  chan error
	stop context.CancelFunc
}

func subscribe(t *testing.T, c heraldv1connect.EventServiceClient, channels []string, cursor *int64) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{msgs: make(chan *heraldv1.SubscribeResponse, 1<<16), err: make(chan error, 1), stop: cancel}
	st, err := c.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: channels, Cursor: cursor}))
	if err != nil {
		cancel()
		t.Fatalf("subscribe: %v", err)
	}
	go func() {
		defer st.Close()
		for st.Receive() {
			s.msgs <- st.Msg()
		}
		s.err <- st.Err()
	}()
	t.Cleanup(cancel)
	return s
}

// next returns the next message, failing after 10s.
func (s *stream) next(t *testing.T) *heraldv1.SubscribeResponse {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case err := <-s.err:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// events reads n events, skipping subscribed notices.
func (s *stream) events(t *testing.T, n int) []*heraldv1.Event {
	t.Helper()
	var out []*heraldv1.Event
	for len(out) < n {
		if ev := s.next(t).GetEvent(); ev != nil {
			out = append(out, ev)
		}
	}
	return out
}

// end waits for the stream to end and returns its error.
func (s *stream) end(t *testing.T) error {
	t.Helper()
	for {
		select {
		case <-s.msgs:
		case err := <-s.err:
			return err
		case <-time.After(15 * time.Second):
			t.Fatal("stream did not end within 15s")
		}
	}
}

func positions(evs []*heraldv1.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Position
	}
	return out
}

func equalPositions(t *testing.T, got, want []int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d positions, want %d\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("at %d got position %d, want %d\ngot  %v\nwant %v", i, got[i], want[i], got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func codeOf(err error) connect.Code { return connect.CodeOf(err) }
