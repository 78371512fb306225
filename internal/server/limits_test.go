package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// limitToken signs an hour-long token for user sub, who may publish and
// subscribe on lim:>.
func limitToken(t *testing.T, sub string) string {
	return token(t, sub, time.Hour, jwt.MapClaims{"subscribe": []string{"lim:>"}, "publish": []string{"lim:>"}})
}

// refusal is how a transport refused to open a connection.
type refusal struct {
	code       string // the connect code, or the code of the HTTP error body
	status     int    // HTTP status; 0 over gRPC
	retryAfter string
	message    string
}

func (r *refusal) String() string {
	return fmt.Sprintf("%d %s (Retry-After %q): %q", r.status, r.code, r.retryAfter, r.message)
}

// connOpener opens one long-lived connection with credential cred (an API
// key or a token; "" for none) and returns how to close it, or how it was
// refused. Only an admitted connection counts on the server.
type connOpener func(t *testing.T, in *instance, cred string) (close func(), refused *refusal)

// openGRPCAs opens a gRPC Subscribe stream; it counts once the first
// message (subscribed) arrives.
func openGRPCAs(t *testing.T, in *instance, cred string) (func(), *refusal) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(cred))
	st, err := c.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"lim:1"}}))
	if err == nil {
		if st.Receive() && st.Msg().GetSubscribed() != nil {
			return func() { cancel(); st.Close() }, nil
		}
		err = st.Err()
		st.Close()
	}
	cancel()
	if err == nil {
		t.Fatal("gRPC stream ended without a message or an error")
	}
	var ce *connect.Error
	msg := err.Error()
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	return nil, &refusal{code: codeOf(err).String(), message: msg}
}

// openConnectAs opens a Connect RPC stream (over gRPC); it counts once
// it answers a ping.
func openConnectAs(t *testing.T, in *instance, cred string) (func(), *refusal) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(cred))
	st := c.events.Connect(ctx)
	err := st.Send(&heraldv1.ConnectRequest{Id: "ping", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
	if err == nil {
		var m *heraldv1.ConnectResponse
		if m, err = st.Receive(); err == nil {
			if m.GetPong() == nil {
				t.Fatalf("Connect stream answered a ping with %v", m)
			}
			return func() { cancel(); _ = st.CloseRequest(); _ = st.CloseResponse() }, nil
		}
	}
	if errors.Is(err, io.EOF) {
		_, err = st.Receive() // the error is on the receiving side
	}
	cancel()
	var ce *connect.Error
	msg := err.Error()
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	return nil, &refusal{code: codeOf(err).String(), message: msg}
}

// openWSAs opens a WebSocket; it counts once the upgrade succeeded.
func openWSAs(t *testing.T, in *instance, cred string) (func(), *refusal) {
	t.Helper()
	h := http.Header{}
	if cred != "" {
		h.Set("Authorization", "Bearer "+cred)
	}
	c, resp, err := websocket.Dial(t.Context(), wsURL(in.base), &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{gateway.SubprotocolJSON}})
	if err == nil {
		return func() { c.CloseNow() }, nil
	}
	if resp == nil {
		t.Fatalf("websocket dial: %v", err)
	}
	return nil, httpRefusal(t, resp)
}

// openSSEAs opens an SSE stream; it counts once the response is 200.
func openSSEAs(t *testing.T, in *instance, cred string) (func(), *refusal) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.base+"/v1/sse?channel=lim:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("SSE: %v", err)
	}
	if resp.StatusCode == http.StatusOK {
		return func() { cancel(); resp.Body.Close() }, nil
	}
	defer cancel()
	return nil, httpRefusal(t, resp)
}

// httpRefusal reads a refused HTTP response in the one error shape.
func httpRefusal(t *testing.T, resp *http.Response) *refusal {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("refusal %d with body %q: %v", resp.StatusCode, b, err)
	}
	return &refusal{code: e.Code, status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), message: e.Message}
}

