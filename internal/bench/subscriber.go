package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
)

// dialer is shared by every subscriber of a run.
type dialer struct {
	addrs       []string
	token       string
	channel     string
	wsCodec     string // "json" or "proto"
	subscribe   bool   // false: WebSocket connects but sends no subscribe (idle only)
	timeout     time.Duration
	wsClient    *http.Client
	sseClient   *http.Client
	grpcClient  *http.Client
	preallocate int // expected events per subscriber
	// reconnect: when a connection ends, resume after the last position
	// received (storm: on the same server; after a failure: on the next
	// address).
	reconnect bool
	// dropAt is the unix ns of the drop or kill (storm, failover): events
	// on connections opened after it are timed from it.
	dropAt atomic.Int64
	// centrifugo: the run targets Centrifugo; cf is the run's shared
	// state (the stream's epoch).
	centrifugo bool
	cf         *centrifugoState
}

func newDialer(e *env) *dialer {
	cfg := e.cfg
	nd := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: -1}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // gRPC over h2c
	return &dialer{
		addrs:      cfg.Addrs,
		token:      cfg.Token,
		channel:    cfg.Channel,
		wsCodec:    cfg.WSCodec,
		subscribe:  true,
		timeout:    cfg.ConnectTimeout,
		centrifugo: cfg.Target == TargetCentrifugo,
		cf:         &e.cf,
		// Each WebSocket takes its connection over after the handshake.
		wsClient: &http.Client{Transport: &http.Transport{
			DialContext:        dialKeeping(nd),
			DisableCompression: true,
			DisableKeepAlives:  true,
		}},
		// Each SSE response holds its connection for the whole run.
		sseClient: &http.Client{Transport: &http.Transport{
			DialContext:           nd.DialContext,
			DisableCompression:    true,
			ResponseHeaderTimeout: cfg.ConnectTimeout,
			MaxIdleConnsPerHost:   -1,
		}},
		// gRPC streams share HTTP/2 connections (a new one when a
		// connection's stream limit is reached).
		grpcClient: &http.Client{Transport: &http.Transport{
			DialContext:     nd.DialContext,
			Protocols:       &p,
			TLSClientConfig: &tls.Config{},
		}},
	}
}

func (d *dialer) header() http.Header {
	h := http.Header{}
	if d.token != "" {
		h.Set("Authorization", "Bearer "+d.token)
	}
	return h
}

// subscriber is one WebSocket, SSE or gRPC subscription to the channel,
// over one connection at a time. Its goroutine owns every field but the
// atomics; the scenario reads the others after the goroutine returned.
type subscriber struct {
	transport  string
	count      atomic.Int64 // events received (all connections)
	subscribed atomic.Bool  // the server confirmed the first subscription
	ended      atomic.Bool  // run returned
	dropped    atomic.Bool  // the scenario dropped the connection on purpose
	closeConn  atomic.Pointer[func()]
	dropAt     *atomic.Int64 // the dialer's
	inject     Injection
	cursor     *int64 // the first connection resumes after it (recovery); nil: live

	addr        int     // index in dialer.addrs of the current connection
	positions   []int64 // in arrival order, over every connection
	latency     []int64 // receive time - publish time, ns
	lastRecv    int64   // unix ns of the last event
	startCursor int64   // the first subscription's cursor
	protoErrs   int64   // frames the tool could not make sense of
	err         error   // why the subscriber ended before the tool closed it
	reconnects  int

	// After the drop (dialer.dropAt), on a connection opened after it:
	connStart  int64        // unix ns the current connection was dialled
	resubAt    int64        // unix ns its subscription was confirmed
	firstAfter int64        // receipt of the first event
	liveAfter  atomic.Int64 // receipt of the first event published after resubAt (read while running)
}

// dialKeeping dials as nd does and leaves the connection in the
// *net.Conn the context carries under connSlot{}, if any: a storm drops a
// WebSocket by closing its TCP connection, which takes a system call,
// where closing the WebSocket waits for its goroutines (a loop of 1,000 of
// those took 200–250 ms, so "all dropped at once" was not).
func dialKeeping(nd *net.Dialer) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := nd.DialContext(ctx, network, addr)
		if slot, ok := ctx.Value(connSlot{}).(*net.Conn); ok && err == nil {
			*slot = c
		}
		return c, err
	}
}

type connSlot struct{}

