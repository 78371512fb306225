package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/services"
)

// SSE event names the server itself sends. They contain '@', which event
// types may not, so they never collide with an application's types.
const (
	sseSubscribed = "@subscribed"
	sseEnd        = "@end"
	sseCheckpoint = "@checkpoint"
	// Signals and presence changes carry no id: they have no position,
	// and an EventSource keeps its Last-Event-ID from the last event.
	sseSignal   = "@signal"
	ssePresence = "@presence"
)

// An SSE burst (events written before one flush) holds at most this many
// events or bytes: the buffer of a stream stays small whatever the events'
// size.
const (
	sseBurstEvents = 64
	sseBurstBytes  = 256 << 10
)

// sseRequest is a decoded GET /v1/sse.
type sseRequest struct {
	channels []string // none: the token's (services.Open)
	cursor   *int64
	untyped  bool // event=message: every event is named "message"
	filter   *heraldv1.EventFilter
	presence bool // presence=1: joins and leaves (services.OpenRequest.Presence)
}

// parseSSERequest decodes the query and the Last-Event-ID header. The
// header wins over last_event_id: EventSource sends it on every reconnect,
// with the position it last received, while the URL keeps the first one.
func parseSSERequest(q url.Values, lastEventID string) (sseRequest, error) {
	var req sseRequest
	for k, vs := range q {
		switch k {
		case "channel":
			for _, v := range vs {
				for c := range strings.SplitSeq(v, ",") {
					if c != "" {
						req.channels = append(req.channels, c)
					}
				}
			}
		case "type":
			if req.filter == nil {
				req.filter = &heraldv1.EventFilter{}
			}
			for _, v := range vs {
				for typ := range strings.SplitSeq(v, ",") {
					if typ != "" {
						req.filter.Types = append(req.filter.Types, typ)
					}
				}
			}
		case "tag":
			if req.filter == nil {
				req.filter = &heraldv1.EventFilter{}
			}
			tags, err := parseTags(vs)
			if err != nil {
				return req, err
			}
			req.filter.Tags = tags
		case "last_event_id":
		case "presence":
			switch q.Get("presence") {
			case "1", "true":
				req.presence = true
			case "0", "false", "":
			default:
				return req, invalid(`presence: must be "1" or "true" (receive joins and leaves), or "0"`)
			}
		case "event":
			switch v := q.Get("event"); v {
			case "message":
				req.untyped = true
			case "type", "":
			default:
				return req, invalid(`event: must be "type" (the default: the SSE event name is the event's type) or "message"`)
			}
		default:
			return req, invalid("unknown query parameter " + strconv.Quote(k) + "; use channel, last_event_id, event, type, tag and presence")
		}
	}
	id, name := lastEventID, "Last-Event-ID"
	if id == "" && q.Has("last_event_id") {
		id, name = q.Get("last_event_id"), "last_event_id"
	}
	if id != "" || q.Has("last_event_id") {
		c, err := parseCursor(id)
		if err != nil {
			return req, invalid(name + ": " + err.Error())
		}
		req.cursor = &c
	}
	if len(req.channels) == 0 {
		if req.filter != nil {
			// The token's channels, checked by Open; the filter here.
			return req, services.Validate(req.filter)
		}
		return req, nil
	}
	return req, services.Validate(&heraldv1.SubscribeRequest{Channels: req.channels, Cursor: req.cursor, Filter: req.filter})
}

// parseTags reads tag filters written key:value, each in its own
// parameter or separated by commas (tag=room:42,lang:en).
func parseTags(vs []string) (map[string]string, error) {
	tags := map[string]string{}
	for _, v := range vs {
		for kv := range strings.SplitSeq(v, ",") {
			if kv == "" {
				continue
			}
			k, val, ok := strings.Cut(kv, ":")
			if !ok {
				return nil, invalid("tag: " + strconv.Quote(kv) + " is not key:value (e.g. tag=room:42)")
			}
			if old, dup := tags[k]; dup && old != val {
				return nil, invalid("tag: " + strconv.Quote(k) + " is given twice with different values")
			}
			tags[k] = val
		}
	}
	return tags, nil
}

