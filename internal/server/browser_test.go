package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/server"
)

// TestBrowser drives the demo pages and herald.js in headless Chromium
// against real instances: chat over WebSocket; the feed page over every
// transport across a restart and a crash; a native EventSource across a
// crash; and the long-poll fallback.
func TestBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)

	t.Run("chat", func(t *testing.T) {
		t.Parallel()
		testBrowserChat(t, b)
	})
	for _, transport := range []string{"websocket", "sse", "longpoll"} {
		for _, crash := range []bool{false, true} {
			name := "feed-restart/" + transport
			if crash {
				name = "feed-crash/" + transport
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				testBrowserFeedRestart(t, b, transport, crash)
			})
		}
	}
	t.Run("eventsource-crash", func(t *testing.T) {
		t.Parallel()
		testBrowserEventSourceCrash(t, b)
	})
	t.Run("longpoll", func(t *testing.T) {
		t.Parallel()
		testBrowserLongPoll(t, b)
	})
	t.Run("auto-upgrade", func(t *testing.T) {
		t.Parallel()
		testBrowserAutoUpgrade(t, b)
	})
	t.Run("history", func(t *testing.T) {
		t.Parallel()
		testBrowserHistory(t, b)
	})
	t.Run("chat-presence", func(t *testing.T) {
		t.Parallel()
		testBrowserChatPresence(t, b)
	})
}

// testBrowserChatPresence: the chat page shows who is in the room and who
// is typing, across two PostgreSQL instances: alice on one over WebSocket,
// bob on the other over SSE (his typing signal goes over REST). When bob's
// page goes away, alice's list drops him.
func testBrowserChatPresence(t *testing.T, b context.Context) {
	dsn, schema := database(t)
	var nodes []*instance
	for range 2 {
		cfg := server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}}
		presenceConfig(t, &cfg)
		set, err := namespace.Parse([]byte(`{"namespaces": {"chat": {"presence": "anonymous", "signals": true}}}`))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Services.Namespaces = set
		nodes = append(nodes, startInstance(t, cfg))
	}
	room := fmt.Sprintf("/demo/chat.html?room=p%d", time.Now().UnixNano())
	alice := openPage(t, b, nodes[0].base+room+"&name=alice&transport=websocket")
	bob := openPage(t, b, nodes[1].base+room+"&name=bob&transport=sse")
	count := `document.querySelectorAll('#members li').length`
	for _, p := range []*page{alice, bob} {
		p.wait(t, "two members, presence on", `document.body.dataset.subscribed === 'true' && `+count+` === 2 && document.querySelector('#presence-off').hidden`)
	}
	if got := eval[int](t, alice, `document.querySelectorAll('#members li').length`); got != 2 {
		t.Fatalf("alice sees %d members", got)
	}
	bob.do(t, chromedp.SendKeys(chromedp.CSS("#text"), "h"))
	alice.wait(t, "bob typing", `document.querySelector('#typing').textContent === 'bob is typing…'`)
	if os.Getenv("HERALD_SCREENSHOTS") != "" {
		shot(t, alice, "chat-presence.png") // for people to look at
	}
	// The tab closes (navigating away could keep the page in the
	// back-forward cache, its stream open).
	if err := chromedp.Cancel(bob.ctx); err != nil {
		t.Fatal(err)
	}
	alice.wait(t, "bob gone", count+` === 1 && document.querySelector('#members li').textContent.endsWith('(you)')`)
	alice.expectClean(t)
}

