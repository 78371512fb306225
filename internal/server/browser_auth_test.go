package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestBrowserAuth drives herald.js with tokens in headless Chromium against
// an instance that authenticates: short-lived tokens from getToken keep a
// WebSocket (refreshed in place), an SSE stream and a long-poll delivering
// every event once and in order; the token's channels reach onServerEvent
// across a reconnect; and without getToken an expired token ends the
// subscription with 'unauthenticated' and no more retries.
func TestBrowserAuth(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)

	t.Run("websocket-refresh", func(t *testing.T) {
		t.Parallel()
		testBrowserAuthRefresh(t, b)
	})
	for _, transport := range []string{"sse", "longpoll"} {
		t.Run("expiry/"+transport, func(t *testing.T) {
			t.Parallel()
			testBrowserAuthExpiry(t, b, transport)
		})
	}
	for _, transport := range []string{"websocket", "sse", "longpoll"} {
		t.Run("no-gettoken/"+transport, func(t *testing.T) {
			t.Parallel()
			testBrowserAuthNoGetToken(t, b, transport)
		})
	}
	t.Run("server-channels", func(t *testing.T) {
		t.Parallel()
		testBrowserAuthServerChannels(t, b)
	})
}

// shortTokens signs n tokens for ann (subscribe news:>) expiring every
// `every`, the first one `every` from now.
func shortTokens(t *testing.T, n int, every time.Duration) []string {
	t.Helper()
	now := time.Now()
	out := make([]string, n)
	for i := range out {
		out[i] = token(t, "ann", time.Until(now.Add(time.Duration(i+1)*every)), jwt.MapClaims{"subscribe": []string{"news:>"}})
	}
	return out
}

// authPage opens a page of the instance and loads herald.js into it with
// counters of what the client opens: window.created counts WebSocket and
// EventSource constructions and fetch calls by kind. window.tokens is the
// list getToken hands out, one per call (the last one stays). setup runs
// after that with Herald and text in scope.
func authPage(t *testing.T, b context.Context, base string, tokens []string, setup string) *page {
	t.Helper()
	p := openPage(t, b, base+"/demo/index.html")
	list, err := json.Marshal(tokens)
	if err != nil {
		t.Fatal(err)
	}
	eval[bool](t, p, fmt.Sprintf(`(async () => {
		window.tokens = %s;
		window.tokenCalls = 0;
		window.nextToken = () => { tokenCalls++; return tokens.length > 1 ? tokens.shift() : tokens[0]; };
		window.created = { websocket: 0, sse: 0, fetch: 0 };
		const NativeWS = window.WebSocket, NativeES = window.EventSource, nativeFetch = window.fetch;
		window.WebSocket = class extends NativeWS { constructor(...a) { super(...a); created.websocket++; window.lastWS = this; } };
		window.EventSource = class extends NativeES { constructor(...a) { super(...a); created.sse++; } };
		window.fetch = (...a) => { created.fetch++; return nativeFetch(...a); };
		window.got = []; window.errors = []; window.states = [];
		const { Herald, text } = await import('/herald.js');
		%s;
		return true;
	})()`, list, setup))
	return p
}

// publishFor publishes one event to channel every interval for d with the
// API key, and returns their positions.
func publishFor(t *testing.T, base, key, channel string, d, interval time.Duration) []int64 {
	t.Helper()
	svc := newClients(base, http.DefaultClient, bearer(key))
	var want []int64
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		want = append(want, mustPublish(t, svc.events, channel, fmt.Sprint("event ", len(want))).Position)
	}
	return want
}

// noTokenLeak fails when a token shows in the page's console or in the
// messages of the errors it collected.
func noTokenLeak(t *testing.T, p *page, tokens []string) {
	t.Helper()
	msgs := eval[string](t, p, `errors.map(e => e.message).join('\n')`)
	p.mu.Lock()
	logs := strings.Join(p.logs, "\n")
	p.mu.Unlock()
	for _, tok := range tokens {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(logs, sig) || strings.Contains(msgs, sig) {
			t.Errorf("a token shows in the page's console or error messages")
			return
		}
	}
}

