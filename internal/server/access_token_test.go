package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldrt/herald/internal/server"
)

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
