package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// TestConsole opens the admin console in headless Chromium while two
// instances serve a workload (an SSE subscriber, a publisher), and checks
// what an operator sees: both instances, the charts drawn with data, the
// channel with its events, this instance's connection; then tails the
// channel and disconnects the connection from the page. It saves
// screenshots (into $HERALD_SCREENSHOTS when set, else the test's temp
// folder) for a person to look at.
func TestConsole(t *testing.T) {
	t.Parallel()
	browser := newBrowser(t)
	_, schema := pgtest.Schema(t)
	dsn := pgtest.SchemaURL(t, schema)
	cfg := func() server.Config {
		return server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema},
			AdminAddr: "127.0.0.1:0", Metrics: metrics.New(), Version: "v0.0.0-test", HeartbeatInterval: 300 * time.Millisecond}
	}
	a := startInstance(t, cfg())
	startInstance(t, cfg())
	c := newClients(a.base, http.DefaultClient)
	mustPublish(t, c.events, "orders.eu", `{"id":0}`)
	sse := getSSE(t, http.DefaultClient, a.base+"/v1/sse?channel=orders.eu", nil)
	for sse.next(t).event != "@subscribed" {
	}
	go func() { // keep the SSE stream read
		for {
			if _, err := sse.r.next(); err != nil {
				return
			}
		}
	}()

	// A steady publisher for the charts, bounded in time.
	ctx, stop := context.WithTimeout(t.Context(), 60*time.Second)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ctx.Err() == nil; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ch := "orders.eu"
			if i%3 == 0 {
				ch = "metrics.cpu"
			}
			_, _ = c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: ch, Data: fmt.Appendf(nil, `{"n":%d}`, i)}))
		}
	})

	p := openPage(t, browser, "http://"+a.srv.AdminAddr()+"/")
	p.do(t, chromedp.EmulateViewport(1440, 1500))
	p.wait(t, "both instances", `document.querySelectorAll('#instances tbody tr').length === 2`)
	p.wait(t, "four charts", `document.querySelectorAll('.uplot').length === 4`)
	p.wait(t, "the ready pill", `document.getElementById('ready').textContent === 'ready'`)
	p.wait(t, "the SSE connection", `[...document.querySelectorAll('#connections tbody td')].some(td => td.textContent === 'sse')`)
	p.wait(t, "the channels", `document.querySelector('#channels tbody').innerText.includes('orders.eu') && document.querySelector('#channels tbody').innerText.includes('metrics.cpu')`)
	p.wait(t, "events per second in the KPIs", `(() => { const k = [...document.querySelectorAll('.kpi')].find(k => k.innerText.includes('events in /s')); return k && parseFloat(k.querySelector('.v').textContent) > 0 })()`)
	p.wait(t, "a delivery lag figure", `(() => { const k = [...document.querySelectorAll('.kpi')].find(k => k.innerText.includes('lag p99')); return k && !isNaN(parseFloat(k.querySelector('.v').textContent)) })()`)
	time.Sleep(3 * time.Second) // let the charts gather a few seconds of points for the screenshot
	shot(t, p, "console-overview.png")

	// The inspector tails a channel live.
	// Clicked in the page, in one step: the tables re-render every few
	// seconds, and a node found by one DevTools call can be gone by the
	// next (chromedp.Click: "Could not find node with given id").
	click := func(what, selector string) {
		t.Helper()
		p.wait(t, what, `(() => { const b = document.querySelector(`+"`"+selector+"`"+`); if (!b) return false; b.click(); return true })()`)
	}
	click("the tail button", `button[data-tail="orders.eu"]`)
	p.wait(t, "tailed events", `document.querySelectorAll('#tail-events tbody tr').length >= 3 && document.getElementById('tail-state').textContent.startsWith('live')`)
	shot(t, p, "console-tail.png")

	// Disconnect the SSE subscriber (the first connection listed that is
	// not the inspector's own tail, which goes through the admin listener
	// to the same instance and shows too).
	click("the disconnect button", `#connections tbody tr:first-child button[data-disconnect]`)
	p.wait(t, "one connection fewer", `document.querySelectorAll('#connections tbody button[data-disconnect]').length === 1`)
}

func shot(t *testing.T, p *page, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("HERALD_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// TestConsoleSignIn: with authentication on, the console asks for a
// credential; a key without the admin scope is refused, and an admin token
// shows the instance.
func TestConsoleSignIn(t *testing.T) {
	t.Parallel()
	browser := newBrowser(t)
	in, key := authInstance(t, func(c *server.Config) { c.AdminAddr = "127.0.0.1:0"; c.Metrics = metrics.New() })
	p := openPage(t, browser, "http://"+in.srv.AdminAddr()+"/admin/")
	p.wait(t, "the sign-in form", `!document.getElementById('auth').hidden && document.getElementById('error').dataset.code === 'unauthenticated'`)
	signIn := func(cred string) {
		p.do(t, chromedp.SetValue(chromedp.CSS("#token"), cred), chromedp.Click(chromedp.CSS("#auth button")))
	}
	signIn(key) // publish/subscribe/history only
	p.wait(t, "the refusal of a key without the admin scope", `!document.getElementById('auth').hidden && document.getElementById('error').dataset.code === 'permission_denied'`)
	signIn(token(t, "root", time.Hour, jwt.MapClaims{"scopes": []string{"admin"}}))
	p.wait(t, "this instance listed", `document.querySelectorAll('#instances tbody tr.self').length === 1`)
	p.wait(t, "the ready pill", `document.getElementById('ready').textContent === 'ready' && document.getElementById('error').hidden`)
}
