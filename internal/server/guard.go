package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
)

// guard applies what every request is held to, whatever its protocol:
//
//   - It counts toward the connection limits while it is open
//     (services.App.Admit): unary RPCs and REST calls as much as streams.
//     Health checks and the embedded files do not count, so that a full
//     instance still answers its load balancer.
//   - Its body must arrive within ReadTimeout: the whole body of a unary
//     or server-streaming call, each message of a bidirectional stream
//     (the Connect RPC, whose body lasts as long as the stream; it may stay
//     idle between messages). A body that ends before its declared length,
//     or inside a message, is the client's error: invalid_argument.
//   - Each write of its response must finish within WriteTimeout: a
//     client that stops reading (TCP, or HTTP/2 flow control) is dropped
//     then, on every transport. (The WebSocket, hijacked, applies the same
//     bounds itself.)
func (s *Server) guard(next http.Handler) http.Handler {
	readTimeout, writeTimeout := s.cfg.Gateway.ReadTimeout, s.cfg.Gateway.WriteTimeout
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !public(r.URL.Path) && r.Method != http.MethodOptions {
			ctx, done, err := s.app.Admit(r.Context())
			if err != nil {
				s.gw.WriteError(w, r, err)
				return
			}
			defer done()
			r = r.WithContext(ctx)
		}
		rc := http.NewResponseController(w)
		if r.Body != nil && r.Body != http.NoBody {
			b := &guardedBody{body: r.Body, rc: rc, timeout: readTimeout, declared: r.ContentLength,
				enveloped: enveloped(r.Header.Get("Content-Type")),
				stream:    r.URL.Path == heraldv1connect.EventServiceConnectProcedure}
			if !b.stream {
				b.arm()
			}
			// Not disarmed when the handler returns: net/http then reads
			// what is left of the body, which must come in time too.
			r.Body = b
			defer b.finish()
		}
		gw := &guardedWriter{ResponseWriter: w, rc: rc, timeout: writeTimeout}
		defer gw.end()
		next.ServeHTTP(gw, r)
	})
}

// enveloped reports whether a body of contentType is a sequence of
// length-prefixed messages (gRPC, gRPC-Web, Connect streaming): one that
// ends inside a message was cut short even when it ends cleanly.
// (gRPC-Web's base64 text form is not checked.)
func enveloped(contentType string) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	return strings.HasPrefix(ct, "application/connect+") ||
		ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") ||
		ct == "application/grpc-web" || strings.HasPrefix(ct, "application/grpc-web+")
}

// guardedBody bounds the time a request body takes and reports a body cut
// short as the client's error. One goroutine reads it: the handler's, or
// one the handler started (the Connect stream's reader), which may still
// be inside Read when the handler returns. The ResponseController must not
// be used once the handler has returned (net/http reuses or clears the
// writer then: a data race on HTTP/2), so deadlines are set under mu and
// not at all after finish.
type guardedBody struct {
	body      io.ReadCloser
	mu        sync.Mutex
	finished  bool // the handler returned: rc is off limits
	rc        *http.ResponseController
	timeout   time.Duration
	declared  int64 // Content-Length; -1: unknown
	enveloped bool
	stream    bool // the deadline is per message, not for the whole body

	read   int64
	armed  bool
	prefix int     // bytes of the current envelope prefix seen
	hdr    [5]byte // that prefix
	rest   int64   // bytes of the current message still to come
}

func (b *guardedBody) arm() {
	b.armed = true
	b.setReadDeadline(time.Now().Add(b.timeout))
}

// setReadDeadline sets the connection's read deadline unless the handler
// has returned.
func (b *guardedBody) setReadDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.finished {
		_ = b.rc.SetReadDeadline(t)
	}
}

// finish is called as the handler returns: from then on the body no longer
// touches the response's controller.
func (b *guardedBody) finish() {
	b.mu.Lock()
	b.finished = true
	b.mu.Unlock()
}