// testBrowserChat: two chat pages exchange messages over WebSocket; an edit
// and a delete made on one show on the other, and a page opened afterwards
// loads the room as it now stands.
func testBrowserChat(t *testing.T, b context.Context) {
	in := memoryInstance(t)
	room := fmt.Sprintf("%s/demo/chat.html?room=r%d", in.base, time.Now().UnixNano())
	alice := openPage(t, b, room+"&name=alice")
	bob := openPage(t, b, room+"&name=bob")
	for _, p := range []*page{alice, bob} {
		p.wait(t, "a subscribed WebSocket", `document.body.dataset.subscribed === 'true' && document.querySelector('#status').dataset.transport === 'websocket'`)
	}

	send := func(p *page, text string) {
		t.Helper()
		p.do(t, chromedp.SetValue(chromedp.CSS("#text"), text), chromedp.Click(chromedp.CSS("#send")))
	}
	hasText := func(text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#messages li .text')].some(e => e.textContent === %q)`, text)
	}

	send(alice, "hello from alice")
	bob.wait(t, "alice's message", hasText("hello from alice"))
	send(bob, "hi from bob")
	alice.wait(t, "bob's message", hasText("hi from bob"))

	pos := eval[string](t, alice, `document.querySelector('#messages li[data-author=alice]').dataset.position`)
	li := fmt.Sprintf(`#messages li[data-position="%s"]`, pos)

	alice.do(t,
		chromedp.Click(chromedp.CSS(li+" button[data-action=edit]")),
		chromedp.SetValue(chromedp.CSS("#text"), "hello (edited)"),
		chromedp.Click(chromedp.CSS("#send")),
	)
	bob.wait(t, "the edit", fmt.Sprintf(`(e => e && e.querySelector('.text').textContent === 'hello (edited)' && e.dataset.edited === 'true')(document.querySelector(%q))`, li))

	alice.do(t, chromedp.Click(chromedp.CSS(li+" button[data-action=delete]")))
	for _, p := range []*page{alice, bob} {
		p.wait(t, "the delete", fmt.Sprintf(`document.querySelector(%q) === null`, li))
	}

	messages := `JSON.stringify([...document.querySelectorAll('#messages li')].map(e => e.dataset.author + ': ' + e.querySelector('.text').textContent))`
	want := `["bob: hi from bob"]`
	for _, p := range []*page{alice, bob} {
		if got := eval[string](t, p, messages); got != want {
			t.Errorf("%s shows %s, want %s", p.name, got, want)
		}
	}
	// A page opened now loads the room as it stands (CURRENT view).
	carol := openPage(t, b, room+"&name=carol")
	carol.wait(t, "subscribed", `document.body.dataset.subscribed === 'true'`)
	if got := eval[string](t, carol, messages); got != want {
		t.Errorf("a new page shows %s, want %s", got, want)
	}
}

// testBrowserFeedRestart: feed.html (herald.js) keeps receiving across a
// graceful restart or a crash of the server, on the same address and
// PostgreSQL schema, and shows every event once, in order, including those
// published while it was away.
func testBrowserFeedRestart(t *testing.T, b context.Context, transport string, crash bool) {
	dsn, schema := database(t)
	cfg := server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}}
	in := startInstance(t, cfg)
	addr := strings.TrimPrefix(in.base, "http://")
	feed := openPage(t, b, in.base+"/demo/feed.html?channel=news&cursor=0&transport="+transport)
	feed.wait(t, "a subscription", fmt.Sprintf(`document.body.dataset.subscriptions === '1' && document.querySelector('#status').dataset.transport === %q`, transport))

	var want []int64
	publish := func(in *instance, n int) {
		c := newClients(in.base, http.DefaultClient)
		for range n {
			want = append(want, mustPublish(t, c.events, "news", fmt.Sprintf("event %d", len(want))).Position)
		}
	}
	publish(in, 5)
	feed.wait(t, "the first 5 events", `document.querySelectorAll('#events li').length >= 5`)

	if crash {
		in.kill()
	} else {
		in.stop()
	}
	in2 := startInstanceAt(t, cfg, addr)
	publish(in2, 5) // probably before the page is back: it must replay them
	feed.wait(t, "a new subscription", `Number(document.body.dataset.subscriptions) >= 2`)
	publish(in2, 5)
	feed.wait(t, "all 15 events", `document.querySelectorAll('#events li').length >= 15`)
	feed.expectPositions(t, `[...document.querySelectorAll('#events li')].map(e => e.dataset.position)`, want)
	if got := eval[string](t, feed, `document.querySelector('#status').dataset.transport`); got != transport {
		t.Errorf("the page ended on transport %q, want %q", got, transport)
	}
}