// tryOpen opens a connection that may be refused; one admitted is closed
// when the test ends.
func tryOpen(t *testing.T, open connOpener, in *instance, cred string) *refusal {
	t.Helper()
	closeFn, r := open(t, in, cred)
	if r == nil {
		t.Cleanup(closeFn)
	}
	return r
}

// mustOpen opens a connection that the limits must admit.
func mustOpen(t *testing.T, open connOpener, in *instance, cred, what string) func() {
	t.Helper()
	closeFn, r := open(t, in, cred)
	if r != nil {
		t.Fatalf("%s refused: %v", what, r)
	}
	t.Cleanup(closeFn)
	return closeFn
}

// TestLimitConnectionsPerUser: an end user holds at most
// MaxConnectionsPerUser long-lived connections, counted over every
// transport; the next one is refused with resource_exhausted (429 with
// Retry-After over HTTP, before the WebSocket upgrade) and a message that
// says to close some; another user is admitted; closing one admits again.
// API keys and anonymous callers are not counted per user.
func TestLimitConnectionsPerUser(t *testing.T) {
	t.Parallel()
	const perUser = 2
	in, key := authInstance(t, func(c *server.Config) { c.Services.MaxConnectionsPerUser = perUser })
	transports := []struct {
		name string
		open connOpener
	}{
		{"grpc", openGRPCAs},
		{"connect", openConnectAs},
		{"ws", openWSAs},
		{"sse", openSSEAs},
	}
	checkRefusal := func(t *testing.T, transport string, r *refusal) {
		t.Helper()
		switch {
		case r == nil:
			t.Fatalf("%s: connection over the per-user limit admitted", transport)
		case r.code != "resource_exhausted",
			!strings.Contains(r.message, "too many connections for this user"),
			!strings.Contains(r.message, fmt.Sprint("limit ", perUser)),
			!strings.Contains(r.message, "close some"),
			!strings.Contains(r.message, "every tab"):
			t.Fatalf("%s: refused with %v; want resource_exhausted naming the per-user limit and saying to close connections", transport, r)
		case (transport == "ws" || transport == "sse") && (r.status != http.StatusTooManyRequests || r.retryAfter == ""):
			t.Fatalf("%s: refused with %v; want 429 with Retry-After", transport, r)
		}
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			ann, bob := limitToken(t, "ann-"+tr.name), limitToken(t, "bob-"+tr.name)
			first := mustOpen(t, tr.open, in, ann, "ann's first")
			mustOpen(t, tr.open, in, ann, "ann's second")
			checkRefusal(t, tr.name, tryOpen(t, tr.open, in, ann))
			mustOpen(t, tr.open, in, bob, "another user")
			// Closing one frees a slot (the server notices a moment later).
			first()
			waitFor(t, func() bool {
				r := tryOpen(t, tr.open, in, ann)
				if r != nil {
					checkRefusal(t, tr.name, r)
				}
				return r == nil
			})
			checkRefusal(t, tr.name, tryOpen(t, tr.open, in, ann))
		})
	}
	// One count over every transport.
	t.Run("mixed", func(t *testing.T) {
		t.Parallel()
		cy := limitToken(t, "cy")
		mustOpen(t, openGRPCAs, in, cy, "gRPC")
		mustOpen(t, openSSEAs, in, cy, "SSE")
		checkRefusal(t, "ws", tryOpen(t, openWSAs, in, cy))
		checkRefusal(t, "grpc", tryOpen(t, openGRPCAs, in, cy))
		checkRefusal(t, "connect", tryOpen(t, openConnectAs, in, cy))
	})
	// A service's key is one identity for many connections: not keyed.
	t.Run("api-key", func(t *testing.T) {
		t.Parallel()
		for i := range perUser + 2 {
			mustOpen(t, openGRPCAs, in, key, fmt.Sprint("API key connection ", i+1))
		}
		mustOpen(t, openWSAs, in, key, "API key WebSocket")
	})
	// Without authentication every caller is anonymous: not keyed either.
	t.Run("anonymous", func(t *testing.T) {
		t.Parallel()
		anon := startInstance(t, server.Config{Services: services.Config{MaxConnectionsPerUser: 1}})
		for i := range 3 {
			mustOpen(t, openSSEAs, anon, "", fmt.Sprint("anonymous connection ", i+1))
		}
	})
}

