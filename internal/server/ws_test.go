package server_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"runtime"
	"sync"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// wsClient is a WebSocket speaking one subprotocol, read by a goroutine.
type wsClient struct {
	c     *websocket.Conn
	proto string
	msgs  chan *heraldv1.ConnectResponse
	err   chan error
}

func openWS(t *testing.T, base, subprotocol string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &wsClient{c: dialWS(t, ctx, base, subprotocol), proto: subprotocol,
		msgs: make(chan *heraldv1.ConnectResponse, 1<<12), err: make(chan error, 1)}
	t.Cleanup(func() { w.c.CloseNow() })
	go func() {
		for {
			m, err := wsRead(ctx, w.c)
			if err != nil {
				w.err <- err
				return
			}
			w.msgs <- m
		}
	}()
	return w
}

func (w *wsClient) send(t *testing.T, req *heraldv1.ConnectRequest) {
	t.Helper()
	if err := wsWrite(t.Context(), w.c, w.proto, req); err != nil {
		t.Fatalf("ws send: %v", err)
	}
}

func (w *wsClient) next(t *testing.T) *heraldv1.ConnectResponse {
	t.Helper()
	select {
	case m := <-w.msgs:
		return m
	case err := <-w.err:
		t.Fatalf("websocket closed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return nil
}

// end waits for the connection to close and returns its close status.
func (w *wsClient) end(t *testing.T) string {
	t.Helper()
	return "close " + strconv.Itoa(int(websocket.CloseStatus(w.closed(t))))
}

// closed waits for the connection to close and returns the close error.
func (w *wsClient) closed(t *testing.T) error {
	t.Helper()
	for {
		select {
		case <-w.msgs:
		case err := <-w.err:
			return err
		case <-time.After(15 * time.Second):
			t.Fatal("websocket not closed within 15s")
		}
	}
}

// TestWSCommands: subscribe, publish with ack, the event reaching the
// subscription, ping, unsubscribe — over JSON and protobuf frames.
func TestWSCommands(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	for _, sp := range []string{gateway.SubprotocolJSON, gateway.SubprotocolProto} {
		t.Run(sp, func(t *testing.T) {
			ch := "cmd-" + sp
			w := openWS(t, in.base, sp)
			w.send(t, &heraldv1.ConnectRequest{Id: "s1", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{ch}}}})
			if m := w.next(t); m.Id != "s1" || m.GetSubscribed() == nil {
				t.Fatalf("got %v, want subscribed", m)
			}
			w.send(t, &heraldv1.ConnectRequest{Id: "p1", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: ch, Type: "msg", Data: []byte("hi"), IdempotencyKey: "k1"}}})
			var ack, ev *heraldv1.ConnectResponse
			for ack == nil || ev == nil {
				switch m := w.next(t); {
				case m.GetPublished() != nil:
					ack = m
				case m.GetEvent() != nil:
					ev = m
				default:
					t.Fatalf("unexpected %v", m)
				}
			}
			if ack.Id != "p1" || ev.Id != "s1" || !proto.Equal(ack.GetPublished().Event, ev.GetEvent()) {
				t.Fatalf("ack %v and event %v differ", ack, ev)
			}
			// The same key again: a duplicate, nothing appended.
			w.send(t, &heraldv1.ConnectRequest{Id: "p2", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: ch, Type: "msg", Data: []byte("hi"), IdempotencyKey: "k1"}}})
			if m := w.next(t); !m.GetPublished().GetDuplicate() || m.GetPublished().Event.Position != ev.GetEvent().Position {
				t.Fatalf("retry = %v, want duplicate of %d", m, ev.GetEvent().Position)
			}
			w.send(t, &heraldv1.ConnectRequest{Id: "x", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
			if m := w.next(t); m.Id != "x" || m.GetPong() == nil {
				t.Fatalf("got %v, want pong", m)
			}
			w.send(t, &heraldv1.ConnectRequest{Id: "u", Command: &heraldv1.ConnectRequest_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribeCommand{SubscriptionId: "s1"}}})
			if m := w.next(t); m.Id != "u" || m.GetUnsubscribed() == nil {
				t.Fatalf("got %v, want unsubscribed", m)
			}
		})
	}
}

