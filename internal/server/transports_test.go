package server_test

// The subscribe behaviours of the core, run over every transport a client
// can subscribe with: the three RPC protocols, WebSocket (JSON and
// protobuf frames), Server-Sent Events and long-poll. Each transport is a
// thin adapter over the one subscription core; these tests are what holds
// them to the same contract.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/internal/wire"
	"github.com/heraldrt/herald/services"
)

// item is one thing a subscriber received: a subscribed notice, an event,
// or the end of the stream (end.Code is "" when it ended without a word).
type item struct {
	sub *heraldv1.Subscribed
	ev  *heraldv1.Event
	end *heraldv1.Error
}

// subscriber is one subscription over some transport, read by a goroutine
// into items. With a gate, it reads the subscribed notice and then stops
// until the gate is closed (a client that does not read).
type subscriber struct {
	items  chan item
	cancel context.CancelFunc
}

type opener func(t *testing.T, base string, channels []string, cursor *int64, gate <-chan struct{}) *subscriber

var subscribeTransports = []struct {
	name string
	open opener
}{
	{"connect", rpcOpener(0)},
	{"grpc", rpcOpener(1)},
	{"grpcweb", rpcOpener(2)},
	{"ws", wsOpener(gateway.SubprotocolJSON)},
	{"ws-proto", wsOpener(gateway.SubprotocolProto)},
	{"sse", openSSE},
	{"longpoll", openLongPoll},
}

// gatedClient is the HTTP client (h2c or HTTP/1.1) of a subscriber that
// stops reading (a gate): its socket's receive buffer is small and fixed
// (SO_RCVBUF turns off the kernel's autotuning), so that what the kernel
// holds for it cannot absorb a test's whole backlog and spare the server
// from seeing a slow consumer. In one CI run the grpcweb subscriber of
// TestTransportsSlowConsumer got all 9.6 MB of its backlog without being
// ended; the likely cause is http.DefaultClient handing it a kept-alive
// connection whose buffers an earlier test had grown (not reproduced).
func gatedClient(h2c bool) *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	// Its own connection, never one an earlier test grew the buffers of,
	// and none kept once the test is done with it.
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	return &http.Client{Transport: tr}
}

func newSubscriber(t *testing.T) (*subscriber, context.Context) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscriber{items: make(chan item, 1<<16), cancel: cancel}
	t.Cleanup(cancel)
	return s, ctx
}

func waitGate(ctx context.Context, gate <-chan struct{}) bool {
	if gate == nil {
		return true
	}
	select {
	case <-gate:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *subscriber) next(t *testing.T) item {
	t.Helper()
	select {
	case it := <-s.items:
		return it
	case <-time.After(15 * time.Second):
		t.Fatal("nothing received within 15s")
	}
	return item{}
}

// events reads n events, skipping subscribed notices; an end fails.
func (s *subscriber) events(t *testing.T, n int) []*heraldv1.Event {
	t.Helper()
	var out []*heraldv1.Event
	for len(out) < n {
		it := s.next(t)
		if it.end != nil {
			t.Fatalf("stream ended after %d of %d events: %v", len(out), n, it.end)
		}
		if it.ev != nil {
			out = append(out, it.ev)
		}
	}
	return out
}

// upTo reads events until it has n or the stream ends (end is then set).
func (s *subscriber) upTo(t *testing.T, n int) (out []*heraldv1.Event, end *heraldv1.Error) {
	t.Helper()
	for len(out) < n {
		var it item
		select {
		case it = <-s.items:
		case <-time.After(15 * time.Second):
			t.Fatalf("%d of %d events within 15s, and no end", len(out), n)
		}
		if it.end != nil {
			return out, it.end
		}
		if it.ev != nil {
			out = append(out, it.ev)
		}
	}
	return out, nil
}

// untilEnd reads events until the stream ends.
func (s *subscriber) untilEnd(t *testing.T) ([]*heraldv1.Event, *heraldv1.Error) {
	t.Helper()
	var out []*heraldv1.Event
	for {
		var it item
		select {
		case it = <-s.items:
		case <-time.After(15 * time.Second):
			t.Fatalf("no end within 15s; %d events received, last %v", len(out), positions(out[max(0, len(out)-1):]))
		}
		if it.end != nil {
			return out, it.end
		}
		if it.ev != nil {
			out = append(out, it.ev)
		}
	}
}

func rpcOpener(protocol int) opener {
	return func(t *testing.T, base string, channels []string, cursor *int64, gate <-chan struct{}) *subscriber {
		t.Helper()
		p := protocols[protocol]
		hc := p.http()
		if gate != nil {
			hc = gatedClient(protocol == 1)
		}
		c := newClients(base, hc, p.opts...)
		s, ctx := newSubscriber(t)
		st, err := c.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: channels, Cursor: cursor}))
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		go func() {
			defer st.Close()
			for n := 0; st.Receive(); n++ {
				switch m := st.Msg().Message.(type) {
				case *heraldv1.SubscribeResponse_Subscribed:
					s.items <- item{sub: m.Subscribed}
				case *heraldv1.SubscribeResponse_Event:
					s.items <- item{ev: m.Event}
				}
				if n == 0 && !waitGate(ctx, gate) {
					return
				}
			}
			s.items <- item{end: errorOf(st.Err())}
		}()
		return s
	}
}