// cmdConn is a bidirectional connection: a Connect stream or a WebSocket.
type cmdConn interface {
	send(t *testing.T, req *heraldv1.ConnectRequest)
	next(t *testing.T) *heraldv1.ConnectResponse
	// end waits for the connection to end and says how: the RPC code,
	// or "close <status>" for a WebSocket.
	end(t *testing.T) string
}

// cmdTransport is one of the two transports that run services.Session.
type cmdTransport struct {
	name string
	// openAt connects with credential cred ("" for none) and the server
	// subscription's cursor ("" for none).
	openAt func(t *testing.T, base, cred, cursor string) cmdConn
	// expired is how end reports a connection whose token expired.
	expired string
}

// open connects to in with credential cred.
func (tr cmdTransport) open(t *testing.T, in *instance, cred string) cmdConn {
	return tr.openAt(t, in.base, cred, "")
}

var cmdTransports = []cmdTransport{
	{"connect", openBidiAt, "unauthenticated"},
	{"ws", openWSAt, "close 1008"},
}

// openBidiAt opens a Connect stream over gRPC. The stream reaches the
// server with its first message.
func openBidiAt(t *testing.T, base, cred, cursor string) cmdConn {
	t.Helper()
	c := newClients(base, h2cClient(), connect.WithGRPC(), bearer(cred), connect.WithInterceptors(headerInterceptor{"Herald-Cursor", cursor}))
	return openBidi(t, c)
}

// openWSAt is openWS with a credential and a cursor.
func openWSAt(t *testing.T, base, cred, cursor string) cmdConn {
	t.Helper()
	if cred == "" && cursor == "" {
		return openWS(t, base, gateway.SubprotocolJSON)
	}
	u := wsURL(base)
	if cursor != "" {
		u += "?cursor=" + cursor
	}
	h := http.Header{}
	if cred != "" {
		h.Set("Authorization", "Bearer "+cred)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{gateway.SubprotocolJSON}})
	if err != nil {
		t.Fatalf("dial websocket: %v", err)
	}
	w := &wsClient{c: c, proto: gateway.SubprotocolJSON, msgs: make(chan *heraldv1.ConnectResponse, 1<<12), err: make(chan error, 1)}
	t.Cleanup(func() { c.CloseNow() })
	go func() {
		for {
			m, err := wsRead(ctx, c)
			if err != nil {
				w.err <- err
				return
			}
			w.msgs <- m
		}
	}()
	return w
}

func publishCmd(id, ch string) *heraldv1.ConnectRequest {
	return &heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: ch, Data: []byte(id)}}}
}

func subscribeCmd(id string, channels ...string) *heraldv1.ConnectRequest {
	return &heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: channels}}}
}

