package server_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
)

// sseConn is a raw SSE response read event by event.
type sseConn struct {
	resp *http.Response
	r    *sseReader
}

func getSSE(t *testing.T, hc *http.Client, rawURL string, header http.Header) *sseConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseConn{resp: resp, r: newSSEReader(resp.Body)}
}

func (c *sseConn) next(t *testing.T) sseEvent {
	t.Helper()
	type res struct {
		ev  sseEvent
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ev, err := c.r.next()
		ch <- res{ev, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("sse read: %v", r.err)
		}
		return r.ev
	case <-time.After(10 * time.Second):
		t.Fatal("no SSE event within 10s")
	}
	return sseEvent{}
}

// TestSSEWire checks the bytes on the wire over HTTP/1.1 and HTTP/2:
// headers, retry, the subscribed event and its id, event ids and names,
// keep-alive comments, and resuming via the Last-Event-ID header and via
// the last_event_id query parameter (the header wins when both are sent,
// as on an EventSource reconnect).
func TestSSEWire(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Gateway: gateway.Config{SSEKeepAlive: 300 * time.Millisecond}})
	c := grpcClients(in)
	clients := []struct {
		name  string
		hc    *http.Client
		proto int
	}{
		{"http1", &http.Client{}, 1},
		{"h2c", h2cClient(), 2},
	}
	for _, hcase := range clients {
		t.Run(hcase.name, func(t *testing.T) {
			ch := "wire-" + hcase.name
			pubs := []*heraldv1.Event{mustPublish(t, c.events, ch, "one")}
			resp, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: ch, Type: "greeting", Data: []byte("two")}))
			if err != nil {
				t.Fatal(err)
			}
			pubs = append(pubs, resp.Msg.Event)

			s := getSSE(t, hcase.hc, in.base+"/v1/sse?channel="+ch+"&last_event_id=0", nil)
			if s.resp.ProtoMajor != hcase.proto {
				t.Fatalf("served over HTTP/%d, want %d", s.resp.ProtoMajor, hcase.proto)
			}
			h := s.resp.Header
			for k, want := range map[string]string{
				"Content-Type":      "text/event-stream; charset=utf-8",
				"Cache-Control":     "no-cache, no-transform",
				"X-Accel-Buffering": "no",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if first := s.next(t); len(first.comments) != 1 || first.comments[0] != "retry=2000" {
				t.Fatalf("first block = %+v, want retry: 2000", first)
			}
			sub := s.next(t)
			if sub.event != "@subscribed" || !sub.hasID || sub.id != "0" {
				t.Fatalf("subscribed block = %+v", sub)
			}
			e1, e2 := s.next(t), s.next(t)
			if e1.id != strconv.FormatInt(pubs[0].Position, 10) || e1.event != "" {
				t.Fatalf("untyped event = %+v, want id %d and no event name", e1, pubs[0].Position)
			}
			if e2.id != strconv.FormatInt(pubs[1].Position, 10) || e2.event != "greeting" {
				t.Fatalf("typed event = %+v, want event: greeting", e2)
			}
			m := &heraldv1.Event{}
			mustUnmarshal(e2.data, m)
			if string(m.Data) != "two" || m.Channel != ch {
				t.Fatalf("data = %v", m)
			}
			// Nothing published: keep-alive comments arrive.
			if ka := s.next(t); len(ka.comments) == 0 || ka.comments[0] != "keep-alive" || ka.data != "" {
				t.Fatalf("expected a keep-alive comment, got %+v", ka)
			}

			// Resume after the first event: via the header, via the query
			// parameter, and with both (the header wins).
			after := strconv.FormatInt(pubs[0].Position, 10)
			for _, r := range []struct {
				name   string
				query  string
				header http.Header
			}{
				{"header", "", http.Header{"Last-Event-ID": {after}}},
				{"query", "&last_event_id=" + after, nil},
				{"both", "&last_event_id=0", http.Header{"Last-Event-ID": {after}}},
			} {
				rs := getSSE(t, hcase.hc, in.base+"/v1/sse?channel="+ch+r.query, r.header)
				rs.next(t) // retry
				if sub := rs.next(t); sub.id != after {
					t.Fatalf("%s: subscribed id = %q, want %s", r.name, sub.id, after)
				}
				if ev := rs.next(t); ev.id != strconv.FormatInt(pubs[1].Position, 10) {
					t.Fatalf("%s: first event after resume = %+v, want position %d", r.name, ev, pubs[1].Position)
				}
			}

			// event=message names every event "message".
			ms := getSSE(t, hcase.hc, in.base+"/v1/sse?event=message&channel="+ch+"&last_event_id="+after, nil)
			ms.next(t)
			ms.next(t)
			if ev := ms.next(t); ev.event != "" {
				t.Fatalf("event=message: got event name %q", ev.event)
			}
		})
	}
}