// testBrowserEventSourceCrash: a page using the browser's own EventSource
// (no herald.js) survives a crash of the server: EventSource reconnects by
// itself with Last-Event-ID and the new instance resumes exactly there.
func testBrowserEventSourceCrash(t *testing.T, b context.Context) {
	dsn, schema := database(t)
	cfg := server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}}
	in := startInstance(t, cfg)
	addr := strings.TrimPrefix(in.base, "http://")
	p := openPage(t, b, in.base+"/demo/index.html")
	eval[bool](t, p, `
		window.got = []; window.subscribed = 0;
		window.es = new EventSource('/v1/sse?channel=ticks&event=message&last_event_id=0');
		es.addEventListener('@subscribed', () => subscribed++);
		es.onmessage = (m) => got.push(m.lastEventId + '=' + JSON.parse(m.data).position);
		true`)
	p.wait(t, "the stream", `subscribed === 1`)

	var want []int64
	publish := func(in *instance, n int) {
		c := newClients(in.base, http.DefaultClient)
		for range n {
			want = append(want, mustPublish(t, c.events, "ticks", "tick").Position)
		}
	}
	publish(in, 5)
	p.wait(t, "the first 5 events", `got.length >= 5`)

	in.kill()
	in2 := startInstanceAt(t, cfg, addr)
	publish(in2, 5)
	p.wait(t, "a reconnect", `subscribed >= 2`)
	publish(in2, 5)
	p.wait(t, "all 15 events", `got.length >= 15`)
	// Each SSE id is the event's position.
	p.expectPositions(t, `got.map(s => { const [id, pos] = s.split('='); return id === pos ? pos : 'id ' + id + ' != position ' + pos; })`, want)
	if n := eval[int](t, p, `es.readyState`); n != 1 {
		t.Errorf("EventSource readyState = %d, want 1 (OPEN)", n)
	}
}

// testBrowserLongPoll: herald.js delivers over long-polling when told to,
// when 'auto' finds neither WebSocket nor EventSource, and when both keep
// failing to open; publishing then goes over REST.
func testBrowserLongPoll(t *testing.T, b context.Context) {
	in := memoryInstance(t)
	c := newClients(in.base, http.DefaultClient)

	feed := openPage(t, b, in.base+"/demo/feed.html?channel=lp&cursor=0&transport=longpoll")
	feed.wait(t, "a long-poll subscription", `document.body.dataset.subscribed === 'true' && document.querySelector('#status').dataset.transport === 'longpoll'`)
	var want []int64
	for range 3 {
		want = append(want, mustPublish(t, c.events, "lp", "polled").Position)
	}
	feed.wait(t, "3 events", `document.querySelectorAll('#events li').length >= 3`)
	feed.do(t, chromedp.SetValue(chromedp.CSS("#publish-text"), "from the page"), chromedp.Click(chromedp.CSS("#publish-send")))
	feed.wait(t, "its own event", `document.querySelectorAll('#events li').length >= 4`)
	want = append(want, want[len(want)-1]+1)
	feed.expectPositions(t, `[...document.querySelectorAll('#events li')].map(e => e.dataset.position)`, want)

	// 'auto' without WebSocket and EventSource falls back to long-poll,
	// even after the page publishes.
	p := openPage(t, b, in.base+"/demo/index.html")
	eval[bool](t, p, `(async () => {
		delete window.WebSocket; delete window.EventSource;
		const { Herald, text } = await import('/herald.js');
		window.h = new Herald();
		window.got = [];
		h.subscribe(['auto'], { cursor: '0', onEvent: (ev) => got.push(text(ev)) });
		const ev = await h.publish('auto', 'first');
		return h.transport === 'longpoll' && ev.channel === 'auto';
	})()`)
	mustPublish(t, c.events, "auto", "second")
	p.wait(t, "both events", `got.join(',') === 'first,second' && h.transport === 'longpoll'`)

	// 'auto' also falls back when the streams exist but never open (a
	// proxy in the way) while the server answers HTTP.
	p2 := openPage(t, b, in.base+"/demo/index.html")
	eval[bool](t, p2, `(async () => {
		window.WebSocket = class { constructor() { setTimeout(() => this.onclose?.({ code: 1006 }), 10); } send() {} close() {} };
		WebSocket.OPEN = 1;
		window.EventSource = class { constructor() { setTimeout(() => this.onerror?.(new Event('error')), 10); } addEventListener() {} close() {} };
		const { Herald, text } = await import('/herald.js');
		window.tried = [];
		window.h = new Herald({ twoWay: true, minDelay: 20, onStatus: (s) => tried.push(s.transport) });
		window.got = [];
		h.subscribe(['blocked'], { cursor: '0', onEvent: (ev) => got.push(text(ev)) });
		return true;
	})()`)
	mustPublish(t, c.events, "blocked", "through")
	p2.wait(t, "the event over long-poll", `got.join(',') === 'through' && h.transport === 'longpoll'`)
	if got := eval[string](t, p2, `[...new Set(tried)].join(',')`); got != "websocket,sse,longpoll" {
		t.Errorf("transports tried: %s, want websocket,sse,longpoll", got)
	}
}