// disarm clears the deadline once the body (or message) is in, and only
// then: over
// HTTP/1.1 the connection's read deadline would otherwise end the
// request's context while its handler still works (a long-poll).
func (b *guardedBody) disarm() {
	if b.armed {
		b.armed = false
		b.setReadDeadline(time.Time{})
	}
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.read += int64(n)
	if b.enveloped {
		b.track(p[:n])
	}
	if b.stream {
		// Between messages a stream may be idle; inside one, the rest of
		// it must come within the timeout.
		switch inside := b.prefix > 0 || b.rest > 0; {
		case inside && !b.armed:
			b.arm()
		case !inside:
			b.disarm()
		}
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		if b.prefix > 0 || b.rest > 0 {
			return n, b.truncated(fmt.Sprintf("request body ended inside a message (%d bytes of it missing)", b.missing()))
		}
		b.disarm()
		return n, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, &bodyError{connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
			"request body not received within the read timeout (%v): send it faster, or ask the operator to raise --read-timeout", b.timeout))}
	case errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "declared a Content-Length"):
		// HTTP/1.1 and HTTP/2 say so differently.
		return n, b.truncated(fmt.Sprintf("request body ended after %d of its declared %d bytes", b.read, b.declared))
	}
	return n, err
}

// track follows the envelopes (a flag byte, a 4-byte big-endian length,
// the message) through p.
func (b *guardedBody) track(p []byte) {
	for len(p) > 0 {
		if b.rest > 0 {
			k := min(int64(len(p)), b.rest)
			b.rest -= k
			p = p[k:]
			continue
		}
		k := copy(b.hdr[b.prefix:], p)
		b.prefix += k
		p = p[k:]
		if b.prefix == len(b.hdr) {
			b.prefix = 0
			b.rest = int64(binary.BigEndian.Uint32(b.hdr[1:]))
		}
	}
}

func (b *guardedBody) missing() int64 {
	if b.prefix > 0 {
		return int64(len(b.hdr) - b.prefix)
	}
	return b.rest
}

func (b *guardedBody) truncated(msg string) error {
	return &bodyError{connect.NewError(connect.CodeInvalidArgument, errors.New(msg+": send the whole body"))}
}

func (b *guardedBody) Close() error { return b.body.Close() }

// bodyError is a body refused: the RPC handlers answer with its connect
// code (connect-go passes a *connect.Error from the body through); its
// text is the plain message, for REST's error body.
type bodyError struct{ ce *connect.Error }

func (e *bodyError) Error() string { return e.ce.Message() }
func (e *bodyError) Unwrap() error { return e.ce }

// guardedWriter bounds each write of a response: a timer per request,
// armed only while a write (or flush) is under way, sets a write deadline
// in the past when one stalls for timeout. That fails the write over
// HTTP/1.1 and resets the stream over HTTP/2 (so a stream blocked on flow
// control ends too), and costs nothing while a stream is idle. The
// handler's goroutine writes; the timer's only sets the deadline, under mu
// and never after the handler returned (HTTP/2 frees the writer then).
type guardedWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	timer   *time.Timer

	mu    sync.Mutex
	ended bool
}

func (w *guardedWriter) arm() {
	if w.timer == nil {
		w.timer = time.AfterFunc(w.timeout, w.stalled)
		return
	}
	w.timer.Reset(w.timeout)
}

func (w *guardedWriter) stalled() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		_ = w.rc.SetWriteDeadline(time.Now())
	}
}

// end is called when the handler returned.
func (w *guardedWriter) end() {
	w.stop()
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
}

func (w *guardedWriter) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

func (w *guardedWriter) Write(p []byte) (int, error) {
	w.arm()
	defer w.stop()
	return w.ResponseWriter.Write(p)
}

func (w *guardedWriter) Flush() {
	w.arm()
	defer w.stop()
	_ = w.rc.Flush()
}

// FlushError is Flush with its error, for http.ResponseController.
func (w *guardedWriter) FlushError() error {
	w.arm()
	defer w.stop()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection (deadlines,
// the WebSocket's hijack).
func (w *guardedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