// ping checks that the connection is still open and in order.
func ping(t *testing.T, c cmdConn, id string) {
	t.Helper()
	c.send(t, &heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
	if m := c.next(t); m.Id != id || m.GetPong() == nil {
		t.Fatalf("ping %s: got %v, want its pong", id, m)
	}
}

// TestLimitPublishPerConnection: an end user's Connect stream or
// WebSocket publishes at most its burst plus the rate's refill; publishes
// over it get a resource_exhausted error frame that says when to retry,
// write nothing, and the connection stays open. Each connection has its
// own bucket. A service's API key is not limited.
//
// The rate is slow (1/s) and the bound is computed from the measured time,
// so the test holds however slow the machine.
func TestLimitPublishPerConnection(t *testing.T) {
	t.Parallel()
	rate := limits.Rate{PerSecond: 1, Burst: 3}
	in, key := authInstance(t, func(c *server.Config) { c.Services.ConnectionPublishRate = rate })
	history := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key)).history
	for _, tr := range cmdTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			ch := "lim:rate-" + tr.name
			user := limitToken(t, "dee-"+tr.name)
			c := tr.open(t, in, user)
			const n = 12
			start := time.Now()
			for i := range n {
				c.send(t, publishCmd(fmt.Sprint("p", i), ch))
			}
			ok, limited := 0, 0
			for ok+limited < n {
				m := c.next(t)
				switch e := m.GetError(); {
				case m.GetPublished() != nil:
					ok++
				case e.GetCode() == "resource_exhausted":
					if !strings.Contains(e.Message, "this connection") || !strings.Contains(e.Message, "retry after") {
						t.Fatalf("refusal %q: want it to name the connection's rate and say when to retry", e.Message)
					}
					limited++
				default:
					t.Fatalf("unexpected %v", m)
				}
			}
			elapsed := time.Since(start)
			refill := int(rate.PerSecond*elapsed.Seconds()) + 1
			if ok < rate.Burst || ok > rate.Burst+refill {
				t.Fatalf("%d published, %d limited in %v; want the burst of %d plus at most %d refilled",
					ok, limited, elapsed, rate.Burst, refill)
			}
			ping(t, c, "still-open")

			// The bucket refills: within about a second a publish passes.
			retried := 0
			waitFor(t, func() bool {
				retried++
				c.send(t, publishCmd(fmt.Sprint("retry", retried), ch))
				m := c.next(t)
				if code := m.GetError().GetCode(); code != "" && code != "resource_exhausted" {
					t.Fatalf("retry: %v", m)
				}
				return m.GetPublished() != nil
			})
			// Refused publishes wrote nothing.
			resp, err := history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch, Limit: 1000}))
			if err != nil {
				t.Fatal(err)
			}
			if got := len(resp.Msg.Events); got != ok+1 {
				t.Fatalf("%d events in the log; want the %d admitted", got, ok+1)
			}

			// Another connection of the same user has its own full bucket.
			c2 := tr.open(t, in, user)
			for i := range rate.Burst {
				c2.send(t, publishCmd(fmt.Sprint("q", i), ch))
			}
			for range rate.Burst {
				if m := c2.next(t); m.GetPublished() == nil {
					t.Fatalf("second connection's burst: %v", m)
				}
			}

			// A backend service publishing with its API key is not limited.
			svc := tr.open(t, in, key)
			const many = 12 // four bursts, pipelined
			for i := range many {
				svc.send(t, publishCmd(fmt.Sprint("k", i), ch))
			}
			for range many {
				if m := svc.next(t); m.GetPublished() == nil {
					t.Fatalf("API key publish: %v", m)
				}
			}
		})
	}
}

// TestLimitSubscriptionsPerConnection: the channels of a connection's
// subscriptions are capped; a subscribe that would exceed the cap gets a
// resource_exhausted error frame, the connection stays open, and
// unsubscribing makes room.
func TestLimitSubscriptionsPerConnection(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Services: services.Config{MaxSubscriptionsPerConnection: 3}})
	for _, tr := range cmdTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			c := tr.open(t, in, "")
			subscribed := func(id string, channels ...string) {
				t.Helper()
				c.send(t, subscribeCmd(id, channels...))
				if m := c.next(t); m.Id != id || m.GetSubscribed() == nil {
					t.Fatalf("subscribe %s %v: got %v, want subscribed", id, channels, m)
				}
			}
			refused := func(id string, channels ...string) {
				t.Helper()
				c.send(t, subscribeCmd(id, channels...))
				m := c.next(t)
				if e := m.GetError(); m.Id != id || e.GetCode() != "resource_exhausted" ||
					!strings.Contains(e.GetMessage(), "limit 3") || !strings.Contains(e.GetMessage(), "unsubscribe") {
					t.Fatalf("subscribe %s %v over the cap: got %v, want resource_exhausted naming the cap", id, channels, m)
				}
			}
			subscribed("s1", "a", "b")
			refused("s2", "c", "d") // 2 + 2 > 3
			subscribed("s3", "c")   // 3
			refused("s4", "d")
			ping(t, c, "open")
			c.send(t, &heraldv1.ConnectRequest{Id: "u1", Command: &heraldv1.ConnectRequest_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribeCommand{SubscriptionId: "s1"}}})
			if m := c.next(t); m.Id != "u1" || m.GetUnsubscribed() == nil {
				t.Fatalf("unsubscribe: %v", m)
			}
			subscribed("s4", "d") // 2
			subscribed("s5", "e") // 3
			refused("s6", "f")
		})
	}
}