// testBrowserAutoUpgrade: with transport 'auto' a page that only listens
// uses SSE, and moves to a WebSocket when it publishes, without losing or
// repeating an event.
func testBrowserAutoUpgrade(t *testing.T, b context.Context) {
	in := memoryInstance(t)
	c := newClients(in.base, http.DefaultClient)
	feed := openPage(t, b, in.base+"/demo/feed.html?channel=up&cursor=0&transport=auto")
	transportIs := func(tr string) string {
		return fmt.Sprintf(`document.querySelector('#status').dataset.transport === %q && document.querySelector('#status').dataset.state === 'open'`, tr)
	}
	feed.wait(t, "SSE", `document.body.dataset.subscribed === 'true' && `+transportIs("sse"))
	var want []int64
	for range 2 {
		want = append(want, mustPublish(t, c.events, "up", "before").Position)
	}
	feed.wait(t, "2 events", `document.querySelectorAll('#events li').length >= 2`)
	feed.do(t, chromedp.SetValue(chromedp.CSS("#publish-text"), "from the page"), chromedp.Click(chromedp.CSS("#publish-send")))
	feed.wait(t, "a WebSocket", transportIs("websocket"))
	feed.wait(t, "its own event", `document.querySelectorAll('#events li').length >= 3`)
	want = append(want, want[len(want)-1]+1)
	for range 2 {
		want = append(want, mustPublish(t, c.events, "up", "after").Position)
	}
	feed.wait(t, "5 events", `document.querySelectorAll('#events li').length >= 5`)
	feed.expectPositions(t, `[...document.querySelectorAll('#events li')].map(e => e.dataset.position)`, want)
}

// testBrowserHistory: history.html pages forward and back with the cursors
// the REST API returns.
func testBrowserHistory(t *testing.T, b context.Context) {
	in := memoryInstance(t)
	c := newClients(in.base, http.DefaultClient)
	var pos []string
	for i := range 5 {
		pos = append(pos, strconv.FormatInt(mustPublish(t, c.events, "h/1", fmt.Sprint("event ", i)).Position, 10))
	}
	p := openPage(t, b, in.base+"/demo/history.html?channel=h%2F1&limit=2")
	rows := `[...document.querySelectorAll('#events tr')].map(e => e.dataset.position).join(',')`
	page := func(n int, want []string) {
		t.Helper()
		p.wait(t, fmt.Sprintf("page load %d showing %v", n, want),
			fmt.Sprintf(`document.body.dataset.loaded === '%d' && !document.body.dataset.loading && %s === %q`, n, rows, strings.Join(want, ",")))
	}
	page(1, pos[0:2])
	p.do(t, chromedp.Click(chromedp.CSS("#next")))
	page(2, pos[2:4])
	p.do(t, chromedp.Click(chromedp.CSS("#next")))
	page(3, pos[4:5])
	if more := eval[bool](t, p, `document.querySelector('#next').disabled`); !more {
		t.Error("next is enabled on the last page")
	}
	p.do(t, chromedp.Click(chromedp.CSS("#prev")))
	page(4, pos[2:4])
	p.do(t,
		chromedp.SetValue(chromedp.CSS("#direction"), "backward"),
		chromedp.Click(chromedp.CSS("#load")),
	)
	page(5, []string{pos[4], pos[3]})
	p.do(t, chromedp.Click(chromedp.CSS("#next")))
	page(6, []string{pos[2], pos[1]})
}

// newBrowser starts one headless Chromium for the test. Without one on
// PATH the test fails with how to install it, unless HERALD_SKIP_BROWSER=1.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if os.Getenv("HERALD_SKIP_BROWSER") == "1" {
		t.Skip("HERALD_SKIP_BROWSER=1: skipping the headless Chromium tests")
	}
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no Chromium on PATH (looked for chromium, chromium-browser, google-chrome): " +
			"install it with `apt-get install -y chromium` (scripts/test does so when run as root), " +
			"or set HERALD_SKIP_BROWSER=1 to skip the browser tests")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		// Keep it off the (closed) network.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		closeCtx, cancelClose := context.WithTimeout(ctx, 10*time.Second)
		defer cancelClose()
		_ = chromedp.Cancel(closeCtx) // closes the browser gracefully
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// page is one browser tab. It keeps the page's console messages and uncaught
// exceptions and prints them if the test fails, and collects problems (see
// expectClean).
type page struct {
	name string
	ctx  context.Context

	mu       sync.Mutex
	logs     []string
	problems []string          // console errors, exceptions, HTTP errors, failed loads
	requests map[string]string // network request id -> URL
	loaded   []string          // URLs answered (any status)
}