// drop closes the current connection (storm); the subscriber resumes.
func (s *subscriber) drop() {
	s.dropped.Store(true)
	if f := s.closeConn.Load(); f != nil {
		(*f)()
	}
}

// last is the cursor to resume after.
func (s *subscriber) last() int64 {
	if n := len(s.positions); n > 0 {
		return s.positions[n-1]
	}
	return s.startCursor
}

// run connects, subscribes and reports the outcome to ready (exactly once),
// then reads until ctx ends or the connection fails; with d.reconnect it
// resumes on a new connection whenever one ends.
func (s *subscriber) run(ctx context.Context, d *dialer, ready chan<- error) {
	defer s.ended.Store(true)
	s.positions = make([]int64, 0, d.preallocate)
	s.latency = make([]int64, 0, d.preallocate)
	cursor := s.cursor
	first := true
	var failingSince time.Time
	for {
		s.connStart = time.Now().UnixNano()
		onSub := func(err error) {
			if first {
				first = false
				s.subscribed.Store(err == nil)
				ready <- err
				return
			}
			if err == nil {
				s.resubAt = time.Now().UnixNano()
				failingSince = time.Time{}
			}
		}
		var err error
		addr := d.addrs[s.addr]
		switch {
		case d.centrifugo && s.transport == transportWS:
			err = s.runCentrifugoWS(ctx, d, addr, cursor, onSub)
		case d.centrifugo:
			err = s.runCentrifugoSSE(ctx, d, addr, cursor, onSub)
		case s.transport == transportWS:
			err = s.runWS(ctx, d, addr, cursor, onSub)
		case s.transport == transportSSE:
			err = s.runSSE(ctx, d, addr, cursor, onSub)
		default:
			err = s.runGRPC(ctx, d, addr, cursor, onSub)
		}
		if ctx.Err() != nil {
			return
		}
		if !d.reconnect || !s.subscribed.Load() {
			s.err = err
			return
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		} else if time.Since(failingSince) > d.timeout {
			s.err = fmt.Errorf("no server took the subscription back within %s: %w", d.timeout, err)
			return
		}
		if !s.dropped.Swap(false) {
			// The server went away: try the next one, after a moment if
			// that one failed too.
			s.addr = (s.addr + 1) % len(d.addrs)
			if s.resubAt < s.connStart {
				time.Sleep(20 * time.Millisecond)
			}
		}
		c := s.last()
		cursor = &c
		s.reconnects++
	}
}

func (s *subscriber) onEvent(f frame) {
	now := time.Now().UnixNano()
	n := s.count.Add(1)
	if n == s.inject.DropNth {
		return
	}
	s.positions = append(s.positions, f.pos)
	if n == s.inject.DupNth {
		s.positions = append(s.positions, f.pos)
	}
	if f.sent != 0 {
		s.latency = append(s.latency, now-f.sent)
	}
	s.lastRecv = now
	if d := s.dropAt.Load(); d > 0 && s.connStart > d {
		if s.firstAfter == 0 {
			s.firstAfter = now
		}
		if s.liveAfter.Load() == 0 && s.resubAt > 0 && f.sent > s.resubAt {
			s.liveAfter.Store(now)
		}
	}
}

const subID = "s1"

// signalOnce returns a function that passes its first call on to onSub, and
// the flag the subscribe timer reads.
func signalOnce(onSub func(error)) (func(error), *atomic.Bool) {
	var sent atomic.Bool
	return func(err error) {
		if !sent.Swap(true) {
			onSub(err)
		}
	}, &sent
}

