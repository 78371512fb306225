package server_test

import (
	"context"
	"crypto/rand"
	"runtime"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/server"
)

// TestWSShutdownCloseCodeEveryConnection: every WebSocket closes with 1012
// on a graceful shutdown. (Regression: cancelling the context of the
// reader's in-flight Read made coder/websocket drop the TCP connection,
// racing the close frame.)
func TestWSShutdownCloseCodeEveryConnection(t *testing.T) {
	const conns = 40
	// More Ps: the AfterFunc goroutine that closes the conn runs at once.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(16))
	bad := 0
	for round := range 25 {
		in := startInstance(t, server.Config{})
		codes := make(chan error, conns)
		var wg sync.WaitGroup
		for range conns {
			ctx := context.Background()
			c := dialWS(t, ctx, in.base, gateway.SubprotocolJSON)
			if err := wsWrite(ctx, c, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
				Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"x"}}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := wsRead(ctx, c); err != nil { // subscribed
				t.Fatal(err)
			}
			wg.Go(func() {
				defer c.CloseNow()
				for {
					if _, _, err := c.Read(ctx); err != nil {
						codes <- err
						return
					}
				}
			})
		}
		in.stop()
		wg.Wait()
		close(codes)
		for err := range codes {
			if websocket.CloseStatus(err) != gateway.StatusRestart {
				if bad++; bad <= 3 {
					t.Logf("round %d: closed with %v, want 1012", round, err)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if bad > 0 {
		t.Fatalf("%d of %d WebSockets did not get 1012 on shutdown", bad, 100*conns)
	}
}

// TestWSSlowConsumerCloseCode: a client that stops reading, and reads
// again after the server gave up on its full write queue (half the write
// timeout) but before the stalled write's own deadline, gets the 4008
// close frame: the frames not yet written are dropped and the close frame
// goes out next. (Regression: the reader's Read was cancelled with the
// connection, dropping it before the close frame. A client that never
// reads again is dropped when its write stalls: TestStalledClientDropped.)
func TestWSSlowConsumerCloseCode(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{
		Gateway: gateway.Config{WSWriteQueue: 4, WriteTimeout: 4 * time.Second, WSPingInterval: time.Hour},
		Hub:     fanout.Options{QueueSize: 1 << 20, QueueBytes: 1 << 30}, // the hub does not end it first
	})
	ctx := t.Context()
	ws, _, err := websocket.Dial(ctx, wsURL(in.base), &websocket.DialOptions{HTTPClient: stalledHTTPClient(t, false), Subprotocols: []string{gateway.SubprotocolProto}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	if err := wsWrite(ctx, ws, gateway.SubprotocolProto, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"slow"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := wsRead(ctx, ws); err != nil {
		t.Fatal(err)
	}
	// Publish until the server gives up: the session then ends, and its
	// subscription leaves the hub.
	data := make([]byte, 16<<10)
	_, _ = rand.Read(data)
	start := time.Now()
	for in.srv.Hub().Subscribers() > 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the server did not give up on the stalled connection")
		}
		if _, _, err := in.srv.Log().Append(ctx, []eventlog.Publish{{Channel: "slow", Data: data}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for n := 0; ; n++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _, err := ws.Read(rctx)
		cancel()
		if err != nil {
			if websocket.CloseStatus(err) != gateway.StatusSlowConsumer {
				t.Fatalf("after %d frames: closed with %v, want 4008", n, err)
			}
			return
		}
	}
}

// TestPollWithoutWaitDoesNotStall: a poll without wait lets the hub catch
// up with the log first; that must not stall when the log's head is a
// position no entry will reach (removed before this hub read it, seen here
// from a second instance). (Regression: CatchUp compared positions and
// spun for its full second.)
func TestPollWithoutWaitDoesNotStall(t *testing.T) {
	dsn, schema := database(t)
	a := startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}})
	// b does not hear a's notifications and polls the log rarely: a hub
	// lagging by a moment, made deterministic.
	b := startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema + "_b"}, Hub: fanout.Options{PollInterval: time.Hour}})
	ca, cb := grpcClients(a), grpcClients(b)
	mustPublish(t, ca.events, "eph", "x")
	if _, err := ca.channels.DeleteChannel(t.Context(), connect.NewRequest(&heraldv1.DeleteChannelRequest{Name: "eph"})); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		start := time.Now()
		if _, err := cb.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{"other"}})); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("poll %d without wait took %v", i, d)
		}
	}
}