// TestWSBadFrames: a frame that does not decode, or a command that breaks
// the rules, gets an invalid_argument Error frame and the connection
// stays open; nothing is written.
func TestWSBadFrames(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	w := openWS(t, in.base, gateway.SubprotocolJSON)
	ctx := t.Context()
	for _, f := range []struct {
		typ  websocket.MessageType
		data string
		id   string
		want string
	}{
		{websocket.MessageText, `{"id":"a","publish":`, "", "invalid frame"},
		{websocket.MessageText, `{"id":"a","bogus":{}}`, "", "invalid frame"},
		{websocket.MessageText, `not json`, "", "invalid frame"},
		{websocket.MessageBinary, "\xff\xff\xff", "", "invalid frame"},
		{websocket.MessageText, `{"id":"b"}`, "b", "command"},
		{websocket.MessageText, `{"id":"c","publish":{"channel":"bad name","data":"aGk="}}`, "c", "publish.channel"},
		{websocket.MessageText, `{"id":"d","subscribe":{"channels":[]}}`, "d", "subscribe.channels"},
	} {
		if err := w.c.Write(ctx, f.typ, []byte(f.data)); err != nil {
			t.Fatal(err)
		}
		m := w.next(t)
		e := m.GetError()
		if e == nil || m.Id != f.id || e.Code != "invalid_argument" || !strings.Contains(e.Message, f.want) {
			t.Fatalf("frame %q: got %v, want invalid_argument mentioning %q", f.data, m, f.want)
		}
	}
	w.send(t, &heraldv1.ConnectRequest{Id: "alive", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
	if m := w.next(t); m.GetPong() == nil {
		t.Fatalf("got %v, want pong: the connection must survive bad frames", m)
	}
	if head := in.srv.Hub().Head(); head != 0 {
		t.Fatalf("bad frames wrote events: head %d", head)
	}
}

// TestWSTooBig: a frame over the limit closes the connection with 1009.
func TestWSTooBig(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Services: services.Config{MaxMessageBytes: 64 << 10}})
	w := openWS(t, in.base, gateway.SubprotocolProto)
	big := &heraldv1.ConnectRequest{Id: "p", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: "big", Data: make([]byte, 100<<10)}}}
	w.send(t, big)
	if err := w.closed(t); websocket.CloseStatus(err) != gateway.StatusTooBig {
		t.Fatalf("closed with %v, want 1009", err)
	}
	if head := in.srv.Hub().Head(); head != 0 {
		t.Fatalf("an oversized frame wrote events: head %d", head)
	}
}

// TestWSShutdown: on shutdown each subscription gets its end frame
// (unavailable, SHUTDOWN, last position), then the connection closes with
// 1012.
func TestWSShutdown(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	ev := mustPublish(t, grpcClients(in).events, "bye", "x")
	w := openWS(t, in.base, gateway.SubprotocolJSON)
	w.send(t, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"bye"}, Cursor: ptr(int64(0))}}})
	w.next(t)
	w.next(t)
	go in.stop()
	m := w.next(t)
	e := m.GetError()
	if m.Id != "s" || e.GetCode() != "unavailable" || e.End.GetReason() != heraldv1.StreamEndReason_STREAM_END_REASON_SHUTDOWN || e.End.GetLastPosition() != ev.Position {
		t.Fatalf("got %v, want the shutdown end of subscription s at %d", m, ev.Position)
	}
	if err := w.closed(t); websocket.CloseStatus(err) != gateway.StatusRestart {
		t.Fatalf("closed with %v, want 1012", err)
	}
}

// TestWSDeadPeer: a peer that does not answer pings is dropped.
func TestWSDeadPeer(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Gateway: gateway.Config{WSPingInterval: 100 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}})
	c, _, err := websocket.Dial(t.Context(), wsURL(in.base), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// The client never reads, so it never answers a ping.
	waitFor(t, func() bool { return in.srv.Gateway().Connections() == 1 })
	waitFor(t, func() bool { return in.srv.Gateway().Connections() == 0 })
}

