package gateway

import (
	"context"
	"errors"
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
		case "event":
			switch v := q.Get("event"); v {
			case "message":
				req.untyped = true
			case "type", "":
			default:
				return req, invalid(`event: must be "type" (the default: the SSE event name is the event's type) or "message"`)
			}
		default:
			return req, invalid("unknown query parameter " + strconv.Quote(k) + "; use channel, last_event_id, event, type and tag")
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
	st, err := g.app.Open(ctx, services.OpenRequest{Channels: req.channels, Cursor: req.cursor, Filter: req.filter})
	if err != nil {
		writeError(w, err)
		return
	}
	defer st.Close()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if r.ProtoMajor == 1 {
		h.Set("Connection", "keep-alive")
	}
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: g.cfg.WriteTimeout}

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
		return
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
			if sw.flush() != nil {
				return
			}
			continue
		}
		if err != nil {
			g.sseEnd(sw, err)
			return
		}
		// Write what is ready, then flush once: every event is flushed as
		// soon as the burst it arrived in is written.
		for n := 0; ; n++ {
			sw.item(it, req.untyped)
			if n == sseBurstEvents || len(sw.buf) >= sseBurstBytes {
				break
			}
			if it, err = st.TryNext(ctx); err != nil {
				break
			}
		}
		if sw.flush() != nil {
			return
		}
		st.Written() // delivery lag, for the metrics
		if err != nil && !errors.Is(err, services.ErrWouldBlock) {
			g.sseEnd(sw, err)
			return
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
// by itself. A client that went away gets nothing.
func (g *Gateway) sseEnd(sw *sseWriter, err error) {
	var end *services.End
	if !errors.As(err, &end) {
		return
	}
	sw.field("event", sseEnd)
	sw.data(mustJSON(end.Proto()))
	sw.end()
	_ = sw.flush()
}

// sseWriter writes SSE fields. Values never hold a newline: ids are
// numbers, names and types are restricted by their rules, and JSON from
// protojson is on one line.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

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

func mustJSON(m proto.Message) []byte {
	b, err := services.MarshalJSON(m)
	if err != nil {
		panic(err)
	}
	return b
}
