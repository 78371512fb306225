package main

import (
	"bufio"
	"bytes"
	"context"
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
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// Transport names, as printed and as used in -json output.
const (
	transportWS  = "ws"
	transportSSE = "sse"
)

// dialer is shared by every connection the tool opens.
type dialer struct {
	addr        string
	channel     string
	wsCodec     string // "json" or "proto"
	subscribe   bool   // false: WebSocket connects but sends no subscribe (idle mode only)
	timeout     time.Duration
	wsClient    *http.Client
	sseClient   *http.Client
	preallocate int // expected events per subscriber
}

func newDialer(addr, channel, wsCodec string, timeout time.Duration) *dialer {
	nd := &net.Dialer{Timeout: timeout, KeepAlive: -1}
	return &dialer{
		addr:      addr,
		channel:   channel,
		wsCodec:   wsCodec,
		subscribe: true,
		timeout:   timeout,
		// Each WebSocket takes its connection over after the handshake.
		wsClient: &http.Client{Transport: &http.Transport{
			DialContext:        nd.DialContext,
			DisableCompression: true,
			DisableKeepAlives:  true,
		}},
		// Each SSE response holds its connection for the whole run.
		sseClient: &http.Client{Transport: &http.Transport{
			DialContext:           nd.DialContext,
			DisableCompression:    true,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   -1,
		}},
	}
}

// subscriber is one WebSocket or SSE connection subscribed to the channel.
// Its goroutine owns every field but count, which the drain loop reads
// while it runs; the others are read after the goroutine returned.
type subscriber struct {
	transport  string
	count      atomic.Int64 // events received
	subscribed atomic.Bool  // the server confirmed the subscription
	ended      atomic.Bool  // run returned

	positions []int64 // in arrival order
	latency   []int64 // receive time - publish time, ns; only events carrying a stamp
	lastRecv  int64   // unix ns of the last event
	protoErrs int64   // frames the tool could not make sense of
	err       error   // why the connection ended before the tool closed it
}

// run connects, subscribes and reports the outcome to ready (exactly once),
// then reads until ctx ends or the connection fails.
func (s *subscriber) run(ctx context.Context, d *dialer, ready chan<- error) {
	s.positions = make([]int64, 0, d.preallocate)
	s.latency = make([]int64, 0, d.preallocate)
	var err error
	if s.transport == transportWS {
		err = s.runWS(ctx, d, ready)
	} else {
		err = s.runSSE(ctx, d, ready)
	}
	if ctx.Err() == nil {
		s.err = err
	}
	s.ended.Store(true)
}

func (s *subscriber) onEvent(f frame) {
	now := time.Now().UnixNano()
	s.positions = append(s.positions, f.pos)
	if f.sent != 0 {
		s.latency = append(s.latency, now-f.sent)
	}
	s.lastRecv = now
	s.count.Add(1)
}

const subID = "s1"

// runWS returns the error that ended the connection; before the
// subscription is confirmed, it sends that error to ready instead.
func (s *subscriber) runWS(ctx context.Context, d *dialer, ready chan<- error) error {
	var sent atomic.Bool // read by the subscribe timer's goroutine
	signal := func(err error) {
		if !sent.Swap(true) {
			s.subscribed.Store(err == nil)
			ready <- err
		}
	}
	defer signal(errors.New("ended before subscribed"))

	subprotocol := "herald.v1.json"
	if d.wsCodec == "proto" {
		subprotocol = "herald.v1.proto"
	}
	dctx, cancel := context.WithTimeout(ctx, d.timeout)
	conn, _, err := websocket.Dial(dctx, "ws://"+d.addr+"/v1/ws", &websocket.DialOptions{
		HTTPClient:   d.wsClient,
		Subprotocols: []string{subprotocol},
	})
	cancel()
	if err != nil {
		signal(fmt.Errorf("ws dial: %w", err))
		return err
	}
	defer conn.CloseNow()
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
			Subscribe: &heraldv1.SubscribeRequest{Channels: []string{d.channel}},
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
			signal(fmt.Errorf("ws subscribe: %w", err))
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
	)
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
		var f frame
		if d.wsCodec == "proto" {
			pm.Reset()
			if err := proto.Unmarshal(buf.Bytes(), &pm); err != nil {
				s.protoErrs++
				continue
			}
			f = frameOfProto(&pm)
		} else if f, err = parseWSJSON(buf.Bytes()); err != nil {
			s.protoErrs++
			continue
		}
		switch f.kind {
		case frameEvent:
			s.onEvent(f)
		case frameSubscribed:
			signal(nil)
		case frameError:
			err := fmt.Errorf("ws: server error: %s", f.err)
			signal(err)
			return err
		}
	}
}

// runSSE is runWS for /v1/sse.
func (s *subscriber) runSSE(ctx context.Context, d *dialer, ready chan<- error) error {
	var sent atomic.Bool // read by the subscribe timer's goroutine
	signal := func(err error) {
		if !sent.Swap(true) {
			s.subscribed.Store(err == nil)
			ready <- err
		}
	}
	defer signal(errors.New("ended before subscribed"))

	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+d.addr+"/v1/sse?channel="+url.QueryEscape(d.channel), nil)
	if err != nil {
		signal(err)
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := d.sseClient.Do(req)
	if err != nil {
		signal(fmt.Errorf("sse: %w", err))
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("sse: %s: %s", resp.Status, bytes.TrimSpace(body))
		signal(err)
		return err
	}
	timer := time.AfterFunc(d.timeout, func() {
		if !sent.Load() {
			resp.Body.Close()
		}
	})
	defer timer.Stop()

	var ev sseEvent
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				err = errors.New("line longer than 16 KiB")
			}
			err = fmt.Errorf("sse read: %w", err)
			signal(err)
			return err
		}
		if !ev.line(line) {
			continue
		}
		switch {
		case ev.name == "@subscribed":
			signal(nil)
		case ev.name == "@end" || ev.name == "@error":
			err := fmt.Errorf("sse: server sent %s: %s", ev.name, ev.data)
			signal(err)
			return err
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
		ev.reset()
	}
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