// errorOf turns an RPC error into the Error message streams end with.
func errorOf(err error) *heraldv1.Error {
	if err == nil {
		return &heraldv1.Error{}
	}
	e := &heraldv1.Error{Code: connect.CodeOf(err).String(), Message: err.Error()}
	var ce *connect.Error
	if errors.As(err, &ce) {
		e.Message = ce.Message()
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if se, ok := v.(*heraldv1.StreamEnd); ok {
					e.End = se
				}
			}
		}
	}
	return e
}

func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + "/v1/ws" }

// dialWS opens a WebSocket with the given subprotocol.
func dialWS(t *testing.T, ctx context.Context, base, subprotocol string) *websocket.Conn {
	t.Helper()
	return dialWSWith(t, ctx, base, subprotocol, nil)
}

// dialWSWith is dialWS with an HTTP client (nil: the default).
func dialWSWith(t *testing.T, ctx context.Context, base, subprotocol string, hc *http.Client) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{Subprotocols: []string{subprotocol}, HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial websocket: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != subprotocol {
		t.Fatalf("handshake: status %d, subprotocol %q", resp.StatusCode, c.Subprotocol())
	}
	c.SetReadLimit(64 << 20)
	return c
}

func wsWrite(ctx context.Context, c *websocket.Conn, subprotocol string, req *heraldv1.ConnectRequest) error {
	if subprotocol == gateway.SubprotocolProto {
		b, err := proto.Marshal(req)
		if err != nil {
			return err
		}
		return c.Write(ctx, websocket.MessageBinary, b)
	}
	b, err := services.MarshalJSON(req) // Herald's JSON mapping, as a browser writes it
	if err != nil {
		return err
	}
	return c.Write(ctx, websocket.MessageText, b)
}

// wsRead reads and decodes one message. coder/websocket returns a message
// cut short, without an error, when the connection ends exactly where one
// of its reads begins (a server that drops a slow consumer mid-frame): a
// message that does not decode is an error only if the connection goes
// on; if it ends, wsRead returns the error that ended it.
func wsRead(ctx context.Context, c *websocket.Conn) (*heraldv1.ConnectResponse, error) {
	typ, b, err := c.Read(ctx)
	if err != nil {
		return nil, err
	}
	m := &heraldv1.ConnectResponse{}
	if typ == websocket.MessageBinary {
		err = proto.Unmarshal(b, m)
	} else {
		err = wire.UnmarshalJSON(b, m, false)
	}
	if err != nil {
		if _, _, rerr := c.Read(ctx); rerr != nil && websocket.CloseStatus(rerr) == -1 {
			return nil, fmt.Errorf("message cut short by the connection's end (%w)", rerr)
		}
		return nil, fmt.Errorf("%d-byte message: %w", len(b), err)
	}
	return m, nil
}

// closeError describes a WebSocket closed by the server as the Error a
// stream would end with.
func closeError(err error) *heraldv1.Error {
	switch websocket.CloseStatus(err) {
	case gateway.StatusSlowConsumer:
		return &heraldv1.Error{Code: "resource_exhausted", Message: err.Error()}
	case gateway.StatusRestart, gateway.StatusTryAgainLater:
		return &heraldv1.Error{Code: "unavailable", Message: err.Error()}
	}
	return &heraldv1.Error{Message: err.Error()}
}

