package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

const testSecret = "0123456789abcdef0123456789abcdef-test-secret"

// authInstance runs an instance that authenticates: one publishing API key
// and HS256 tokens.
func authInstance(t *testing.T, opts ...func(*server.Config)) (*instance, string) {
	t.Helper()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.NewKeys([]auth.KeyConfig{{Name: "backend", Hash: auth.HashKey(key), Scopes: []auth.Scope{auth.ScopePublish, auth.ScopeSubscribe, auth.ScopeHistory}}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.JWTConfig{HS256Secret: []byte(testSecret), AllowAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{Services: services.Config{Auth: auth.NewAuthenticator(keys, v)}}
	for _, o := range opts {
		o(&cfg)
	}
	return startInstance(t, cfg), key
}

// userToken signs a token for a user who may subscribe to news:> only.
func userToken(t *testing.T) string {
	return token(t, "ann", time.Hour, jwt.MapClaims{"subscribe": []string{"news:>"}})
}

// bearer adds an Authorization header to every call of a client (none
// for an empty token).
func bearer(token string) connect.ClientOption {
	if token == "" {
		return connect.WithInterceptors()
	}
	return connect.WithInterceptors(headerInterceptor{"Authorization", "Bearer " + token})
}

// headerInterceptor sets a request header on every call and stream of a
// client, unless the value is empty.
type headerInterceptor struct{ name, value string }

func (h headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if h.value != "" {
			req.Header().Set(h.name, h.value)
		}
		return next(ctx, req)
	}
}

func (h headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if h.value != "" {
			conn.RequestHeader().Set(h.name, h.value)
		}
		return conn
	}
}

func (h headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// token signs a token for user sub, valid for d, with claims (none: the
// default scopes and no channels).
func token(t testing.TB, sub string, d time.Duration, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(d).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAuthForbiddenActions tries each forbidden action over each transport,
// as an anonymous client, as a user without the permission and with a bad
// token, and checks the code and that nothing was written or delivered.
func TestAuthForbiddenActions(t *testing.T) {
	t.Parallel()
	in, _ := authInstance(t)
	user := userToken(t)
	callers := []struct {
		name, token, code string
	}{
		{"anonymous", "", "unauthenticated"},
		{"user", user, "permission_denied"},
		{"bad-token", user[:len(user)-4] + "AAAA", "unauthenticated"},
	}
	httpStatus := map[string]int{"unauthenticated": 401, "permission_denied": 403}
	for _, cl := range callers {
		t.Run(cl.name, func(t *testing.T) {
			for _, p := range protocols {
				c := newClients(in.base, p.http(), append(p.opts, bearer(cl.token))...)
				_, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "news:1", Data: []byte("x")}))
				if codeOf(err).String() != cl.code {
					t.Errorf("%s publish: %v, want %s", p.name, err, cl.code)
				}
				st, err := c.events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"secret:1"}}))
				if err == nil {
					st.Receive()
					err = st.Err()
					st.Close()
				}
				if codeOf(err).String() != cl.code {
					t.Errorf("%s subscribe: %v, want %s", p.name, err, cl.code)
				}
				_, err = c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "secret:1"}))
				if codeOf(err).String() != cl.code {
					t.Errorf("%s history: %v, want %s", p.name, err, cl.code)
				}
				_, err = c.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{Name: "news:2"}))
				if codeOf(err).String() != cl.code {
					t.Errorf("%s create channel: %v, want %s", p.name, err, cl.code)
				}
			}
			// REST, SSE and long-poll, with the token as a header and (for
			// what EventSource uses) as access_token.
			for _, r := range []struct{ method, path, body string }{
				{"POST", "/v1/channels/news:1/events", "x"},
				{"GET", "/v1/channels/secret:1/events", ""},
				{"GET", "/v1/sse?channel=secret:1", ""},
				{"GET", "/v1/events?channel=secret:1&wait=1s", ""},
				{"DELETE", "/v1/channels/news:1", ""},
			} {
				for _, viaQuery := range []bool{false, true} {
					if viaQuery && r.method != "GET" {
						continue
					}
					u := in.base + r.path
					req, _ := http.NewRequest(r.method, u, strings.NewReader(r.body))
					if cl.token != "" {
						if viaQuery {
							sep := "?"
							if strings.Contains(u, "?") {
								sep = "&"
							}
							req, _ = http.NewRequest(r.method, u+sep+"access_token="+url.QueryEscape(cl.token), nil)
						} else {
							req.Header.Set("Authorization", "Bearer "+cl.token)
						}
					}
					// Bounded: a stream wrongly admitted must fail, not hang.
					rctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
					resp, err := http.DefaultClient.Do(req.WithContext(rctx))
					if err != nil {
						cancel()
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					cancel()
					resp.Body.Close()
					if resp.StatusCode != httpStatus[cl.code] || !strings.Contains(string(body), `"code":"`+cl.code+`"`) || strings.Contains(string(body), testSecret) {
						t.Errorf("%s %s (token in query: %v): %d %s, want %d %s", r.method, r.path, viaQuery, resp.StatusCode, body, httpStatus[cl.code], cl.code)
					}
				}
			}
			// WebSocket: a bad token is refused at the handshake; otherwise
			// each forbidden command gets an error frame.
			ctx := t.Context()
			h := http.Header{}
			if cl.token != "" {
				h.Set("Authorization", "Bearer "+cl.token)
			}
			wc, resp, err := websocket.Dial(ctx, wsURL(in.base), &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{gateway.SubprotocolJSON}})
			if cl.name == "bad-token" {
				if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("websocket with a bad token: %v %v", err, resp)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer wc.CloseNow()
			for _, cmd := range []*heraldv1.ConnectRequest{
				{Id: "p", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: "news:1", Data: []byte("x")}}},
				{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"secret:1"}}}},
			} {
				if err := wsWrite(ctx, wc, gateway.SubprotocolJSON, cmd); err != nil {
					t.Fatal(err)
				}
				m, err := wsRead(ctx, wc)
				if err != nil || m.Id != cmd.Id || m.GetError().GetCode() != cl.code {
					t.Errorf("websocket %s: %v %v, want %s", cmd.Id, m, err, cl.code)
				}
			}
		})
	}
	if head := in.srv.Hub().Head(); head != 0 {
		t.Fatalf("forbidden actions wrote %d events", head)
	}
}