// runWS returns the error that ended the connection; before the
// subscription is confirmed, it passes that error to onSub instead.
func (s *subscriber) runWS(ctx context.Context, d *dialer, addr string, cursor *int64, onSub func(error)) error {
	signal, sent := signalOnce(onSub)
	defer signal(errors.New("ended before subscribed"))

	subprotocol := "herald.v1.json"
	if d.wsCodec == "proto" {
		subprotocol = "herald.v1.proto"
	}
	var tcp net.Conn // set by the dial, before Dial returns
	dctx, cancel := context.WithTimeout(context.WithValue(ctx, connSlot{}, &tcp), d.timeout)
	conn, _, err := websocket.Dial(dctx, "ws://"+addr+"/v1/ws", &websocket.DialOptions{
		HTTPClient:   d.wsClient,
		HTTPHeader:   d.header(),
		Subprotocols: []string{subprotocol},
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
			_ = tcp.Close() // the reader sees it and the WebSocket ends
			return
		}
		conn.CloseNow()
	}
	s.closeConn.Store(&closeFn)
	conn.SetReadLimit(8 << 20)
	if conn.Subprotocol() != subprotocol {
		err := fmt.Errorf("ws: server chose subprotocol %q, want %q", conn.Subprotocol(), subprotocol)
		signal(err)
		return err
	}
	if !d.subscribe {
		signal(nil)
	} else {
		req := &heraldv1.ConnectRequest{Id: subID, Command: &heraldv1.ConnectRequest_Subscribe{
			Subscribe: &heraldv1.SubscribeRequest{Channels: []string{d.channel}, Cursor: cursor},
		}}
		var msg []byte
		typ := websocket.MessageText
		if d.wsCodec == "proto" {
			msg, err = proto.Marshal(req)
			typ = websocket.MessageBinary
		} else {
			msg, err = jsonOut.Marshal(req)
		}
		if err != nil {
			signal(err)
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, d.timeout)
		err = conn.Write(wctx, typ, msg)
		cancel()
		if err != nil {
			err = fmt.Errorf("ws subscribe: %w", err)
			signal(err)
			return err
		}
	}

	// The timer bounds the wait for "subscribed"; a read context with a
	// deadline would close the connection whenever it expired.
	timer := time.AfterFunc(d.timeout, func() {
		if !sent.Load() {
			conn.CloseNow()
		}
	})
	defer timer.Stop()

	var (
		buf bytes.Buffer
		pm  heraldv1.ConnectResponse
		// A frame that did not decode, counted once the next one arrives:
		// coder/websocket returns a message cut short without an error
		// when the connection ends exactly where one of its reads begins
		// (a server killed mid-frame), and such a message is no protocol
		// error if the connection's end follows it.
		undecoded bool
	)
	for {
		_, r, err := conn.Reader(ctx)
		if err != nil {
			err = fmt.Errorf("ws read: %w", err)
			signal(err)
			return err
		}
		if undecoded {
			s.protoErrs++
			undecoded = false
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			err = fmt.Errorf("ws read: %w", err)
			signal(err)
			return err
		}
		var f frame
		if d.wsCodec == "proto" {
			pm.Reset()
			if err := proto.Unmarshal(buf.Bytes(), &pm); err != nil {
				undecoded = true
				continue
			}
			f = frameOfProto(&pm)
		} else if f, err = parseWSJSON(buf.Bytes()); err != nil {
			undecoded = true
			continue
		}
		switch f.kind {
		case frameEvent:
			s.onEvent(f)
		case frameSubscribed:
			if !s.subscribed.Load() { // the first subscription only: drain reads it
				s.startCursor = f.cursor
			}
			signal(nil)
		case frameError:
			err := fmt.Errorf("ws: server error: %s", f.err)
			signal(err)
			return err
		}
	}
}

// runSSE is runWS for /v1/sse.
func (s *subscriber) runSSE(ctx context.Context, d *dialer, addr string, cursor *int64, onSub func(error)) error {
	u := "http://" + addr + "/v1/sse?channel=" + url.QueryEscape(d.channel)
	if cursor != nil {
		u += "&last_event_id=" + strconv.FormatInt(*cursor, 10)
	}
	return s.streamSSE(ctx, d, u, d.header(), 16<<10, onSub, func(ev *sseEvent, signal func(error)) error {
		switch {
		case ev.name == "@subscribed":
			if !s.subscribed.Load() { // the first subscription only: drain reads it
				s.startCursor = ev.id
			}
			signal(nil)
		case ev.name == "@end" || ev.name == "@error":
			return fmt.Errorf("sse: server sent %s: %s", ev.name, ev.data)
		case len(ev.name) > 0 && ev.name[0] == '@':
			// a control event the tool does not know: ignore
		default:
			pos, stamp, perr := parseEventJSON(ev.data)
			if perr != nil || (ev.hasID && ev.id != pos) {
				s.protoErrs++
			} else {
				s.onEvent(frame{kind: frameEvent, pos: pos, sent: stamp})
			}
		}
		return nil
	})
}

