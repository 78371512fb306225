package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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
	return dialTiny(ctx, network, addr, nil)
}

// lastReadConn records when a read from the connection last returned a
// chunk of data: the moment the server's writes to it last made progress.
// (Reads of 64 bytes or less are left out: the frames an HTTP/2 server
// sends when it drops the stream, RST_STREAM or GOAWAY, are a few dozen
// bytes.)
type lastReadConn struct {
	net.Conn
	last *atomic.Int64 // UnixNano
}

func (c lastReadConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 64 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// dialTiny is tinyReceiveBuffer, recording into last (when not nil) when
// the connection last received data.
func dialTiny(ctx context.Context, network, addr string, last *atomic.Int64) (net.Conn, error) {
	conn, err := dialTinyConn(ctx, network, addr)
	if err != nil || last == nil {
		return conn, err
	}
	return lastReadConn{conn, last}, nil
}

func dialTinyConn(ctx context.Context, network, addr string) (net.Conn, error) {
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
func stalledHTTPClient(t *testing.T, h2 bool, last *atomic.Int64) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialTiny(ctx, network, addr, last)
	}, TLSClientConfig: &tls.Config{}}
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
func stalledGRPC(t *testing.T, base string, last *atomic.Int64) heraldv1.EventServiceClient {
	conn, err := grpc.NewClient(strings.TrimPrefix(base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialTiny(ctx, "tcp", addr, last) }),
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
		open func(t *testing.T, ctx context.Context, base string, last *atomic.Int64) // subscribes to "stall", reads the first answer, then reads no more
	}{
		{"ws", func(t *testing.T, ctx context.Context, base string, last *atomic.Int64) {
			c, _, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{HTTPClient: stalledHTTPClient(t, false, last), Subprotocols: []string{gateway.SubprotocolProto}})
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
		{"sse", func(t *testing.T, ctx context.Context, base string, last *atomic.Int64) {
			getSSE(t, stalledHTTPClient(t, false, last), base+"/v1/sse?channel=stall", nil).next(t)
		}},
		{"sse-h2", func(t *testing.T, ctx context.Context, base string, last *atomic.Int64) {
			getSSE(t, stalledHTTPClient(t, true, last), base+"/v1/sse?channel=stall", nil).next(t)
		}},
		{"grpc", func(t *testing.T, ctx context.Context, base string, last *atomic.Int64) {
			st, err := stalledGRPC(t, base, last).Subscribe(ctx, &heraldv1.SubscribeRequest{Channels: []string{"stall"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != nil {
				t.Fatal(err)
			}
		}},
		{"grpc-bidi", func(t *testing.T, ctx context.Context, base string, last *atomic.Int64) {
			st, err := stalledGRPC(t, base, last).Connect(ctx)
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
			var last atomic.Int64
			tc.open(t, ctx, in.base, &last)
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
			gone := time.Now()
			// The stall began when the client last received data, or when
			// publishing began if it was already full by then. An HTTP/2
			// client (grpc-go, Go's) keeps reading into its own buffers
			// for a while after the application stopped reading (measured:
			// ~1.4 s at this rate on a quiet machine, several seconds on a
			// loaded one) before flow control stops the server: its stall
			// starts then, not when publishing began.
			stall := start
			if l := time.Unix(0, last.Load()); l.After(stall) {
				stall = l
			}
			took := gone.Sub(stall)
			t.Logf("stalled %s subscriber dropped %v after its last read (%v after publishing began; write timeout %v)",
				tc.name, took.Round(10*time.Millisecond), gone.Sub(start).Round(10*time.Millisecond), writeTimeout)
			// The write timeout, plus this loop's polling and the time the
			// server's own buffers take to fill.
			if took > writeTimeout+time.Second {
				t.Fatalf("dropped %v after the stall, want within the write timeout (%v) of it", took, writeTimeout)
			}
			if took < writeTimeout/2 {
				t.Fatalf("dropped %v after the stall, before the write timeout (%v) could have run out", took, writeTimeout)
			}
			waitFor(t, func() bool { return in.srv.App().OpenConnections() == 0 })
		})
	}
}