// TestSSEMultiChannelCursor: one id resumes every channel of a stream,
// because positions are global.
func TestSSEMultiChannelCursor(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	c := grpcClients(in)
	var all []int64
	for i := range 6 {
		all = append(all, mustPublish(t, c.events, []string{"mc-a", "mc-b", "mc-c"}[i%3], "x").Position)
	}
	want := []int64{all[3], all[4]} // a and b after all[2]
	s := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=mc-a,mc-b&last_event_id="+strconv.FormatInt(all[2], 10), nil)
	s.next(t)
	s.next(t)
	for _, w := range want {
		if ev := s.next(t); ev.id != strconv.FormatInt(w, 10) {
			t.Fatalf("got %+v, want position %d", ev, w)
		}
	}
}

// TestSSEErrors: bad requests are refused before the stream starts, with
// the one error shape and nothing subscribed.
func TestSSEErrors(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	mustPublish(t, grpcClients(in).events, "known", "x")
	for _, tc := range []struct {
		query  string
		header string
		status int
		code   string
		msg    string
	}{
		{"", "", 400, "invalid_argument", "channel"},
		{"channel=bad%20name", "", 400, "invalid_argument", "channels[0]"},
		{"channel=ok&last_event_id=abc", "", 400, "invalid_argument", "last_event_id"},
		{"channel=ok&last_event_id=-1", "", 400, "invalid_argument", "last_event_id"},
		{"channel=ok", "12x", 400, "invalid_argument", "Last-Event-ID"},
		{"channel=ok&chanel=typo", "", 400, "invalid_argument", "chanel"},
		{"channel=ok&event=bogus", "", 400, "invalid_argument", "event"},
		{"channel=ok&last_event_id=999999", "", 400, "out_of_range", "ahead"},
	} {
		req, _ := http.NewRequest(http.MethodGet, in.base+"/v1/sse?"+tc.query, nil)
		if tc.header != "" {
			req.Header.Set("Last-Event-ID", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), `"code":"`+tc.code+`"`) || !strings.Contains(string(body), tc.msg) {
			t.Errorf("?%s (Last-Event-ID %q): %d %s, want %d %s mentioning %q", tc.query, tc.header, resp.StatusCode, body, tc.status, tc.code, tc.msg)
		}
	}
	if n := in.srv.Hub().Subscribers(); n != 0 {
		t.Fatalf("%d subscriptions left behind by refused requests", n)
	}
}

// TestSSEShutdownEnd: on shutdown the stream gets an @end event with the
// shutdown reason and the last position, then closes.
func TestSSEShutdownEnd(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	ev := mustPublish(t, grpcClients(in).events, "bye", "x")
	s := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=bye&last_event_id=0", nil)
	s.next(t)
	s.next(t)
	s.next(t) // the event
	go in.stop()
	end := s.next(t)
	if end.event != "@end" {
		t.Fatalf("got %+v, want @end", end)
	}
	e := &heraldv1.Error{}
	mustUnmarshal(end.data, e)
	if e.Code != "unavailable" || e.End.GetReason() != heraldv1.StreamEndReason_STREAM_END_REASON_SHUTDOWN || e.End.GetLastPosition() != ev.Position {
		t.Fatalf("@end = %v", e)
	}
	if _, err := s.r.next(); err != io.EOF {
		t.Fatalf("after @end: %v, want EOF", err)
	}
}