// testBrowserAuthRefresh: a WebSocket whose tokens last a few seconds keeps
// receiving for 12 s, every event once and in order, on one connection:
// herald.js refreshes the token in place before it expires.
func testBrowserAuthRefresh(t *testing.T, b context.Context) {
	in, key := authInstance(t)
	tokens := shortTokens(t, 12, 4*time.Second)
	p := authPage(t, b, in.base, tokens, `
		window.h = new Herald({ transport: 'websocket', minDelay: 100, getToken: nextToken,
			onStatus: (s) => states.push(s.state + (s.code ? ' ' + s.code : '')) });
		h.subscribe(['news:1'], { cursor: '0', onEvent: (ev) => got.push(ev.position),
			onError: (e) => errors.push({ code: e.code, message: e.message }) })`)
	p.wait(t, "an open WebSocket", `h.state === 'open'`)

	want := publishFor(t, in.base, key, "news:1", 12*time.Second, 250*time.Millisecond)
	p.wait(t, fmt.Sprintf("all %d events", len(want)), fmt.Sprintf(`got.length >= %d`, len(want)))
	p.expectPositions(t, `got`, want)
	if errs := eval[string](t, p, `JSON.stringify(errors)`); errs != "[]" {
		t.Errorf("subscription errors: %s", errs)
	}
	// Three tokens' lifetimes passed: each was replaced by a fresh one.
	if n := eval[int](t, p, `tokenCalls`); n < 3 {
		t.Errorf("getToken was called %d times in 12 s of 4 s tokens, want at least 3", n)
	}
	if n := eval[int](t, p, `created.websocket`); n != 1 {
		t.Errorf("the page opened %d WebSockets (states: %s), want 1: the token must be refreshed in place, without reconnecting",
			n, eval[string](t, p, `states.join(', ')`))
	}
	noTokenLeak(t, p, tokens)
}

// testBrowserAuthExpiry: over SSE or long-poll, whose tokens cannot be
// refreshed in place, herald.js reconnects with a fresh token when the
// server ends the stream or refuses the poll, and resumes: every event once
// and in order. REST calls carry the token too.
func testBrowserAuthExpiry(t *testing.T, b context.Context, transport string) {
	in, key := authInstance(t)
	tokens := shortTokens(t, 12, 4*time.Second)
	p := authPage(t, b, in.base, tokens, fmt.Sprintf(`
		window.h = new Herald({ transport: %q, minDelay: 100, pollWait: 2, getToken: async () => nextToken(),
			onStatus: (s) => states.push(s.state) });
		h.subscribe(['news:1'], { cursor: '0', onEvent: (ev) => got.push(ev.position),
			onError: (e) => errors.push({ code: e.code, message: e.message }) })`, transport))
	p.wait(t, "an open "+transport, `h.state === 'open'`)

	want := publishFor(t, in.base, key, "news:1", 12*time.Second, 250*time.Millisecond)
	p.wait(t, fmt.Sprintf("all %d events", len(want)), fmt.Sprintf(`got.length >= %d`, len(want)))
	p.expectPositions(t, `got`, want)
	if errs := eval[string](t, p, `JSON.stringify(errors)`); errs != "[]" {
		t.Errorf("subscription errors: %s", errs)
	}
	if n := eval[int](t, p, `tokenCalls`); n < 3 {
		t.Errorf("getToken was called %d times in 12 s of 4 s tokens, want at least 3", n)
	}
	if transport == "sse" {
		if n := eval[int](t, p, `created.sse`); n < 3 {
			t.Errorf("%d EventSources in 12 s of 4 s tokens, want at least 3 (one per token)", n)
		}
	}
	// REST (history) with the Authorization header, after all that.
	if got := eval[string](t, p, `h.history('news:1', { limit: 1 }).then((r) => r.events[0].position, (e) => 'error ' + e.code)`); got != fmt.Sprint(want[0]) {
		t.Errorf("history from the page: %s, want position %d", got, want[0])
	}
	noTokenLeak(t, p, tokens)
}

