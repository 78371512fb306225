package lbtest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/wire"
	"github.com/heraldrt/herald/services"
)

// received is one event as a subscriber got it.
type received struct {
	pos  int64
	key  string    // the idempotency key, which names the publish
	conn int       // which of the subscriber's connections delivered it (1, 2, ...)
	at   time.Time // when it was read
}

// ending is how one of a subscriber's connections ended.
type ending struct {
	at     time.Time
	reason string // the StreamEnd reason, when the server sent one
	close  string // how the connection itself ended
}

// subscriber is a WebSocket or SSE client that reconnects through nginx
// and resumes after the last position it received, as a client must. It
// records what it got; its methods are safe to call concurrently.
type subscriber struct {
	name     string
	channels []string
	base     string // nginx
	hc       *http.Client
	session  func(ctx context.Context, s *subscriber) error

	mu           sync.Mutex
	cursor       int64       // last position received (the subscriptions start at 0)
	conns        int         // connections that got their subscribed answer
	subscribedAt []time.Time // when each of them did
	events       []received
	endings      []ending
	pendingEnd   string  // reason of an end frame on the current connection
	errs         []error // broken guarantees: duplicates, order, wrong end positions
}

// run connects, reads and reconnects until ctx ends. A reconnect follows
// at once after a connection that had subscribed, then backs off up to
// 250 ms while connecting fails.
func (s *subscriber) run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		before := s.connections()
		err := s.session(ctx, s)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.endings = append(s.endings, ending{at: time.Now(), reason: s.pendingEnd, close: describe(err)})
		s.pendingEnd = ""
		s.mu.Unlock()
		if s.connections() > before {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, 10*time.Millisecond), 250*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

func describe(err error) string {
	if s := websocket.CloseStatus(err); s != -1 {
		return "close " + strconv.Itoa(int(s))
	}
	if err == nil {
		return "ended"
	}
	return err.Error()
}

// subscribed records the server's answer to a (re)subscription, which
// must start exactly after the client's cursor.
func (s *subscriber) subscribed(cursor int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns++
	s.subscribedAt = append(s.subscribedAt, time.Now())
	if cursor != s.cursor {
		s.errs = append(s.errs, fmt.Errorf("connection %d subscribed after %d, asked for %d", s.conns, cursor, s.cursor))
	}
}

// event records an event; positions must grow strictly (no duplicate, in
// order) and start where the subscription does.
func (s *subscriber) event(ev *heraldv1.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Position <= s.cursor {
		s.errs = append(s.errs, fmt.Errorf("connection %d: position %d after %d (duplicate or out of order)", s.conns, ev.Position, s.cursor))
		return
	}
	s.cursor = ev.Position
	s.events = append(s.events, received{pos: ev.Position, key: ev.IdempotencyKey, conn: s.conns, at: time.Now()})
}

// ended records an end frame: the server says where to resume, which must
// be the last position the client received.
func (s *subscriber) ended(e *heraldv1.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.End == nil {
		s.errs = append(s.errs, fmt.Errorf("connection %d: error without end: %s: %s", s.conns, e.Code, e.Message))
		return
	}
	s.pendingEnd = e.End.Reason.String()
	if e.End.LastPosition != s.cursor {
		s.errs = append(s.errs, fmt.Errorf("connection %d: end (%s) says resume after %d; last received %d", s.conns, e.End.Reason, e.End.LastPosition, s.cursor))
	}
}

func (s *subscriber) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
}

func (s *subscriber) position() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

func (s *subscriber) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *subscriber) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// move is how a subscriber went over to another instance after a moment
// t0: when its connection ended, when the next one subscribed and when
// that one delivered its first event, each after t0.
type move struct {
	ended, subscribed, event time.Duration
	endings                  []ending // of the connections that ended after t0
	t0                       time.Time
}

func (m move) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	var e []string
	for _, x := range m.endings {
		e = append(e, fmt.Sprintf("%v:%s/%s", r(x.at.Sub(m.t0)), x.reason, x.close))
	}
	return fmt.Sprintf("ended +%v, subscribed +%v, event +%v [%s]", r(m.ended), r(m.subscribed), r(m.event), strings.Join(e, " | "))
}