func wsOpener(subprotocol string) opener {
	return func(t *testing.T, base string, channels []string, cursor *int64, gate <-chan struct{}) *subscriber {
		t.Helper()
		s, ctx := newSubscriber(t)
		var c *websocket.Conn
		if gate != nil {
			c = dialWSWith(t, ctx, base, subprotocol, gatedClient(false))
		} else {
			c = dialWS(t, ctx, base, subprotocol)
		}
		if err := wsWrite(ctx, c, subprotocol, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
			Subscribe: &heraldv1.SubscribeRequest{Channels: channels, Cursor: cursor},
		}}); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer c.CloseNow()
			for n := 0; ; n++ {
				if n == 1 && !waitGate(ctx, gate) {
					return
				}
				m, err := wsRead(ctx, c)
				if err != nil {
					s.items <- item{end: closeError(err)}
					return
				}
				switch v := m.Message.(type) {
				case *heraldv1.ConnectResponse_Subscribed:
					s.items <- item{sub: v.Subscribed}
				case *heraldv1.ConnectResponse_Event:
					s.items <- item{ev: v.Event}
				case *heraldv1.ConnectResponse_Error:
					s.items <- item{end: v.Error}
					return
				}
			}
		}()
		return s
	}
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	id, event, data string
	hasID           bool
	comments        []string
}

// sseReader parses a text/event-stream.
type sseReader struct{ sc *bufio.Scanner }

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	return &sseReader{sc: sc}
}

// next returns the next event (comments and retry lines collected into
// it), or io.EOF.
func (r *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	seen := false
	for r.sc.Scan() {
		line := r.sc.Text()
		if line == "" {
			if seen {
				return ev, nil
			}
			continue
		}
		seen = true
		if strings.HasPrefix(line, ":") {
			ev.comments = append(ev.comments, strings.TrimSpace(line[1:]))
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			ev.id, ev.hasID = value, true
		case "event":
			ev.event = value
		case "data":
			if ev.data != "" {
				ev.data += "\n"
			}
			ev.data += value
		case "retry":
			ev.comments = append(ev.comments, "retry="+value)
		}
	}
	if err := r.sc.Err(); err != nil {
		return ev, err
	}
	return ev, io.EOF
}

func sseQuery(channels []string, cursor *int64) url.Values {
	q := url.Values{"channel": channels}
	if cursor != nil {
		q.Set("last_event_id", strconv.FormatInt(*cursor, 10))
	}
	return q
}

func openSSE(t *testing.T, base string, channels []string, cursor *int64, gate <-chan struct{}) *subscriber {
	t.Helper()
	s, ctx := newSubscriber(t)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/sse?"+sseQuery(channels, cursor).Encode(), nil)
	hc := http.DefaultClient
	if gate != nil {
		hc = gatedClient(false)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("sse: %s %s", resp.Status, b)
	}
	go func() {
		defer resp.Body.Close()
		r := newSSEReader(resp.Body)
		for n := 0; ; n++ {
			if n == 2 && !waitGate(ctx, gate) { // after retry, then subscribed
				return
			}
			ev, err := r.next()
			if err != nil {
				s.items <- item{end: &heraldv1.Error{Message: err.Error()}}
				return
			}
			switch ev.event {
			case "@subscribed":
				m := &heraldv1.Subscribed{}
				mustUnmarshal(ev.data, m)
				s.items <- item{sub: m}
			case "@end":
				m := &heraldv1.Error{}
				mustUnmarshal(ev.data, m)
				s.items <- item{end: m}
				return
			default:
				if ev.data == "" {
					continue // a keep-alive
				}
				m := &heraldv1.Event{}
				mustUnmarshal(ev.data, m)
				if ev.id != strconv.FormatInt(m.Position, 10) {
					panic(fmt.Sprintf("sse id %q for position %d", ev.id, m.Position))
				}
				s.items <- item{ev: m}
			}
		}
	}()
	return s
}

func mustUnmarshal(data string, m proto.Message) {
	if err := wire.UnmarshalJSON([]byte(data), m, false); err != nil {
		panic(fmt.Sprintf("decode %T from %q: %v", m, data, err))
	}
}

