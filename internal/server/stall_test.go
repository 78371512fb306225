package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/server"
)

// tinyReceiveBuffer dials TCP with the smallest receive buffer the kernel
// allows, so that a client that stops reading stalls the server's writes
// after a few kilobytes in flight.
func tinyReceiveBuffer(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	return d.DialContext(ctx, network, addr)
}

// stalledHTTPClient is an HTTP client over tiny-buffer connections;
// HTTP/2 (prior knowledge) when h2. (Go's HTTP/2 client buffers
// megabytes of a stream before flow control stops the server.)
func stalledHTTPClient(t *testing.T, h2 bool) *http.Client {
	tr := &http.Transport{DialContext: tinyReceiveBuffer, TLSClientConfig: &tls.Config{}}
	t.Cleanup(tr.CloseIdleConnections)
	if h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	return &http.Client{Transport: tr}
}

// stalledGRPC is a grpc-go client over a tiny-buffer connection with the
// smallest HTTP/2 windows (64 KiB, which also turns off grpc-go's
// window growth).
func stalledGRPC(t *testing.T, base string) heraldv1.EventServiceClient {
	conn, err := grpc.NewClient(strings.TrimPrefix(base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return tinyReceiveBuffer(ctx, "tcp", addr) }),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return heraldv1.NewEventServiceClient(conn)
}

// TestStalledClientDropped: a subscriber that stops reading (a real TCP
// client with a tiny receive buffer) is gone
// within the write timeout of its writes stalling, on every streaming
// transport. (Regression: the waits of a stalled WebSocket stacked up to
// about 3 write timeouts, an SSE stream took 1.3, and a gRPC or Connect
// stream blocked on HTTP/2 flow control was held until the client left.)
func TestStalledClientDropped(t *testing.T) {
	t.Parallel()
	const writeTimeout = 2 * time.Second
	for _, tc := range []struct {
		name string
		open func(t *testing.T, ctx context.Context, base string) // subscribes to "stall", reads the first answer, then reads no more
	}{
		{"ws", func(t *testing.T, ctx context.Context, base string) {
			c, _, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{HTTPClient: stalledHTTPClient(t, false), Subprotocols: []string{gateway.SubprotocolProto}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.CloseNow() })
			if err := wsWrite(ctx, c, gateway.SubprotocolProto, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
				Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"stall"}}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := wsRead(ctx, c); err != nil {
				t.Fatal(err)
			}
		}},
		{"sse", func(t *testing.T, ctx context.Context, base string) {
			getSSE(t, stalledHTTPClient(t, false), base+"/v1/sse?channel=stall", nil).next(t)
		}},
		{"sse-h2", func(t *testing.T, ctx context.Context, base string) {
			getSSE(t, stalledHTTPClient(t, true), base+"/v1/sse?channel=stall", nil).next(t)
		}},
		{"grpc", func(t *testing.T, ctx context.Context, base string) {
			st, err := stalledGRPC(t, base).Subscribe(ctx, &heraldv1.SubscribeRequest{Channels: []string{"stall"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != nil {
				t.Fatal(err)
			}
		}},
		{"grpc-bidi", func(t *testing.T, ctx context.Context, base string) {
			st, err := stalledGRPC(t, base).Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
				Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"stall"}}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := startInstance(t, server.Config{
				Gateway: gateway.Config{WriteTimeout: writeTimeout, WSPingInterval: time.Hour, SSEKeepAlive: time.Hour},
				// The hub never ends the subscription itself: what ends it
				// is the transport giving up on the stalled client.
				Hub: fanout.Options{QueueSize: 1 << 20, QueueBytes: 1 << 30},
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tc.open(t, ctx, in.base)
			if n := in.srv.Hub().Subscribers(); n != 1 {
				t.Fatalf("%d subscribers, want 1", n)
			}
			// Publish 16 MB/s, 32 KiB at a time, until the server lets the
			// subscriber go: the kernel buffers fill within a few ms.
			data := make([]byte, 32<<10)
			start := time.Now()
			// Gone: the subscription ended and (WebSocket) the connection
			// closed.
			for in.srv.Hub().Subscribers() > 0 || in.srv.Gateway().Connections() > 0 {
				if time.Since(start) > 10*writeTimeout {
					t.Fatalf("the stalled subscriber is still served after %v", time.Since(start))
				}
				if _, _, err := in.srv.Log().Append(ctx, []eventlog.Publish{{Channel: "stall", Data: data}}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			took := time.Since(start)
			t.Logf("stalled %s subscriber dropped %v after publishing began (write timeout %v)", tc.name, took.Round(10*time.Millisecond), writeTimeout)
			// The write timeout, plus the time the buffers take to fill
			// and this loop's polling.
			// grpc-go keeps reading into its own buffers for a while after
			// the application stopped (measured: ~16 MB, 1.4 s at this
			// rate) before flow control stalls the server: its stall starts
			// later.
			slack := time.Second
			if strings.HasPrefix(tc.name, "grpc") {
				slack = 3 * time.Second
			}
			if took > writeTimeout+slack {
				t.Fatalf("dropped after %v, want within the write timeout (%v) of the stall", took, writeTimeout)
			}
			waitFor(t, func() bool { return in.srv.App().OpenConnections() == 0 })
		})
	}
}