// TestAuthAllowedActions: what the key and the token allow works, over the
// transports clients use with them.
func TestAuthAllowedActions(t *testing.T) {
	t.Parallel()
	in, key := authInstance(t)
	user := userToken(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	// The user's EventSource, authenticated by access_token.
	sse := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=news:1&access_token="+url.QueryEscape(user), nil)
	if sse.resp.StatusCode != http.StatusOK {
		t.Fatalf("user SSE: %s", sse.resp.Status)
	}
	sse.next(t) // retry
	sse.next(t) // subscribed
	ev := mustPublish(t, svc.events, "news:1", "hello")
	if got := sse.next(t); got.id != strconv.FormatInt(ev.Position, 10) {
		t.Fatalf("user got %+v, want position %d", got, ev.Position)
	}
	// The user's WebSocket, authenticated by a header.
	wc, _, err := websocket.Dial(t.Context(), wsURL(in.base), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + user}}, Subprotocols: []string{gateway.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	if err := wsWrite(t.Context(), wc, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"news:1"}, Cursor: ptr(int64(0))}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := wsRead(t.Context(), wc); err != nil || m.GetSubscribed() == nil {
		t.Fatalf("user websocket subscribe: %v %v", m, err)
	}
	if m, err := wsRead(t.Context(), wc); err != nil || m.GetEvent().GetPosition() != ev.Position {
		t.Fatalf("user websocket replay: %v %v", m, err)
	}
	// The service key reads history; health stays public.
	if _, err := svc.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "news:1"})); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(in.base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestAuthTokenExpiryEndsStreams: a stream opened with a token ends when
// the token expires, with unauthenticated and where to resume (gRPC), an
// @end event (SSE) or close 1008 (WebSocket).
func TestAuthTokenExpiryEndsStreams(t *testing.T) {
	t.Parallel()
	in, key := authInstance(t)
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	ev := mustPublish(t, svc.events, "news:1", "x")
	short, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "ann", "exp": time.Now().Add(2 * time.Second).Unix(), "subscribe": []string{"news:>"},
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	// gRPC
	user := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(short))
	st, err := user.events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"news:1"}, Cursor: ptr(int64(0))}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// SSE
	sse := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=news:1&last_event_id=0&access_token="+url.QueryEscape(short), nil)
	// WebSocket
	wc, _, err := websocket.Dial(t.Context(), wsURL(in.base), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + short}}, Subprotocols: []string{gateway.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()

	var got []int64
	for st.Receive() {
		if e := st.Msg().GetEvent(); e != nil {
			got = append(got, e.Position)
		}
	}
	if codeOf(st.Err()) != connect.CodeUnauthenticated || len(got) != 1 {
		t.Fatalf("gRPC stream ended with %v after %v, want unauthenticated after the event", st.Err(), got)
	}
	end := errorOf(st.Err()).End
	if end.GetReason() != heraldv1.StreamEndReason_STREAM_END_REASON_TOKEN_EXPIRED || end.GetLastPosition() != ev.Position {
		t.Fatalf("gRPC StreamEnd = %v", end)
	}
	for {
		e := sse.next(t)
		if e.event == "@end" {
			m := &heraldv1.Error{}
			mustUnmarshal(e.data, m)
			if m.Code != "unauthenticated" || m.End.GetLastPosition() != ev.Position {
				t.Fatalf("SSE @end = %v", m)
			}
			break
		}
	}
	for {
		if _, _, err := wc.Read(t.Context()); err != nil {
			if websocket.CloseStatus(err) != gateway.StatusPolicy {
				t.Fatalf("websocket closed with %v, want 1008", err)
			}
			break
		}
	}
}