// TestWSWriteQueueSlowConsumer: a client that stops reading while its
// write queue is full (in frames, or in bytes) is dropped (with 4008 when the close frame can still
// get through), and resuming from what it received loses nothing.
func TestWSWriteQueueSlowConsumer(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]server.Config{
		"frames": {Gateway: gateway.Config{WSWriteQueue: 4}},
		"bytes":  {Gateway: gateway.Config{WSWriteBytes: 64 << 10}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg.Gateway.WriteTimeout, cfg.Gateway.WSPingInterval = 300*time.Millisecond, time.Hour
			testWSWriteQueueSlowConsumer(t, startInstance(t, cfg))
		})
	}
}

func testWSWriteQueueSlowConsumer(t *testing.T, in *instance) {
	c := grpcClients(in)
	gate := make(chan struct{})
	s := wsOpener(gateway.SubprotocolProto)(t, in.base, []string{"wq"}, ptr(int64(0)), gate)
	if it := s.next(t); it.sub == nil {
		t.Fatalf("first = %+v", it)
	}
	data := make([]byte, 32<<10)
	_, _ = rand.Read(data)
	var want []int64
	for range 300 {
		want = append(want, mustPublish(t, c.events, "wq", string(data)).Position)
	}
	// The server gives up on the stalled connection: it tries to close
	// with 4008 (the close frame is stuck behind the unread frames), then
	// drops it.
	waitFor(t, func() bool { return in.srv.Gateway().Connections() == 0 })
	close(gate)
	got, end := s.untilEnd(t)
	if end.Code != "resource_exhausted" && !strings.Contains(end.Message, "EOF") {
		t.Fatalf("ended with %v after %d events, want 4008 or a dropped connection", end, len(got))
	}
	// Resume as a client does: from the last position received, again
	// whenever the stream ends (the replay of 300 large events may itself
	// outrun a reader on a loaded machine: 4008 again, and resume).
	for resumes := 0; len(got) < len(want); resumes++ {
		if resumes == 20 {
			t.Fatalf("%d of %d events after %d resumes", len(got), len(want), resumes)
		}
		last := int64(0)
		if n := len(got); n > 0 {
			last = got[n-1].Position
		}
		r := wsOpener(gateway.SubprotocolJSON)(t, in.base, []string{"wq"}, ptr(last), nil)
		more, end := r.upTo(t, len(want)-len(got))
		if end != nil && end.Code != "resource_exhausted" && !strings.Contains(end.Message, "EOF") {
			t.Fatalf("resumed stream ended with %v", end)
		}
		got = append(got, more...)
	}
	equalPositions(t, positions(got), want)
}

