package bench

// Centrifugo as a target: the same scenarios, client and checker against a
// Centrifugo server (protocol v2, JSON), so that the two can be measured
// side by side on one machine. What maps to what:
//
//   - publish: the server API, POST /api/publish with X-API-Key (one HTTP
//     request per event, as Herald's REST publish); the event's position is
//     the publication's offset in the channel's stream.
//   - ws: /connection/websocket, a connect command (with --token, if any)
//     and a subscribe command; a resume subscribes with recover, the last
//     offset received and the stream's epoch.
//   - sse: /connection/uni_sse, the unidirectional transport; the connect
//     request (cf_connect) names the channel in its subs, with
//     recover/offset/epoch for a resume.
//
// The namespace must keep history and allow recovery (force_recovery, or
// history_size and history_ttl with force_positioning); docs/benchmarks.md
// gives the configuration used.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// centrifugoState is shared by a run's publishers and subscribers.
type centrifugoState struct {
	// epoch of the channel's stream, from the first publish or
	// subscription that told it: a resume names it.
	epoch atomic.Pointer[string]
}

func (c *centrifugoState) setEpoch(e string) {
	if e != "" && c.epoch.Load() == nil {
		c.epoch.CompareAndSwap(nil, &e)
	}
}

func (c *centrifugoState) getEpoch() string {
	if p := c.epoch.Load(); p != nil {
		return *p
	}
	return ""
}

// centrifugoPublisher publishes over Centrifugo's server HTTP API.
type centrifugoPublisher struct {
	url    string
	apiKey string
	hc     *http.Client
	cf     *centrifugoState
}

// newCentrifugoPublisher keeps up to conns connections to addr (one
// request in flight on each).
func newCentrifugoPublisher(e *env, addr string, conns int) *centrifugoPublisher {
	return &centrifugoPublisher{
		url:    "http://" + addr + "/api/publish",
		apiKey: e.cfg.APIKey,
		hc: &http.Client{Transport: &http.Transport{
			DisableCompression:  true,
			MaxIdleConnsPerHost: conns,
		}},
		cf: &e.cf,
	}
}

// centrifugoData is the publication's data: JSON, since the JSON protocol
// carries it as is; the publish time first, padded to about size bytes.
func centrifugoData(t time.Time, size int) []byte {
	b := make([]byte, 0, size+32)
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	b = append(b, `,"p":"`...)
	for i := 0; len(b) < size-2; i++ {
		b = append(b, 'a'+byte(i%26))
	}
	return append(b, `"}`...)
}