// TestAuthUserPublishRate: an end user's publishes are rate limited across
// transports (resource_exhausted, 429 with Retry-After); a service's API
// key is not.
func TestAuthUserPublishRate(t *testing.T) {
	t.Parallel()
	// A slow rate, so that the refill while publishing is small and
	// bounded by the measured time, however slow the machine.
	rate := limits.Rate{PerSecond: 2, Burst: 10}
	in, key := authInstance(t, func(c *server.Config) { c.Services.UserPublishRate = rate })
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "bob", "exp": time.Now().Add(time.Hour).Unix(), "publish": []string{"chat:>"}, "subscribe": []string{"chat:>"},
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	user := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(tok))
	ok, limited := 0, 0
	start := time.Now()
	for range 30 {
		_, err := user.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "chat:1", Data: []byte("x")}))
		switch {
		case err == nil:
			ok++
		case codeOf(err) == connect.CodeResourceExhausted:
			limited++
		default:
			t.Fatal(err)
		}
	}
	// The burst, plus at most what the rate refilled while publishing.
	refill := int(rate.PerSecond*time.Since(start).Seconds()) + 1
	if ok < rate.Burst || ok > rate.Burst+refill || limited == 0 {
		t.Fatalf("user: %d published, %d limited in %v; want the burst of %d plus at most %d refilled, then refusals",
			ok, limited, time.Since(start), rate.Burst, refill)
	}
	// Over REST the same user's bucket is shared and the refusal says when
	// to retry.
	// (The bucket refills a token every 500 ms, so one attempt may pass.)
	refused := false
	for range 20 {
		req, _ := http.NewRequest(http.MethodPost, in.base+"/v1/channels/chat:1/events", strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			if resp.Header.Get("Retry-After") == "" {
				t.Fatalf("429 without Retry-After: %v", resp.Header)
			}
			refused = true
			break
		}
	}
	if !refused {
		t.Fatal("20 REST publishes in a row over the user's rate were all accepted")
	}
	svc := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(key))
	for range 100 {
		mustPublish(t, svc.events, "chat:1", "x")
	}
}

// TestAccessTokenParamOnEveryTransport: a client configured with a token
// sends it as access_token= where it cannot set a header (EventSource,
// the WebSocket constructor) and may do so on REST GETs too. Whether the
// server authenticates or not, every transport takes the request the same
// way: the parameter never counts as an unknown one.
func TestAccessTokenParamOnEveryTransport(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"auth-off", "auth-on"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var in *instance
			token := "hk_not-checked-without-auth"
			if mode == "auth-off" {
				in = startInstance(t, server.Config{})
			} else {
				in, token = authInstance(t)
			}
			c := newClients(in.base, http.DefaultClient, bearer(token))
			mustPublish(t, c.events, "tok", "hello")
			tok := "access_token=" + url.QueryEscape(token)

			t.Run("sse", func(t *testing.T) {
				sse := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=tok&last_event_id=0&"+tok, nil)
				if sse.resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(sse.resp.Body)
					t.Fatalf("SSE with access_token: %d %s", sse.resp.StatusCode, b)
				}
				for {
					if ev := sse.next(t); ev.id == "1" {
						if !strings.Contains(ev.data, `"channel":"tok"`) {
							t.Fatalf("SSE event %+v", ev)
						}
						return
					}
				}
			})
			t.Run("websocket", func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				conn, resp, err := websocket.Dial(ctx, wsURL(in.base)+"?"+tok,
					&websocket.DialOptions{Subprotocols: []string{"herald.v1.json"}})
				if err != nil {
					t.Fatalf("WebSocket with access_token: %v (response %+v)", err, resp)
				}
				conn.CloseNow()
			})
			t.Run("rest", func(t *testing.T) {
				restCall(t, http.MethodGet, restEvents(in.base, "tok")+"?"+tok, "", nil).ok(t, http.StatusOK, nil)
			})
			t.Run("longpoll", func(t *testing.T) {
				r := restCall(t, http.MethodGet, in.base+"/v1/events?channel=tok&cursor=0&"+tok, "", nil)
				r.ok(t, http.StatusOK, nil)
				if !strings.Contains(string(r.body), `"channel":"tok"`) {
					t.Fatalf("long-poll returned %s", r.body)
				}
			})
		})
	}
}