// TestOrigins: cross-origin browsers are refused unless allowed; servers
// (no Origin) and same-origin pages pass.
func TestOrigins(t *testing.T) {
	t.Parallel()
	def := memoryInstance(t)
	allow := startInstance(t, server.Config{Gateway: gateway.Config{AllowedOrigins: []string{"https://*.example.com", "http://app.test"}}})
	try := func(in *instance, path, origin string) int {
		req, _ := http.NewRequest(http.MethodGet, in.base+path, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	sse := "/v1/sse?channel=o"
	for _, tc := range []struct {
		in     *instance
		origin string
		want   int
	}{
		{def, "", 200},
		{def, "http://" + strings.TrimPrefix(def.base, "http://"), 200}, // same origin
		{def, "https://evil.example", 403},
		{allow, "https://chat.example.com", 200},
		{allow, "http://app.test", 200},
		{allow, "https://example.com.evil.net", 403},
	} {
		if got := try(tc.in, sse, tc.origin); got != tc.want {
			t.Errorf("SSE with Origin %q: %d, want %d", tc.origin, got, tc.want)
		}
	}
	// WebSocket handshake from a foreign origin.
	_, resp, err := websocket.Dial(t.Context(), wsURL(def.base), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign-origin websocket: %v, %v; want 403", err, resp)
	}
	c, _, err := websocket.Dial(t.Context(), wsURL(allow.base), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://chat.example.com"}}})
	if err != nil {
		t.Fatalf("allowed-origin websocket: %v", err)
	}
	c.CloseNow()
	// DNS rebinding: a page on another name that resolves to the loopback
	// server sends its own name as Host (and as a same-looking Origin).
	rebind, _ := http.NewRequest(http.MethodPost, def.base+"/v1/channels/x/events", strings.NewReader("pwned"))
	rebind.Host = "evil.example:" + strings.Split(def.base, ":")[2]
	rebind.Header.Set("Origin", "http://"+rebind.Host)
	resp, err = http.DefaultClient.Do(rebind)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || def.srv.Hub().Head() != 0 {
		t.Fatalf("rebinding request: %d, head %d; want 403 and nothing written", resp.StatusCode, def.srv.Hub().Head())
	}
	// A preflight from an allowed origin is answered with the CORS headers.
	req, _ := http.NewRequest(http.MethodOptions, allow.base+"/v1/channels/x/events", nil)
	req.Header.Set("Origin", "https://chat.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://chat.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestConnectionLimit: the instance's connection limit counts open
// requests of every transport alike, unary ones included (regression: they
// were not), refuses the next one with
// resource_exhausted (429 and Retry-After over HTTP, before a WebSocket
// upgrade), and frees a slot when one ends.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Services: services.Config{MaxConnections: 2}})
	c := grpcClients(in)
	mustPublish(t, c.events, "lim", "x")
	sse := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=lim", nil)
	if sse.resp.StatusCode != http.StatusOK {
		t.Fatalf("first SSE: %s", sse.resp.Status)
	}
	openWS(t, in.base, gateway.SubprotocolJSON)
	// Both served off net/http (hijacked): the SSE stream over HTTP/1.1
	// and the WebSocket.
	waitFor(t, func() bool { return in.srv.Gateway().Connections() == 2 })

	resp, err := http.Get(in.base + "/v1/sse?channel=lim")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"code":"resource_exhausted"`) {
		t.Fatalf("third stream over SSE: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	_, wresp, err := websocket.Dial(t.Context(), wsURL(in.base), nil)
	if err == nil || wresp == nil || wresp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third stream over WebSocket: %v %v", err, wresp)
	}
	st, err := c.events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"lim"}}))
	if err == nil {
		st.Receive()
		err = st.Err()
		st.Close()
	}
	if codeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("third stream over gRPC: %v", err)
	}
	_, err = c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{"lim"}, Wait: durationpb.New(time.Second)}))
	if codeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("long-poll at the limit: %v", err)
	}
	_, err = c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "lim", Cursor: 1, Wait: durationpb.New(time.Second)}))
	if codeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("list with wait at the limit: %v", err)
	}
	// Unary calls count as well: at the limit they are refused too.
	if _, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "lim", Data: []byte("y")})); codeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("unary publish at the limit: %v", err)
	}
	resp, err = http.Post(in.base+"/v1/channels/lim/events", "text/plain", strings.NewReader("y"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("REST publish at the limit: %d", resp.StatusCode)
	}
	// Health checks do not count.
	resp, err = http.Get(in.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health check at the limit: %d", resp.StatusCode)
	}

	// Ending a stream frees its slot.
	sse.resp.Body.Close()
	waitFor(t, func() bool {
		resp, err := http.Get(in.base + "/v1/events?channel=lim&cursor=0")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// TestWSPeerVanishes: a client whose TCP connection ends without a close
// frame is gone at once, subscriptions and all. (Regression: the end of the
// connection read as a half-close, which keeps a Connect stream's
// subscriptions streaming; a WebSocket has no half-close.)
func TestWSPeerVanishes(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	ctx := t.Context()
	ws := dialWS(t, ctx, in.base, gateway.SubprotocolJSON)
	if err := wsWrite(ctx, ws, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"gone"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := wsRead(ctx, ws); err != nil {
		t.Fatal(err)
	}
	ws.CloseNow()
	waitFor(t, func() bool { return in.srv.Hub().Subscribers() == 0 && in.srv.App().OpenConnections() == 0 })
}

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
	ws, _, err := websocket.Dial(ctx, wsURL(in.base), &websocket.DialOptions{HTTPClient: stalledHTTPClient(t, false, nil), Subprotocols: []string{gateway.SubprotocolProto}})
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
