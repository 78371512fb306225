package server_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/heraldrt/herald/gateway"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// trickle is a request body that sends one byte every interval.
type trickle struct {
	n        int
	interval time.Duration
	stop     chan struct{}
}

func (t *trickle) Read(p []byte) (int, error) {
	if t.n == 0 {
		return 0, io.EOF
	}
	select {
	case <-time.After(t.interval):
	case <-t.stop:
		return 0, io.ErrClosedPipe
	}
	t.n--
	p[0] = 'x'
	return 1, nil
}

// TestBodyReadTimeout: a request whose body trickles in is answered (or
// dropped) once --read-timeout has passed, whatever its protocol, and
// counts toward the connection limit meanwhile. (Regression: slow bodies
// were read for as long as they took, and unary requests were not
// counted.)
func TestBodyReadTimeout(t *testing.T) {
	t.Parallel()
	const readTimeout = time.Second
	in := startInstance(t, server.Config{Gateway: gateway.Config{ReadTimeout: readTimeout}})
	const n = 20
	stop := make(chan struct{})
	defer close(stop)
	type result struct {
		took   time.Duration
		status int
		err    error
	}
	results := make(chan result, 2*n)
	h1, h2 := &http.Client{Transport: &http.Transport{}}, h2cClient()
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2.CloseIdleConnections)
	var wg sync.WaitGroup
	for i := range 2 * n {
		hc := h1 // REST over HTTP/1.1
		url, ct := in.base+"/v1/channels/slow/events", "text/plain"
		if i%2 == 1 { // Connect unary over h2c
			hc, url, ct = h2, in.base+"/herald.v1.EventService/Publish", "application/json"
		}
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, url, &trickle{n: 100, interval: 200 * time.Millisecond, stop: stop})
			req.ContentLength = 100
			req.Header.Set("Content-Type", ct)
			start := time.Now()
			resp, err := hc.Do(req)
			r := result{err: err}
			if err == nil {
				r.status = resp.StatusCode
				resp.Body.Close()
			}
			r.took = time.Since(start)
			results <- r
		})
	}
	// Every request counts while its body trickles.
	waitFor(t, func() bool { return in.srv.App().OpenConnections() == 2*n })
	wg.Wait()
	close(results)
	for r := range results {
		if r.took > readTimeout+time.Second {
			t.Errorf("a trickling body was held %v (status %d, %v); want about the read timeout (%v)", r.took, r.status, r.err, readTimeout)
		}
		if r.err == nil && r.status < 400 {
			t.Errorf("a trickling body got %d", r.status)
		}
	}
	waitFor(t, func() bool { return in.srv.App().OpenConnections() == 0 })
	if head := in.srv.Hub().Head(); head != 0 {
		t.Fatalf("a trickled body was published: head %d", head)
	}
}

// h2cRequest sends one request over a raw HTTP/2 connection: HEADERS,
// then body as one DATA frame that ends the stream, whatever
// content-length says. It returns the response's status, headers and
// trailers (merged) and body.
func h2cRequest(t *testing.T, base, path string, header map[string]string, body []byte) (string, map[string]string, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, bufio.NewReader(conn))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", strings.TrimPrefix(base, "http://")}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for k, v := range header {
		_ = enc.WriteField(hpack.HeaderField{Name: k, Value: v})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteData(1, true, body); err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { fields[f.Name] = f.Value })
	var out []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the response: %v (so far %v %q)", err, fields, out)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				t.Fatal(err)
			}
			if f.StreamEnded() {
				return fields[":status"], fields, out
			}
		case *http2.DataFrame:
			out = append(out, f.Data()...)
			if f.StreamEnded() {
				return fields[":status"], fields, out
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		}
	}
}

// http1Request sends a request with a body shorter than its
// Content-Length over HTTP/1.1, half-closes, and returns the response.
func http1Request(t *testing.T, base, path, contentType string, declared int, body []byte) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", path, strings.TrimPrefix(base, "http://"), contentType, declared)
	_, _ = conn.Write(body)
	_ = conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Grpc-Status") + string(b)
}

// TestTruncatedBody: a body that ends before its declared length, or
// inside a length-prefixed message, is the client's error
// (invalid_argument, 400) on every protocol; nothing is published.
// (Regression: Connect over h2c answered 500 unknown, gRPC internal.)
func TestTruncatedBody(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Services: services.Config{}})
	const publish = "/herald.v1.EventService/Publish"
	msg := []byte(`{"channel":"cut","data":"aGk="}`)
	envelope := func(declared int, b []byte) []byte {
		return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(declared)), b...)
	}
	t.Run("connect-h2c", func(t *testing.T) {
		status, _, body := h2cRequest(t, in.base, publish, map[string]string{"content-type": "application/json", "content-length": "100"}, msg)
		if status != "400" || !strings.Contains(string(body), `"invalid_argument"`) || !strings.Contains(string(body), "declared") {
			t.Fatalf("%s %s", status, body)
		}
	})
	t.Run("grpc-h2c", func(t *testing.T) {
		status, fields, _ := h2cRequest(t, in.base, publish, map[string]string{"content-type": "application/grpc+json", "te": "trailers"}, envelope(100, msg))
		if status != "200" || fields["grpc-status"] != "3" || !strings.Contains(fields["grpc-message"], "inside a message") {
			t.Fatalf("%s %v", status, fields)
		}
	})
	t.Run("connect-http1", func(t *testing.T) {
		status, body := http1Request(t, in.base, publish, "application/json", 100, msg)
		if status != 400 || !strings.Contains(body, `"invalid_argument"`) {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("grpcweb-http1", func(t *testing.T) {
		b := envelope(100, msg)
		status, body := http1Request(t, in.base, publish, "application/grpc-web+json", len(b), b)
		if status != 200 || !strings.HasPrefix(body, "3") && !strings.Contains(body, "grpc-status: 3") {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("rest-http1", func(t *testing.T) {
		status, body := http1Request(t, in.base, "/v1/channels/cut/events", "text/plain", 100, []byte("hi"))
		if status != 400 || !strings.Contains(body, `"invalid_argument"`) {
			t.Fatalf("%d %s", status, body)
		}
	})
	if head := in.srv.Hub().Head(); head != 0 {
		t.Fatalf("a truncated body was published: head %d", head)
	}
}