// parseCursor reads a position: a decimal integer ≥ 0.
func parseCursor(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("must be a position (an integer ≥ 0)")
	}
	return n, nil
}

// serveSSE streams one subscription as Server-Sent Events: a loop over
// services.Open. The id of every event is its position, which covers all
// the stream's channels, so the Last-Event-ID of a reconnecting EventSource
// resumes it exactly.
func (g *Gateway) serveSSE(w http.ResponseWriter, r *http.Request) {
	req, err := parseSSERequest(r.URL.Query(), r.Header.Get("Last-Event-ID"))
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	st, err := g.app.Open(ctx, services.OpenRequest{Channels: req.channels, Cursor: req.cursor, Filter: req.filter, Presence: req.presence})
	if err != nil {
		writeError(w, err)
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if r.ProtoMajor == 1 {
		h.Set("Connection", "keep-alive")
		if r.Method == http.MethodGet && g.detachSSE(w, r, st, req.untyped) {
			return
		}
	}
	defer st.Close()
	w.WriteHeader(http.StatusOK)
	g.streamSSE(ctx, st, &sseWriter{w: w, rc: http.NewResponseController(w), timeout: g.cfg.WriteTimeout}, req.untyped)
}

// detachSSE serves an HTTP/1 stream on the connection itself, from a
// goroutine of its own, and lets the handler return: net/http's state for
// the connection (its 4 KiB read and write buffers, the response's 2 KiB
// buffer, the request, the handler's deep stack and its background reader)
// is freed, and an idle stream costs a shallow goroutine, a reader
// goroutine and its subscription (docs/benchmarks.md, idle SSE). The
// response is the one net/http would write: the headers set so far (CORS
// included), chunked over HTTP/1.1, delimited by the connection's close
// over HTTP/1.0. It reports false, having written nothing, when the
// connection cannot be hijacked; the handler then serves the stream.
func (g *Gateway) detachSSE(w http.ResponseWriter, r *http.Request, st *services.Stream, untyped bool) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// What the client sent after its request (buffered by net/http) is
	// not read: nothing more is served on this connection.
	chunked := r.ProtoMinor >= 1
	head := []byte("HTTP/1.1 200 OK\r\n")
	if !chunked {
		head = []byte("HTTP/1.0 200 OK\r\n")
		w.Header().Set("Connection", "close")
	}
	hb := bytes.NewBuffer(head)
	_ = w.Header().Write(hb)
	hb.WriteString("Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n")
	if chunked {
		hb.WriteString("Transfer-Encoding: chunked\r\n")
	}
	hb.WriteString("\r\n")

	// The stream outlives the handler: its context ends when the client
	// goes (the reader sees the connection end) or the gateway kills it.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	sc := &sseConn{conn: conn, cancel: cancel}
	sw := newConnSSEWriter(conn, chunked, g.cfg.WriteTimeout, hb.Bytes())
	run := func() {
		defer conn.Close()
		defer cancel()
		defer st.Close()
		if g.streamSSE(ctx, st, sw, untyped) == nil {
			sw.finish()
		}
	}
	go sc.read()
	if !g.track(sc) {
		// Shutting down: the stream ends at once with its @end event.
		run()
		return true
	}
	go func() {
		defer g.untrack(sc)
		run()
	}()
	return true
}

// sseConn is an SSE stream on a hijacked HTTP/1 connection.
type sseConn struct {
	conn   net.Conn
	cancel context.CancelFunc
}

// read waits for the client to go: an SSE client sends nothing after its
// request, so any read that ends (EOF, reset, the connection closed by
// kill or by the stream's end) ends the stream. Bytes a client sends
// anyway are discarded.
func (sc *sseConn) read() {
	var b [64]byte
	for {
		if _, err := sc.conn.Read(b[:]); err != nil {
			sc.cancel()
			return
		}
	}
}

func (sc *sseConn) kill() {
	sc.cancel()
	_ = sc.conn.Close()
}