// openLongPoll polls GET /v1/events in a loop, as a client without streams
// would, passing each response's cursor to the next poll.
func openLongPoll(t *testing.T, base string, channels []string, cursor *int64, gate <-chan struct{}) *subscriber {
	t.Helper()
	s, ctx := newSubscriber(t)
	go func() {
		first := true
		var truncSeen int64
		for ctx.Err() == nil {
			q := url.Values{"channel": channels, "wait": {"2s"}}
			if cursor != nil {
				q.Set("cursor", strconv.FormatInt(*cursor, 10))
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events?"+q.Encode(), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					s.items <- item{end: &heraldv1.Error{Message: err.Error()}}
				}
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				e := &heraldv1.Error{}
				_ = json.Unmarshal(body, e)
				if e.Code == "" {
					e.Message = fmt.Sprintf("%s %s %v", resp.Status, body, err)
				}
				s.items <- item{end: e}
				return
			}
			page := &heraldv1.PollResponse{}
			mustUnmarshal(string(body), page)
			if first || page.Subscribed.GetTruncatedThrough() > truncSeen {
				first = false
				truncSeen = page.Subscribed.GetTruncatedThrough()
				s.items <- item{sub: page.Subscribed}
			}
			for _, ev := range page.Events {
				s.items <- item{ev: ev}
			}
			cursor = &page.Cursor
			if !waitGate(ctx, gate) {
				return
			}
		}
	}()
	return s
}

// eachSubscribeTransport runs fn over both backends and every transport.
func eachSubscribeTransport(t *testing.T, cfg server.Config, fn func(t *testing.T, in *instance, open opener)) {
	for _, b := range []string{"memory", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			c := cfg
			if b == "postgres" {
				c.DatabaseURL, c.Postgres.NotifyChannel = database(t)
			}
			in := startInstance(t, c)
			for _, tr := range subscribeTransports {
				t.Run(tr.name, func(t *testing.T) { fn(t, in, tr.open) })
			}
		})
	}
}

func TestTransportsReplayLiveResume(t *testing.T) {
	t.Parallel()
	eachSubscribeTransport(t, server.Config{}, func(t *testing.T, in *instance, open opener) {
		c := grpcClients(in)
		ch := "replay-" + strings.ReplaceAll(t.Name(), "/", "-")
		var want []int64
		for i := range 5 {
			want = append(want, mustPublish(t, c.events, ch, string(rune('a'+i))).Position)
		}
		s := open(t, in.base, []string{ch}, ptr(int64(0)), nil)
		first := s.next(t)
		if first.sub == nil || first.sub.Cursor != 0 || first.sub.HistoryTruncated {
			t.Fatalf("first = %+v, want subscribed at cursor 0", first)
		}
		got := s.events(t, 5)
		equalPositions(t, positions(got), want)
		if string(got[2].Data) != "c" || got[2].Channel != ch || got[2].Kind != heraldv1.EventKind_EVENT_KIND_PUBLISHED {
			t.Fatalf("event 2 = %v", got[2])
		}
		for range 3 {
			want = append(want, mustPublish(t, c.events, ch, "live").Position)
		}
		equalPositions(t, positions(s.events(t, 3)), want[5:])
		s.cancel()

		// Resume from the 4th event: exactly the ones after it.
		r := open(t, in.base, []string{ch}, ptr(want[3]), nil)
		if it := r.next(t); it.sub.GetCursor() != want[3] {
			t.Fatalf("resume: first = %+v, want subscribed at %d", it, want[3])
		}
		equalPositions(t, positions(r.events(t, 4)), want[4:])

		// Live only (no cursor): starts at the head, gets what follows.
		l := open(t, in.base, []string{ch}, nil, nil)
		if it := l.next(t); it.sub == nil || it.sub.Cursor < want[len(want)-1] {
			t.Fatalf("live: first = %+v, want subscribed at the head", it)
		}
		ev := mustPublish(t, c.events, ch, "after")
		equalPositions(t, positions(l.events(t, 1)), []int64{ev.Position})
	})
}