// TestLimitChannelsPerRequest: a request naming more channels than
// MaxChannelsPerRequest is refused with invalid_argument (400) over every
// transport that takes several channels; at the limit it is served.
func TestLimitChannelsPerRequest(t *testing.T) {
	t.Parallel()
	const maxChannels = 3
	in := startInstance(t, server.Config{Services: services.Config{MaxChannelsPerRequest: maxChannels}})
	atLimit := []string{"a", "b", "c"}
	over := []string{"a", "b", "c", "d"}
	checkMessage := func(t *testing.T, what, msg string) {
		t.Helper()
		if !strings.Contains(msg, fmt.Sprint("limit ", maxChannels)) || !strings.Contains(msg, "split") {
			t.Fatalf("%s: message %q; want the limit and what to do", what, msg)
		}
	}
	t.Run("grpc", func(t *testing.T) {
		t.Parallel()
		c := grpcClients(in)
		st, err := c.events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: over}))
		if err == nil {
			st.Receive()
			err = st.Err()
			st.Close()
		}
		if codeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("Subscribe with %d channels: %v; want invalid_argument", len(over), err)
		}
		checkMessage(t, "Subscribe", err.Error())
		s := subscribe(t, c.events, atLimit, nil)
		if m := s.next(t); m.GetSubscribed() == nil {
			t.Fatalf("Subscribe at the limit: %v", m)
		}
		_, err = c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: over}))
		if codeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("Poll with %d channels: %v; want invalid_argument", len(over), err)
		}
		if _, err := c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: atLimit, Cursor: ptr(int64(0))})); err != nil {
			t.Fatalf("Poll at the limit: %v", err)
		}
	})
	t.Run("sse", func(t *testing.T) {
		t.Parallel()
		for _, q := range []string{"channel=a&channel=b&channel=c&channel=d", "channel=a,b&channel=c,d"} {
			_, r := openSSEQuery(t, in, q)
			if r == nil || r.status != http.StatusBadRequest || r.code != "invalid_argument" {
				t.Fatalf("SSE ?%s: %v; want 400 invalid_argument", q, r)
			}
			checkMessage(t, "SSE", r.message)
		}
		if _, r := openSSEQuery(t, in, "channel=a&channel=b&channel=c"); r != nil {
			t.Fatalf("SSE at the limit: %v", r)
		}
	})
	t.Run("rest", func(t *testing.T) {
		t.Parallel()
		for _, q := range []string{"channel=a&channel=b&channel=c&channel=d", "channel=a,b,c,d"} {
			restCall(t, "GET", in.base+"/v1/events?cursor=0&"+q, "", nil).fails(t, http.StatusBadRequest, "invalid_argument", "limit 3", "split")
		}
		restCall(t, "GET", in.base+"/v1/events?cursor=0&channel=a,b,c", "", nil).ok(t, http.StatusOK, &heraldv1.PollResponse{})
	})
	for _, tr := range cmdTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			c := tr.open(t, in, "")
			c.send(t, subscribeCmd("s1", over...))
			m := c.next(t)
			if m.Id != "s1" || m.GetError().GetCode() != "invalid_argument" {
				t.Fatalf("subscribe command with %d channels: %v; want invalid_argument", len(over), m)
			}
			checkMessage(t, tr.name, m.GetError().GetMessage())
			c.send(t, subscribeCmd("s2", atLimit...))
			if m := c.next(t); m.Id != "s2" || m.GetSubscribed() == nil {
				t.Fatalf("subscribe command at the limit: %v", m)
			}
		})
	}
}

// openSSEQuery opens an SSE stream with query q and returns it open, or how it
// was refused.
func openSSEQuery(t *testing.T, in *instance, q string) (func(), *refusal) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.base+"/v1/sse?"+q, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		t.Cleanup(func() { resp.Body.Close() })
		return cancel, nil
	}
	return nil, httpRefusal(t, resp)
}