// streamSSE writes the stream's preamble, then its events as they come,
// with keep-alive comments while it is idle, until the stream ends (its
// @end event says why, when the server ended it). It returns the write
// error that ended it, if one did.
func (g *Gateway) streamSSE(ctx context.Context, st *services.Stream, sw *sseWriter, untyped bool) error {
	start := st.Subscribed()
	sw.field("retry", strconv.FormatInt(g.cfg.SSERetry.Milliseconds(), 10))
	sw.end()
	// The subscribed event carries the start cursor as its id, so a stream
	// that drops before its first event still resumes from where it began.
	sw.field("id", strconv.FormatInt(start.Cursor, 10))
	sw.field("event", sseSubscribed)
	sw.data(mustJSON(start))
	sw.end()
	if err := sw.flush(); err != nil {
		return err
	}

	// Keep-alive: one timer context per interval, not per event.
	var kctx context.Context
	kcancel := context.CancelFunc(func() {})
	defer func() { kcancel() }()
	renew := func() {
		kcancel()
		kctx, kcancel = context.WithTimeout(ctx, g.cfg.SSEKeepAlive)
	}
	renew()
	var end *services.End
	for {
		it, err := st.Next(kctx)
		if err != nil && kctx.Err() != nil && ctx.Err() == nil && !errors.As(err, &end) {
			// Our keep-alive timer, not an outage (whose errors can wrap
			// context.DeadlineExceeded too).
			renew()
			sw.comment("keep-alive")
			if err := sw.flush(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return g.sseEnd(sw, err)
		}
		// Write what is ready, then flush once: every event is flushed as
		// soon as the burst it arrived in is written.
		for n := 0; ; n++ {
			sw.item(it, untyped)
			if n == sseBurstEvents || sw.buffered() >= sseBurstBytes {
				break
			}
			if it, err = st.TryNext(ctx); err != nil {
				break
			}
		}
		if err := sw.flush(); err != nil {
			return err
		}
		st.Written() // delivery lag, for the metrics
		if err != nil && !errors.Is(err, services.ErrWouldBlock) {
			return g.sseEnd(sw, err)
		}
	}
}

// item writes an event, with its shared JSON encoding, or a truncation
// notice.
func (s *sseWriter) item(it services.Item, untyped bool) {
	if c := it.Checkpoint(); c != 0 {
		// With an id, so that EventSource's Last-Event-ID moves past the
		// events the filter dropped.
		s.buf = append(s.buf, "id: "...)
		s.buf = strconv.AppendInt(s.buf, c, 10)
		s.buf = append(s.buf, '\n')
		s.field("event", sseCheckpoint)
		s.data(mustJSON(&heraldv1.Checkpoint{Position: c}))
		s.end()
		return
	}
	if sig := it.Signal(); sig != nil {
		s.field("event", sseSignal)
		s.data(mustJSON(sig))
		s.end()
		return
	}
	if p := it.Presence(); p != nil {
		s.field("event", ssePresence)
		s.data(mustJSON(p))
		s.end()
		return
	}
	if n := it.Notice(); n != nil {
		s.field("event", sseSubscribed)
		s.data(mustJSON(n))
		s.end()
		return
	}
	s.buf = append(s.buf, "id: "...)
	s.buf = strconv.AppendInt(s.buf, it.Position(), 10)
	s.buf = append(s.buf, '\n')
	if t := it.Type(); !untyped && t != "" {
		s.field("event", t)
	}
	s.data(it.EventJSON())
	s.end()
}

// sseEnd tells the client why the stream ends (slow consumer, shutdown,
// outage, expired token) and where to resume; EventSource then reconnects
// by itself. A client that went away gets nothing: errClientGone.
func (g *Gateway) sseEnd(sw *sseWriter, err error) error {
	var end *services.End
	if !errors.As(err, &end) {
		return errClientGone
	}
	sw.field("event", sseEnd)
	sw.data(mustJSON(end.Proto()))
	sw.end()
	return sw.flush()
}

// errClientGone ends a stream whose client went away.
var errClientGone = errors.New("client gone")

// sseWriter writes SSE fields. Values never hold a newline: ids are
// numbers, names and types are restricted by their rules, and JSON from
// protojson is on one line. It writes to a ResponseWriter (HTTP/2, or a
// connection that could not be hijacked) or to a hijacked HTTP/1
// connection (conn), framing each flush as one chunk over HTTP/1.1.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte

	conn    net.Conn
	chunked bool
	head    []byte // the response's status line and headers, written with the first flush
	reserve int    // bytes kept free at the start of buf for a chunk's size line
}