// TestTransportsExactlyOnceInOrder: a subscriber of two channels opened
// while four publishers write to them (and to a third) receives every
// event of its channels once, in log order.
func TestTransportsExactlyOnceInOrder(t *testing.T) {
	t.Parallel()
	eachSubscribeTransport(t, server.Config{}, func(t *testing.T, in *instance, open opener) {
		c := grpcClients(in)
		prefix := strings.ReplaceAll(t.Name(), "/", "-")
		chs := []string{prefix + "-a", prefix + "-b", prefix + "-other"}
		const perPublisher = 150
		var wg sync.WaitGroup
		started := make(chan struct{})
		for p := range 4 {
			wg.Go(func() {
				for i := range perPublisher {
					if i == perPublisher/3 && p == 0 {
						close(started)
					}
					if _, err := c.events.Publish(context.Background(), connect.NewRequest(&heraldv1.PublishRequest{
						Channel: chs[(p+i)%3], Data: []byte(strconv.Itoa(i)),
					})); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		<-started
		s := open(t, in.base, chs[:2], ptr(int64(0)), nil)
		wg.Wait()
		want := allPositions(t, in.srv.Log(), chs[0], chs[1])
		equalPositions(t, positions(s.events(t, len(want))), want)
		// Nothing more (no duplicate) arrives after a marker.
		marker := mustPublish(t, c.events, chs[0], "marker")
		equalPositions(t, positions(s.events(t, 1)), []int64{marker.Position})
	})
}

// TestTransportsTruncatedHistory: a cursor older than what retention kept
// is answered with history_truncated and truncated_through, then the
// retained events.
func TestTransportsTruncatedHistory(t *testing.T) {
	t.Parallel()
	eachSubscribeTransport(t, server.Config{RetentionInterval: 50 * time.Millisecond}, func(t *testing.T, in *instance, open opener) {
		c := grpcClients(in)
		ch := "trunc-" + strings.ReplaceAll(t.Name(), "/", "-")
		if _, err := c.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{
			Name: ch, Settings: &heraldv1.ChannelSettings{MaxEvents: ptr(int64(3))},
		})); err != nil {
			t.Fatal(err)
		}
		var want []int64
		for range 10 {
			want = append(want, mustPublish(t, c.events, ch, "x").Position)
		}
		waitFor(t, func() bool {
			got, err := c.channels.GetChannel(t.Context(), connect.NewRequest(&heraldv1.GetChannelRequest{Name: ch}))
			return err == nil && got.Msg.Channel.TruncatedThrough == want[6]
		})
		s := open(t, in.base, []string{ch}, ptr(want[1]), nil)
		first := s.next(t).sub
		if !first.GetHistoryTruncated() || first.GetTruncatedThrough() != want[6] {
			t.Fatalf("subscribed = %v, want history truncated through %d", first, want[6])
		}
		equalPositions(t, positions(s.events(t, 3)), want[7:])
		ok := open(t, in.base, []string{ch}, ptr(want[7]), nil)
		if sub := ok.next(t).sub; sub == nil || sub.HistoryTruncated {
			t.Fatalf("cursor %d inside retained history: subscribed = %v", want[7], sub)
		}
	})
}

// TestTransportsSlowConsumer: a subscriber that stops reading while a
// large backlog is published is ended with resource_exhausted and the
// position of the last event it got (streams), and resuming from there
// delivers the rest exactly. Long-poll has no slow-consumer end: each poll
// is bounded by its limit, so a lagging poller just pages through the
// backlog; the test checks it gets everything once.
func TestTransportsSlowConsumer(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Hub: fanout.Options{QueueSize: 16}, Gateway: gateway.Config{WSWriteQueue: 16, WriteTimeout: time.Minute, WSPingInterval: time.Hour}})
	c := grpcClients(in)
	// Random data: zeros would compress to nothing and never back up.
	data := make([]byte, 32<<10)
	_, _ = rand.Read(data)
	for _, tr := range subscribeTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			ch := "slow-" + tr.name
			gate := make(chan struct{})
			s := tr.open(t, in.base, []string{ch}, ptr(int64(0)), gate)
			// Subscribed: the subscription is registered; its (empty)
			// replay ends right after, so the backlog arrives live.
			if it := s.next(t); it.sub == nil {
				t.Fatalf("first = %+v, want subscribed", it)
			}
			time.Sleep(100 * time.Millisecond)
			var want []int64
			for range 300 {
				want = append(want, mustPublish(t, c.events, ch, string(data)).Position)
			}
			close(gate)
			if tr.name == "longpoll" {
				equalPositions(t, positions(s.events(t, len(want))), want)
				return
			}
			got, end := s.untilEnd(t)
			if end.Code != "resource_exhausted" {
				t.Fatalf("ended with %v after %d of %d events, want resource_exhausted", end, len(got), len(want))
			}
			last := int64(0)
			if n := len(got); n > 0 {
				last = got[n-1].Position
			}
			if end.End != nil && end.End.LastPosition != last {
				t.Fatalf("end.last_position = %d, but the last event received was %d", end.End.LastPosition, last)
			}
			if end.End == nil && !strings.HasPrefix(tr.name, "ws") {
				t.Fatalf("end without a StreamEnd: %v", end)
			}
			r := tr.open(t, in.base, []string{ch}, ptr(last), nil)
			all := append(positions(got), positions(r.events(t, len(want)-len(got)))...)
			equalPositions(t, all, want)
			t.Logf("%s: ended as slow after %d of %d events; resuming delivered the rest", tr.name, len(got), len(want))
		})
	}
}
