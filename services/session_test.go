package services_test

// Regression tests for findings of a review of the Connect session; each
// failed before its fix.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/services"
)

// gatedLog blocks every Append until its ctx ends (a slow commit).
type gatedLog struct {
	eventlog.Log
	entered chan struct{}
}

func (g *gatedLog) Append(ctx context.Context, ps []eventlog.Publish) ([]eventlog.Published, []error, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, nil, ctx.Err()
}

type env struct {
	client  heraldv1connect.EventServiceClient
	stopHub context.CancelFunc
	hub     *fanout.Hub
}

func newEnv(t *testing.T, log eventlog.Log) *env {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub := fanout.NewHub(log, fanout.Options{Logger: quiet})
	hubCtx, stopHub := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = hub.Run(hubCtx) })
	mux := http.NewServeMux()
	app, err := services.New(log, hub, services.Config{MaxMessageBytes: 1024, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	app.Register(mux)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() { stopHub(); wg.Wait(); srv.CloseClientConnections(); srv.Close() })
	<-hub.Ready()
	return &env{
		client:  heraldv1connect.NewEventServiceClient(srv.Client(), srv.URL),
		stopHub: stopHub,
		hub:     hub,
	}
}

// A command larger than the read limit makes stream.Receive fail with
// resource_exhausted. Connect (services/session.go:341-345) treats every
// non-EOF receive error as "the client went away" and returns nil: the
// client, still connected, sees its stream end with OK, its subscriptions
// gone and no reason.
func TestConnectOversizedCommandEndsWithReason(t *testing.T) {
	e := newEnv(t, eventlog.NewMemory(eventlog.Options{AutoCreate: true}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := e.client.Connect(ctx)
	if err := st.Send(&heraldv1.ConnectRequest{Id: "s1", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"room"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Receive(); err != nil { // Subscribed
		t.Fatal(err)
	}
	_ = st.Send(&heraldv1.ConnectRequest{Id: "p1", Command: &heraldv1.ConnectRequest_Publish{
		Publish: &heraldv1.PublishRequest{Channel: "room", Data: []byte(strings.Repeat("x", 4096))}}})
	for {
		_, err := st.Receive()
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			t.Fatalf("stream ended with OK after an oversized command; want resource_exhausted (or an Error frame and the stream kept open)")
		}
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("stream ended with %v, want resource_exhausted", err)
		}
		return
	}
}

// Graceful shutdown stops the hub first. Connect then closes the session,
// which cancels its context: the publish being committed is answered with
// code "canceled" (the client cancelled nothing, and the commit may still
// land), and publishes still queued get, at random (select on ctx.Done vs
// pubs), either no answer at all or "canceled" — although the event log is
// still running and could have committed them.
func TestConnectShutdownAnswersEveryPublish(t *testing.T) {
	log := &gatedLog{Log: eventlog.NewMemory(eventlog.Options{AutoCreate: true}), entered: make(chan struct{}, 1)}
	e := newEnv(t, log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := e.client.Connect(ctx)
	for _, id := range []string{"p1", "p2"} {
		if err := st.Send(&heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Publish{
			Publish: &heraldv1.PublishRequest{Channel: "room", Data: []byte("x")}}}); err != nil {
			t.Fatal(err)
		}
		if id == "p1" {
			<-log.entered // p1 is being committed; p2 will wait in the queue
		}
	}
	time.Sleep(100 * time.Millisecond) // let p2 reach the session's queue
	e.stopHub()
	answered := map[string]string{}
	for {
		msg, err := st.Receive()
		if err != nil {
			break
		}
		switch m := msg.Message.(type) {
		case *heraldv1.ConnectResponse_Published:
			answered[msg.Id] = "ok"
		case *heraldv1.ConnectResponse_Error:
			answered[msg.Id] = m.Error.Code
		}
	}
	for _, id := range []string{"p1", "p2"} {
		got, ok := answered[id]
		switch {
		case !ok:
			t.Errorf("publish %s: no ack and no error before the stream ended", id)
		case got == connect.CodeCanceled.String():
			t.Errorf("publish %s: answered %q during server shutdown; want unavailable (or a drained ack)", id, got)
		}
	}
}