// TestSSEIdleOverHTTP2: an SSE stream over HTTP/2 stays open while idle
// longer than the write timeout. (Regression: each flush set a write
// deadline it never cleared, and over HTTP/2 a passed deadline resets the
// stream even between writes.)
func TestSSEIdleOverHTTP2(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Gateway: gateway.Config{WriteTimeout: 300 * time.Millisecond, SSEKeepAlive: time.Hour}})
	c := grpcClients(in)
	a := mustPublish(t, c.events, "idle2", "a")
	s := getSSE(t, h2cClient(), in.base+"/v1/sse?channel=idle2&last_event_id=0", nil)
	if s.resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", s.resp.Proto)
	}
	for s.next(t).id != strconv.FormatInt(a.Position, 10) {
	}
	time.Sleep(time.Second) // idle: what is under test
	ev := mustPublish(t, c.events, "idle2", "b")
	if got := s.next(t); got.id != strconv.FormatInt(ev.Position, 10) {
		t.Fatalf("after an idle second: %+v, want event %d", got, ev.Position)
	}
}

// TestSSEHTTP1Detached: an HTTP/1 stream is served off net/http's
// handler (the connection hijacked, to free net/http's per-connection
// buffers): the response is still the one net/http would write (CORS
// headers, chunked over HTTP/1.1, closed-delimited over HTTP/1.0), an idle
// stream outlives the write timeout, a client that goes away releases its
// subscription and connection slot at once, and a killed server drops it.
func TestSSEHTTP1Detached(t *testing.T) {
	t.Parallel()
	const origin = "https://feed.example.com"
	in := startInstance(t, server.Config{Gateway: gateway.Config{
		AllowedOrigins: []string{origin}, WriteTimeout: 300 * time.Millisecond, SSEKeepAlive: time.Hour}})
	c := grpcClients(in)
	a := mustPublish(t, c.events, "detached", "a")

	s := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=detached&last_event_id=0", http.Header{"Origin": {origin}})
	if s.resp.ProtoMajor != 1 || len(s.resp.TransferEncoding) != 1 || s.resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("proto %s, transfer encoding %v; want HTTP/1.1 chunked", s.resp.Proto, s.resp.TransferEncoding)
	}
	if got := s.resp.Header.Get("Access-Control-Allow-Origin"); got != origin {
		t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, origin)
	}
	if s.resp.Header.Get("Date") == "" || s.resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("headers %v", s.resp.Header)
	}
	for s.next(t).id != strconv.FormatInt(a.Position, 10) {
	}
	if n := in.srv.Gateway().Connections(); n != 1 {
		t.Fatalf("gateway holds %d connections, want the stream's 1", n)
	}
	time.Sleep(time.Second) // idle past the write timeout
	b := mustPublish(t, c.events, "detached", "b")
	if got := s.next(t); got.id != strconv.FormatInt(b.Position, 10) {
		t.Fatalf("after an idle second: %+v, want event %d", got, b.Position)
	}
	// The client goes: its subscription and slot go with it, though the
	// server has nothing to write that would notice.
	s.resp.Body.Close()
	waitFor(t, func() bool {
		return in.srv.Gateway().Connections() == 0 && in.srv.Hub().Subscribers() == 0 && in.srv.App().OpenConnections() == 0
	})

	// HTTP/1.0: no chunks; the body ends with the connection.
	conn, err := net.Dial("tcp", strings.TrimPrefix(in.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /v1/sse?channel=detached&last_event_id=0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.0" || len(resp.TransferEncoding) != 0 || !resp.Close {
		t.Fatalf("HTTP/1.0 answered %d with %s, transfer encoding %v, close %v", resp.StatusCode, resp.Proto, resp.TransferEncoding, resp.Close)
	}
	r := newSSEReader(resp.Body)
	for {
		ev, err := r.next()
		if err != nil {
			t.Fatalf("HTTP/1.0 stream: %v before event %d", err, b.Position)
		}
		if ev.id == strconv.FormatInt(b.Position, 10) {
			break
		}
	}
	// Killed like a crash: the stream ends without @end, and promptly.
	go in.kill()
	done := make(chan error, 1)
	go func() {
		_, err := r.next()
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an event after the kill")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open 10s after the kill")
	}
}