// testBrowserAuthNoGetToken: with a fixed token and no getToken, the
// token's expiry fails the subscription with 'unauthenticated' once, and
// the client stops: no more connections or requests.
func testBrowserAuthNoGetToken(t *testing.T, b context.Context, transport string) {
	in, key := authInstance(t)
	tok := token(t, "ann", 3*time.Second, jwt.MapClaims{"subscribe": []string{"news:>"}})
	p := authPage(t, b, in.base, nil, fmt.Sprintf(`
		window.h = new Herald({ transport: %q, minDelay: 50, maxDelay: 200, pollWait: 1, token: %q });
		h.subscribe(['news:1'], { cursor: '0', onEvent: (ev) => got.push(ev.position),
			onError: (e) => errors.push({ code: e.code, message: e.message, status: e.status }) })`, transport, tok))
	svc := newClients(in.base, http.DefaultClient, bearer(key))
	ev := mustPublish(t, svc.events, "news:1", "before expiry")
	p.wait(t, "the event", `got.length === 1`)
	p.wait(t, "an unauthenticated error", `errors.length > 0`)
	if got := eval[string](t, p, `JSON.stringify(errors.map(e => e.code))`); got != `["unauthenticated"]` {
		t.Fatalf("errors: %s, want one unauthenticated", eval[string](t, p, `JSON.stringify(errors)`))
	}
	if got := eval[string](t, p, `got.join(',')`); got != fmt.Sprint(ev.Position) {
		t.Errorf("events: %s, want %d", got, ev.Position)
	}
	// Stopped: nothing is opened or fetched any more (the backoff is at
	// most 200 ms, so a retrying client would show within the second).
	before := eval[string](t, p, `JSON.stringify(created)`)
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if now := eval[string](t, p, `JSON.stringify(created)`); now != before {
			t.Fatalf("the client kept trying after the error: %s, then %s", before, now)
		}
		time.Sleep(100 * time.Millisecond)
	}
	noTokenLeak(t, p, []string{tok})
}

// testBrowserAuthServerChannels: the token's channels claim subscribes the
// WebSocket on the server; onServerEvent gets those events, and after a
// reconnect the server subscription resumes where it was (cursor=).
func testBrowserAuthServerChannels(t *testing.T, b context.Context) {
	in, key := authInstance(t)
	tok := token(t, "ann", time.Hour, jwt.MapClaims{"channels": []string{"user:{sub}"}})
	p := authPage(t, b, in.base, []string{tok}, `
		window.h = new Herald({ minDelay: 300, getToken: nextToken, onServerEvent: (ev) => got.push(ev.position) })`)
	p.wait(t, "an open WebSocket", `h.state === 'open' && h.transport === 'websocket'`)
	svc := newClients(in.base, http.DefaultClient, bearer(key))
	var want []int64
	publish := func(n int) {
		for range n {
			want = append(want, mustPublish(t, svc.events, "user:ann", "for ann").Position)
		}
	}
	// The server subscribes live: wait until it has (its subscribed frame
	// sets the position) before publishing.
	p.wait(t, "subscription by the server", `h._serverPosition !== undefined`)
	publish(3)
	p.wait(t, "3 server events", `got.length >= 3`)
	// Drop the connection; what is published meanwhile comes on the next.
	eval[bool](t, p, `lastWS.close(4000), true`)
	publish(3)
	p.wait(t, "a second WebSocket", `created.websocket === 2 && h.state === 'open'`)
	publish(2)
	p.wait(t, "8 server events", `got.length >= 8`)
	p.expectPositions(t, `got`, want)
}