// streamSSE opens the event stream at u and passes each complete event to
// handle until the stream or ctx ends, or handle returns an error (which
// ends it). handle confirms the subscription with signal(nil); until then
// the connection is bounded by the dialer's timeout. maxLine bounds one
// line. It returns the error that ended the stream; before the
// subscription is confirmed, it passes that error to onSub instead.
func (s *subscriber) streamSSE(ctx context.Context, d *dialer, u string, header http.Header, maxLine int, onSub func(error), handle func(ev *sseEvent, signal func(error)) error) error {
	signal, sent := signalOnce(onSub)
	defer signal(errors.New("ended before subscribed"))
	fail := func(err error) error {
		signal(err)
		return err
	}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	closeFn := func() { cancel() }
	s.closeConn.Store(&closeFn)
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u, nil)
	if err != nil {
		return fail(err)
	}
	req.Header = header
	req.Header.Set("Accept", "text/event-stream")
	resp, err := d.sseClient.Do(req)
	if err != nil {
		return fail(fmt.Errorf("sse: %w", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fail(fmt.Errorf("sse: %s: %s", resp.Status, bytes.TrimSpace(body)))
	}
	timer := time.AfterFunc(d.timeout, func() {
		if !sent.Load() {
			cancel()
		}
	})
	defer timer.Stop()

	var ev sseEvent
	// The buffer starts small and grows up to maxLine only for a long
	// line: an idle stream holds 16 KiB, whatever maxLine is.
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, min(16<<10, maxLine)), maxLine)
	for {
		if !sc.Scan() {
			err := sc.Err()
			switch {
			case errors.Is(err, bufio.ErrTooLong):
				err = fmt.Errorf("line longer than %d KiB", maxLine>>10)
			case err == nil:
				err = io.EOF
			}
			return fail(fmt.Errorf("sse read: %w", err))
		}
		line := sc.Bytes()
		if !ev.line(line) {
			continue
		}
		if err := handle(&ev, signal); err != nil {
			return fail(err)
		}
		ev.reset()
	}
}

// runGRPC is runWS for the EventService.Subscribe stream (gRPC over h2c).
func (s *subscriber) runGRPC(ctx context.Context, d *dialer, addr string, cursor *int64, onSub func(error)) error {
	signal, sent := signalOnce(onSub)
	defer signal(errors.New("ended before subscribed"))

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	closeFn := func() { cancel() }
	s.closeConn.Store(&closeFn)
	client := heraldv1connect.NewEventServiceClient(d.grpcClient, "http://"+addr, connect.WithGRPC())
	req := connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{d.channel}, Cursor: cursor})
	for k, v := range d.header() {
		req.Header()[k] = v
	}
	timer := time.AfterFunc(d.timeout, func() {
		if !sent.Load() {
			cancel()
		}
	})
	defer timer.Stop()
	stream, err := client.Subscribe(cctx, req)
	if err != nil {
		err = fmt.Errorf("grpc subscribe: %w", err)
		signal(err)
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		switch m := stream.Msg().GetMessage().(type) {
		case *heraldv1.SubscribeResponse_Subscribed:
			if !s.subscribed.Load() { // the first subscription only: drain reads it
				s.startCursor = m.Subscribed.GetCursor()
			}
			signal(nil)
		case *heraldv1.SubscribeResponse_Event:
			s.onEvent(frame{kind: frameEvent, pos: m.Event.GetPosition(), sent: stampOf(m.Event.GetData())})
		}
	}
	err = stream.Err()
	if err == nil {
		err = errors.New("stream ended")
	}
	err = fmt.Errorf("grpc: %w", err)
	signal(err)
	return err
}

// sseEvent accumulates the fields of one SSE event, line by line.
type sseEvent struct {
	name  string
	data  []byte
	id    int64
	hasID bool
}

func (e *sseEvent) reset() {
	e.name, e.data, e.hasID = "", e.data[:0], false
}

// line adds one line (with its newline) and reports whether it ended an
// event (an empty line after at least one field).
func (e *sseEvent) line(l []byte) bool {
	l = bytes.TrimRight(l, "\r\n")
	if len(l) == 0 {
		return e.name != "" || len(e.data) > 0 || e.hasID
	}
	if l[0] == ':' { // comment (keep-alive)
		return false
	}
	field, value, _ := bytes.Cut(l, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(field) {
	case "event":
		e.name = string(value)
	case "data":
		if len(e.data) > 0 {
			e.data = append(e.data, '\n')
		}
		e.data = append(e.data, value...)
	case "id":
		if n, err := strconv.ParseInt(string(value), 10, 64); err == nil {
			e.id, e.hasID = n, true
		}
	}
	return false
}