// chunkReserve holds a chunk-size line: up to 16 hex digits and CRLF.
const chunkReserve = 18

func newConnSSEWriter(conn net.Conn, chunked bool, timeout time.Duration, head []byte) *sseWriter {
	s := &sseWriter{conn: conn, chunked: chunked, timeout: timeout, head: head}
	if chunked {
		s.reserve = chunkReserve
	}
	s.buf = make([]byte, s.reserve, 512)
	return s
}

// buffered is how many bytes of events wait for the next flush.
func (s *sseWriter) buffered() int { return len(s.buf) - s.reserve }

func (s *sseWriter) field(name, value string) {
	s.buf = append(s.buf, name...)
	s.buf = append(s.buf, ": "...)
	s.buf = append(s.buf, value...)
	s.buf = append(s.buf, '\n')
}

func (s *sseWriter) data(b []byte) {
	s.buf = append(s.buf, "data: "...)
	s.buf = append(s.buf, b...)
	s.buf = append(s.buf, '\n')
}

func (s *sseWriter) comment(text string) {
	s.buf = append(s.buf, ": "...)
	s.buf = append(s.buf, text...)
	s.buf = append(s.buf, "\n\n"...)
}

func (s *sseWriter) end() { s.buf = append(s.buf, '\n') }

// flush writes the buffered events within the write timeout: a client
// that stops reading is dropped WriteTimeout after its writes stall,
// instead of holding the handler forever. The deadline is cleared once the
// flush is done: over HTTP/2 a deadline that passes resets the stream even
// while it is idle between events.
func (s *sseWriter) flush() error {
	if s.conn != nil {
		return s.flushConn()
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	_, err := s.w.Write(s.buf)
	s.buf = s.buf[:0]
	if cap(s.buf) > 64<<10 {
		s.buf = nil // a burst of large events: an idle stream keeps no big buffer
	}
	if err == nil {
		err = s.rc.Flush()
	}
	if err == nil {
		err = s.rc.SetWriteDeadline(time.Time{})
	}
	return err
}

// flushConn writes the buffered events to the hijacked connection in one
// write: over HTTP/1.1 as one chunk, whose size line goes in the room kept
// at the start of buf. The deadline bounds this write only; the next one
// sets its own, and an idle connection has none in progress.
func (s *sseWriter) flushConn() error {
	if s.buffered() == 0 && s.head == nil {
		return nil // an empty chunk would end the response
	}
	out := s.buf
	if s.chunked {
		var line [chunkReserve]byte
		l := strconv.AppendInt(line[:0], int64(len(s.buf)-s.reserve), 16)
		l = append(l, '\r', '\n')
		at := s.reserve - len(l)
		copy(s.buf[at:], l)
		s.buf = append(s.buf, '\r', '\n')
		out = s.buf[at:]
	}
	if s.head != nil {
		out = append(s.head, out...)
		s.head = nil
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	_, err := s.conn.Write(out)
	s.buf = s.buf[:s.reserve]
	if cap(s.buf) > 64<<10 {
		s.buf = make([]byte, s.reserve, 512) // a burst of large events: an idle stream keeps no big buffer
	}
	return err
}

// finish ends the response of a stream the server ended: the last chunk
// over HTTP/1.1 (HTTP/1.0's ends with the connection).
func (s *sseWriter) finish() {
	if s.chunked {
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
		_, _ = io.WriteString(s.conn, "0\r\n\r\n")
	}
}

func mustJSON(m proto.Message) []byte {
	b, err := services.MarshalJSON(m)
	if err != nil {
		panic(err)
	}
	return b
}