// movedAfter reports how the subscriber, which was on connection conn at
// t0, moved; false until an event arrived on a later connection.
func (s *subscriber) movedAfter(conn int, t0 time.Time) (move, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := move{t0: t0}
	i := slices.IndexFunc(s.events, func(ev received) bool { return ev.conn > conn })
	if i < 0 {
		return m, false
	}
	m.event = s.events[i].at.Sub(t0)
	m.subscribed = s.subscribedAt[conn].Sub(t0) // connection conn+1's
	for _, e := range s.endings {
		if !e.at.Before(t0) {
			m.endings = append(m.endings, e)
		}
	}
	if len(m.endings) > 0 {
		m.ended = m.endings[0].at.Sub(t0)
	}
	return m, true
}

// The WebSocket subprotocol of JSON frames (docs/gateway.md).
const wsJSON = "herald.v1.json"

// wsSession opens GET /v1/ws through nginx, subscribes with the cursor and
// reads until the connection ends.
func wsSession(ctx context.Context, s *subscriber) error {
	u := strings.Replace(s.base, "http://", "ws://", 1) + "/v1/ws"
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: s.hc, Host: publicHost, Subprotocols: []string{wsJSON}})
	cancel()
	if err != nil {
		return err
	}
	defer c.CloseNow()
	if c.Subprotocol() != wsJSON {
		s.failed(fmt.Errorf("WebSocket subprotocol %q through nginx, want %q", c.Subprotocol(), wsJSON))
		return errors.New("wrong subprotocol")
	}
	cursor := s.position()
	frame, err := services.MarshalJSON(&heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: s.channels, Cursor: &cursor},
	}})
	if err != nil {
		return err
	}
	if err := c.Write(ctx, websocket.MessageText, frame); err != nil {
		return err
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return err
		}
		var m heraldv1.ConnectResponse
		if err := wire.UnmarshalJSON(data, &m, false); err != nil {
			s.failed(fmt.Errorf("WebSocket frame %q: %v", data, err))
			return err
		}
		switch {
		case m.GetSubscribed() != nil:
			s.subscribed(m.GetSubscribed().Cursor)
		case m.GetEvent() != nil:
			s.event(m.GetEvent())
		case m.GetError() != nil:
			s.ended(m.GetError())
			if m.GetError().End.GetReason() != heraldv1.StreamEndReason_STREAM_END_REASON_SHUTDOWN {
				return fmt.Errorf("subscription ended: %s", m.GetError().Code)
			}
			// Shutdown: the server closes the connection (1012) next.
		default:
			s.failed(fmt.Errorf("unexpected WebSocket frame %s", data))
		}
	}
}

// sseSession opens GET /v1/sse through nginx, resuming with Last-Event-ID
// as EventSource does, and reads until the stream ends.
func sseSession(ctx context.Context, s *subscriber) error {
	q := url.Values{"channel": {strings.Join(s.channels, ",")}, "last_event_id": {"0"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v1/sse?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Host = publicHost
	req.Header.Set("Accept", "text/event-stream")
	if s.connections() > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(s.position(), 10))
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("status %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		s.failed(fmt.Errorf("SSE Content-Type %q through nginx", ct))
		return errors.New("not an event stream")
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		id, name, data, err := nextSSE(r)
		if err != nil {
			return err
		}
		switch {
		case name == "@subscribed":
			var sub heraldv1.Subscribed
			if err := wire.UnmarshalJSON([]byte(data), &sub, false); err != nil {
				s.failed(fmt.Errorf("@subscribed %q: %v", data, err))
				return err
			}
			if id != strconv.FormatInt(sub.Cursor, 10) {
				s.failed(fmt.Errorf("@subscribed id %q, cursor %d", id, sub.Cursor))
			}
			s.subscribed(sub.Cursor)
		case name == "@end":
			var e heraldv1.Error
			if err := wire.UnmarshalJSON([]byte(data), &e, false); err != nil {
				s.failed(fmt.Errorf("@end %q: %v", data, err))
				return err
			}
			s.ended(&e)
		case strings.HasPrefix(name, "@"):
			s.failed(fmt.Errorf("unexpected SSE event %s: %s", name, data))
		default:
			var ev heraldv1.Event
			if err := wire.UnmarshalJSON([]byte(data), &ev, false); err != nil {
				s.failed(fmt.Errorf("SSE event %q: %v", data, err))
				return err
			}
			if id != strconv.FormatInt(ev.Position, 10) {
				s.failed(fmt.Errorf("SSE id %q for position %d", id, ev.Position))
			}
			s.event(&ev)
		}
	}
}

// nextSSE reads one event. As the SSE specification says, an event counts
// only once its blank line arrived: a stream cut mid-event (an instance
// killed while writing) loses that partial event, which the client then
// gets again by resuming.
func nextSSE(r *bufio.Reader) (id, name, data string, err error) {
	seen := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", "", "", err // io.EOF: the response ended; io.ErrUnexpectedEOF: it was cut
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if seen {
				return id, name, data, nil
			}
			continue
		}
		if strings.HasPrefix(line, ":") || strings.HasPrefix(line, "retry:") {
			continue // keep-alive comments, the reconnect delay
		}
		seen = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			name = value
		case "data":
			if data != "" {
				data += "\n"
			}
			data += value
		}
	}
}