// TestLimitConfigValidated: server.New refuses limits out of range,
// including more channels per request than the API's own rule allows; and
// that ceiling is the proto's.
func TestLimitConfigValidated(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  server.Config
		want string
	}{
		{"channels over the API's ceiling", server.Config{Services: services.Config{MaxChannelsPerRequest: services.MaxChannelsCeiling + 1}}, "MaxChannelsPerRequest"},
		{"rate without burst", server.Config{Services: services.Config{ConnectionPublishRate: limits.Rate{PerSecond: 5}}}, "PublishPerConnection"},
		{"NaN rate", server.Config{Services: services.Config{UserPublishRate: limits.Rate{PerSecond: math.NaN(), Burst: 1}}}, "PublishPerUser"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.Addr = "127.0.0.1:0"
			srv, err := server.New(t.Context(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				if srv != nil {
					runInstance(t, srv) // stop it when the test ends
				}
				t.Fatalf("server.New = %v; want an error naming %s", err, tt.want)
			}
		})
	}
	channels := make([]string, services.MaxChannelsCeiling+1)
	for i := range channels {
		channels[i] = fmt.Sprint("c", i)
	}
	if err := services.Validate(&heraldv1.SubscribeRequest{Channels: channels[:services.MaxChannelsCeiling]}); err != nil {
		t.Fatalf("SubscribeRequest at MaxChannelsCeiling: %v", err)
	}
	if err := services.Validate(&heraldv1.PollRequest{Channels: channels[:services.MaxChannelsCeiling]}); err != nil {
		t.Fatalf("PollRequest at MaxChannelsCeiling: %v", err)
	}
	if err := services.Validate(&heraldv1.SubscribeRequest{Channels: channels}); err == nil {
		t.Fatal("SubscribeRequest over MaxChannelsCeiling passed validation: the proto's max_items changed; update services.MaxChannelsCeiling")
	}
	if err := services.Validate(&heraldv1.PollRequest{Channels: channels}); err == nil {
		t.Fatal("PollRequest over MaxChannelsCeiling passed validation: the proto's max_items changed; update services.MaxChannelsCeiling")
	}
}

// TestAnonymousPublishRate: where a namespace lets anonymous clients
// publish, their unary publishes (RPC and REST) are rate limited by
// address, like an end user's.
func TestAnonymousPublishRate(t *testing.T) {
	t.Parallel()
	set, err := namespace.Parse([]byte(`{"namespaces":{"lobby":{"subscribe":"anonymous","publish":"anonymous"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	rate := limits.Rate{PerSecond: 2, Burst: 10}
	in, _ := authInstance(t, func(c *server.Config) { c.Services.Namespaces, c.Services.UserPublishRate = set, rate })
	anon := newClients(in.base, h2cClient(), connect.WithGRPC())
	start := time.Now()
	ok, limited := 0, 0
	for range 30 {
		_, err := anon.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "lobby:1", Data: []byte("x")}))
		switch {
		case err == nil:
			ok++
		case connect.CodeOf(err) == connect.CodeResourceExhausted:
			limited++
		default:
			t.Fatal(err)
		}
	}
	refill := int(rate.PerSecond*time.Since(start).Seconds()) + 1
	if ok < rate.Burst || ok > rate.Burst+refill || limited == 0 {
		t.Fatalf("anonymous RPC: %d published, %d limited; want the burst of %d plus at most %d", ok, limited, rate.Burst, refill)
	}
	// REST shares the address's bucket (which refills a token every
	// 500 ms, so one attempt may pass).
	for i := 0; ; i++ {
		r := restCall(t, "POST", in.base+"/v1/channels/lobby:1/events", "text/plain", []byte("x"))
		if r.status == 429 {
			break
		}
		if i == 5 {
			t.Fatalf("6 anonymous REST publishes over the rate were accepted: %d %s", r.status, r.body)
		}
	}
}