func (p *centrifugoPublisher) publish(ctx context.Context, channel string, size int) (int64, error) {
	body := make([]byte, 0, size+64)
	body = append(body, `{"channel":`...)
	body = strconv.AppendQuote(body, channel)
	body = append(body, `,"data":`...)
	body = append(body, centrifugoData(time.Now(), size)...)
	body = append(body, '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.apiKey != "" {
		req.Header.Set("X-API-Key", p.apiKey)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("centrifugo publish: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var r struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Result struct {
			Offset int64  `json:"offset"`
			Epoch  string `json:"epoch"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("centrifugo publish: %w: %s", err, b)
	}
	if r.Error != nil {
		return 0, fmt.Errorf("centrifugo publish: error %d: %s", r.Error.Code, r.Error.Message)
	}
	if r.Result.Offset == 0 {
		return 0, fmt.Errorf("centrifugo publish: no offset in %s (the channel's namespace needs history)", b)
	}
	p.cf.setEpoch(r.Result.Epoch)
	return r.Result.Offset, nil
}

// numberField returns the integer after the first occurrence of key (a
// quoted name with its colon) in b.
func numberField(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = bytes.TrimLeft(b[i+len(key):], " ")
	j := 0
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || j == 0 && b[j] == '-') {
		j++
	}
	n, err := strconv.ParseInt(string(b[:j]), 10, 64)
	return n, err == nil
}

// centrifugoPub reads a publication object ({"data":{"t":…},"offset":N}):
// offset and publish time, without decoding the rest (see parseEventJSON).
func centrifugoPub(b []byte) (frame, bool) {
	off, ok := numberField(b, `"offset":`)
	if !ok {
		return frame{}, false
	}
	t, _ := numberField(b, `"t":`)
	return frame{kind: frameEvent, pos: off, sent: t}, true
}

// centrifugoReply is the slow-path shape of a reply or push that is not a
// publication.
type centrifugoReply struct {
	ID    int `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Connect   *centrifugoSubResult `json:"connect"`
	Subscribe *centrifugoSubResult `json:"subscribe"`
	Push      *struct {
		Channel     string          `json:"channel"`
		Unsubscribe json.RawMessage `json:"unsubscribe"`
		Disconnect  json.RawMessage `json:"disconnect"`
	} `json:"push"`
	// Unidirectional pushes come without the push wrapper.
	Unsubscribe json.RawMessage `json:"unsubscribe"`
	Disconnect  json.RawMessage `json:"disconnect"`
}

type centrifugoSubResult struct {
	Epoch        string            `json:"epoch"`
	Offset       int64             `json:"offset"`
	Recoverable  bool              `json:"recoverable"`
	Recovered    bool              `json:"recovered"`
	Publications []json.RawMessage `json:"publications"`
	// connect (unidirectional): the server-side subscriptions.
	Subs map[string]*centrifugoSubResult `json:"subs"`
}

// centrifugoSubscribed handles a subscription's result: the publications
// it recovered, in order, then the subscription is confirmed. cursor is
// what the subscription asked to resume after (nil: live).
func (s *subscriber) centrifugoSubscribed(d *dialer, r *centrifugoSubResult, cursor *int64, signal func(error)) error {
	if cursor != nil && !r.Recovered {
		return fmt.Errorf("centrifugo: subscription not recovered from offset %d (epoch %q)", *cursor, d.cf.getEpoch())
	}
	d.cf.setEpoch(r.Epoch)
	if !s.subscribed.Load() { // the first subscription only: drain reads it
		s.startCursor = r.Offset
		if cursor != nil {
			s.startCursor = *cursor
		}
	}
	signal(nil)
	for _, p := range r.Publications {
		if f, ok := centrifugoPub(p); ok {
			s.onEvent(f)
		} else {
			s.protoErrs++
		}
	}
	return nil
}

// centrifugoSubscribe is the subscribe command's body (without braces'
// owner): the channel, and recovery after cursor.
func centrifugoSubscribe(d *dialer, cursor *int64) map[string]any {
	m := map[string]any{}
	if cursor != nil {
		m["recover"] = true
		m["offset"] = *cursor
		m["epoch"] = d.cf.getEpoch()
	}
	return m
}

// runCentrifugoWS is runWS for Centrifugo's bidirectional WebSocket.
func (s *subscriber) runCentrifugoWS(ctx context.Context, d *dialer, addr string, cursor *int64, onSub func(error)) error {
	signal, sent := signalOnce(onSub)
	defer signal(errors.New("ended before subscribed"))

	var tcp net.Conn // set by the dial, before Dial returns
	dctx, cancel := context.WithTimeout(context.WithValue(ctx, connSlot{}, &tcp), d.timeout)
	conn, _, err := websocket.Dial(dctx, "ws://"+addr+"/connection/websocket", &websocket.DialOptions{
		HTTPClient: d.wsClient,
	})
	cancel()
	if err != nil {
		err = fmt.Errorf("ws dial: %w", err)
		signal(err)
		return err
	}
	defer conn.CloseNow()
	closeFn := func() {
		if tcp != nil {
			_ = tcp.Close()
			return
		}
		conn.CloseNow()
	}
	s.closeConn.Store(&closeFn)
	conn.SetReadLimit(8 << 20)

	connect := map[string]any{"name": "herald-bench"}
	if d.token != "" {
		connect["token"] = d.token
	}
	cmds, _ := json.Marshal(map[string]any{"id": 1, "connect": connect})
	if d.subscribe {
		sub := centrifugoSubscribe(d, cursor)
		sub["channel"] = d.channel
		b, _ := json.Marshal(map[string]any{"id": 2, "subscribe": sub})
		cmds = append(append(cmds, '\n'), b...)
	}
	wctx, cancel := context.WithTimeout(ctx, d.timeout)
	err = conn.Write(wctx, websocket.MessageText, cmds)
	cancel()
	if err != nil {
		err = fmt.Errorf("ws connect: %w", err)
		signal(err)
		return err
	}
	timer := time.AfterFunc(d.timeout, func() {
		if !sent.Load() {
			conn.CloseNow()
		}
	})
	defer timer.Stop()

	var buf bytes.Buffer
	for {
		_, r, err := conn.Reader(ctx)
		if err != nil {
			err = fmt.Errorf("ws read: %w", err)
			signal(err)
			return err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			err = fmt.Errorf("ws read: %w", err)
			signal(err)
			return err
		}
		// One frame holds one or more replies, a newline after each.
		for msg := range bytes.SplitSeq(buf.Bytes(), []byte("\n")) {
			msg = bytes.TrimSpace(msg)
			switch {
			case len(msg) == 0:
			case string(msg) == "{}":
				// A ping: the server disconnects a client that does not
				// answer it.
				wctx, cancel := context.WithTimeout(ctx, d.timeout)
				err := conn.Write(wctx, websocket.MessageText, []byte("{}"))
				cancel()
				if err != nil {
					return fmt.Errorf("ws pong: %w", err)
				}
			case bytes.HasPrefix(msg, []byte(`{"push":{"channel":`)) && bytes.Contains(msg, []byte(`"pub":`)):
				s.centrifugoPublication(msg)
			default:
				if err := s.centrifugoMessage(d, msg, cursor, false, signal); err != nil {
					signal(err)
					return err
				}
			}
		}
	}
}

// runCentrifugoSSE is runSSE for Centrifugo's unidirectional SSE: the
// connect request asks for the channel as a server-side subscription (subs),
// which the server must allow (anonymous subscribe, or the token's channels
// claim).
func (s *subscriber) runCentrifugoSSE(ctx context.Context, d *dialer, addr string, cursor *int64, onSub func(error)) error {
	connect := map[string]any{"name": "herald-bench"}
	if d.token != "" {
		connect["token"] = d.token
	}
	connect["subs"] = map[string]any{d.channel: centrifugoSubscribe(d, cursor)}
	cj, _ := json.Marshal(connect)
	u := "http://" + addr + "/connection/uni_sse?cf_connect=" + url.QueryEscape(string(cj))
	// The connect event of a resume carries every recovered publication
	// on one line.
	return s.streamSSE(ctx, d, u, http.Header{}, 4<<20, onSub, func(ev *sseEvent, signal func(error)) error {
		msg := ev.data
		switch {
		case len(msg) == 0 || string(msg) == "{}": // a ping
		case bytes.HasPrefix(msg, []byte(`{"channel":`)) && bytes.Contains(msg, []byte(`"pub":`)):
			s.centrifugoPublication(msg)
		default:
			return s.centrifugoMessage(d, msg, cursor, true, signal)
		}
		return nil
	})
}

// centrifugoPublication records a publication push.
func (s *subscriber) centrifugoPublication(msg []byte) {
	if f, ok := centrifugoPub(msg); ok {
		s.onEvent(f)
	} else {
		s.protoErrs++
	}
}

// centrifugoMessage handles a reply or push that is not a publication, on
// either transport (uni: uni_sse): an error or the end of the subscription
// ends the connection; a subscribe reply, or the connect reply's
// server-side subscription to the channel, confirms it.
func (s *subscriber) centrifugoMessage(d *dialer, msg []byte, cursor *int64, uni bool, signal func(error)) error {
	var m centrifugoReply
	if err := json.Unmarshal(msg, &m); err != nil {
		s.protoErrs++
		return nil
	}
	switch {
	case m.Error != nil:
		return fmt.Errorf("centrifugo: reply %d: error %d: %s", m.ID, m.Error.Code, m.Error.Message)
	case m.Subscribe != nil:
		return s.centrifugoSubscribed(d, m.Subscribe, cursor, signal)
	case m.Connect != nil:
		switch sub := m.Connect.Subs[d.channel]; {
		case sub != nil:
			return s.centrifugoSubscribed(d, sub, cursor, signal)
		case uni:
			return fmt.Errorf("centrifugo: uni_sse connection not subscribed to %q", d.channel)
		case !d.subscribe:
			signal(nil)
		}
	case m.Push != nil && (m.Push.Unsubscribe != nil || m.Push.Disconnect != nil),
		m.Unsubscribe != nil || m.Disconnect != nil:
		return fmt.Errorf("centrifugo: server ended the subscription: %s", msg)
	}
	return nil
}