// ack is a publish the server acknowledged: it is committed at pos.
type ack struct {
	pub, n    int
	pos       int64
	duplicate bool // a retry found the first attempt committed
}

// publisher publishes events one after another with REST through nginx,
// each with its own idempotency key, and retries a failed publish with
// the same key until it is acknowledged.
type publisher struct {
	id       int
	channels []string
	base     string
	hc       *http.Client

	mu       sync.Mutex
	acks     []ack
	failures map[string]int // failed attempts by what went wrong
	errs     []error
}

func pubKey(pub, n int) string { return fmt.Sprintf("p%d-%d", pub, n) }

// run publishes every interval until stop is closed; the publish under
// way is retried until acknowledged first.
func (p *publisher) run(ctx context.Context, stop <-chan struct{}, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		key, ch := pubKey(p.id, n), p.channels[(p.id+n)%len(p.channels)]
		backoff := 5 * time.Millisecond
		for {
			a, retry, err := p.publish(ctx, ch, key)
			if err == nil {
				a.pub, a.n = p.id, n
				p.mu.Lock()
				p.acks = append(p.acks, a)
				p.mu.Unlock()
				break
			}
			p.mu.Lock()
			if !retry {
				p.errs = append(p.errs, fmt.Errorf("publish %s: %v", key, err))
			}
			p.failures[err.Error()]++
			p.mu.Unlock()
			if ctx.Err() != nil || !retry {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 200*time.Millisecond)
		}
	}
}

// publish makes one attempt. retry says whether the error is one a client
// retries (the connection failed, 5xx, 429); the error text is a short
// category, for counting.
func (p *publisher) publish(ctx context.Context, channel, key string) (a ack, retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	u := p.base + "/v1/channels/" + url.PathEscape(channel) + "/events"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(key))
	if err != nil {
		return a, false, err
	}
	req.Host = publicHost
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Idempotency-Key", key)
	resp, err := p.hc.Do(req)
	if err != nil {
		return a, true, errors.New("request failed")
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return a, true, errors.New("response cut")
	}
	switch {
	case resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return a, true, fmt.Errorf("status %d", resp.StatusCode)
	default:
		return a, false, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var pr heraldv1.PublishResponse
	if err := wire.UnmarshalJSON(body, &pr, false); err != nil {
		return a, false, fmt.Errorf("publish answer %q: %v", body, err)
	}
	if ev := pr.GetEvent(); ev.GetIdempotencyKey() != key || ev.GetChannel() != channel || ev.GetPosition() <= 0 {
		return a, false, fmt.Errorf("publish answer %s for key %s on %s", body, key, channel)
	}
	if pr.Duplicate != (resp.StatusCode == http.StatusOK) {
		return a, false, fmt.Errorf("status %d with duplicate=%v", resp.StatusCode, pr.Duplicate)
	}
	return ack{pos: pr.Event.Position, duplicate: pr.Duplicate}, false, nil
}

func (p *publisher) acked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acks)
}

// readLog reads every event of channels through nginx with the long-poll
// endpoint (GET /v1/events, no wait), in position order.
func readLog(ctx context.Context, hc *http.Client, base string, channels []string) ([]*heraldv1.Event, error) {
	var out []*heraldv1.Event
	cursor := int64(0)
	for {
		q := url.Values{"channel": channels, "cursor": {strconv.FormatInt(cursor, 10)}, "limit": {"1000"}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		req.Host = publicHost
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET /v1/events: %s: %s", resp.Status, body)
		}
		var page heraldv1.PollResponse
		if err := wire.UnmarshalJSON(body, &page, false); err != nil {
			return nil, fmt.Errorf("GET /v1/events: %q: %v", body, err)
		}
		if len(page.Events) == 0 {
			return out, nil
		}
		out = append(out, page.Events...)
		cursor = page.Cursor
	}
}