func openPage(t *testing.T, browser context.Context, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	p := &page{name: url, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // creates the tab; no timeout on this first run
		t.Fatalf("open a tab: %v", err)
	}
	if err := chromedp.Listen(ctx, p.listen); err != nil {
		t.Fatalf("listen to the tab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, l := range p.logs {
				t.Logf("%s console: %s", p.name, l)
			}
		}
	})
	p.do(t, chromedp.Navigate(url))
	return p
}

func (p *page) listen(ev any) {
	var line string
	problem := false
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			if len(a.Value) > 0 {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		line = string(ev.Type) + ": " + strings.Join(args, " ")
		problem = ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert
	case *runtime.EventExceptionThrown:
		line = "exception: " + ev.ExceptionDetails.Text
		if e := ev.ExceptionDetails.Exception; e != nil {
			line += " " + e.Description
		}
		problem = true
	case *cdplog.EventEntryAdded: // the browser's own messages: failed loads, CSP, ...
		line = fmt.Sprintf("browser %s: %s %s", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
		problem = ev.Entry.Level == cdplog.EntryLevelError
	case *network.EventRequestWillBeSent:
		if p.requests == nil {
			p.requests = map[string]string{}
		}
		p.requests[string(ev.RequestID)] = ev.Request.URL
		return
	case *network.EventResponseReceived:
		p.loaded = append(p.loaded, ev.Response.URL)
		if ev.Response.Status < 400 {
			return
		}
		line = fmt.Sprintf("HTTP %d %s", ev.Response.Status, ev.Response.URL)
		problem = true
	case *network.EventLoadingFailed:
		if ev.Canceled {
			return // the page closed a stream or navigated away
		}
		line = fmt.Sprintf("load failed: %s %s", ev.ErrorText, p.requests[string(ev.RequestID)])
		problem = true
	default:
		return
	}
	p.logs = append(p.logs, line)
	if problem {
		p.problems = append(p.problems, line)
	}
}

// expectClean fails the test when the page logged an error, threw, or a
// request failed or was answered with an HTTP error (a 404 favicon, say).
func (p *page) expectClean(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, problem := range p.problems {
		t.Errorf("%s: %s", p.name, problem)
	}
}

// do runs actions in the tab, failing the test after 20s.
func (p *page) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) in the tab.
func eval[T any](t *testing.T, p *page, expr string) T {
	t.Helper()
	v, err := tryEval[T](p, expr)
	if err != nil {
		t.Fatalf("%s: evaluate %s: %v", p.name, expr, err)
	}
	return v
}

func tryEval[T any](p *page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// wait polls a JavaScript condition until it holds, failing after 20s with
// what the page shows.
func (p *page) wait(t *testing.T, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := tryEval[bool](p, cond)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			text, _ := tryEval[string](p, `document.body ? JSON.stringify(document.body.dataset) + '\n' + document.body.innerText.slice(0, 3000) : ''`)
			t.Fatalf("%s: no %s within 20s (%s; last error: %v)\npage text:\n%s", p.name, what, cond, err, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectPositions checks that expr (a list of positions in the page) is
// exactly want: every event once, in order, none missing.
func (p *page) expectPositions(t *testing.T, expr string, want []int64) {
	t.Helper()
	got := eval[[]string](t, p, expr)
	w := make([]string, len(want))
	for i, pos := range want {
		w[i] = strconv.FormatInt(pos, 10)
	}
	if strings.Join(got, ",") != strings.Join(w, ",") {
		t.Fatalf("%s shows positions\n  %v\nwant exactly\n  %v", p.name, got, w)
	}
}

// startInstanceAt is startInstance on a fixed address, for a restart on the
// address clients already use. It retries while the port is still held.
func startInstanceAt(t *testing.T, cfg server.Config, addr string) *instance {
	t.Helper()
	cfg.Addr = addr
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Hub.PollInterval == 0 {
		cfg.Hub.PollInterval = 200 * time.Millisecond
	}
	var srv *server.Server
	var err error
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if srv, err = server.New(t.Context(), cfg); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart on %s: %v", addr, err)
		}
	}
	return runInstance(t, srv)
}
