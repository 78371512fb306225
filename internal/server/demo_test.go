package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
)

// TestDemoPages checks the demo pages as a visitor sees them in headless
// Chromium: no console error, no failed or 4xx/5xx request (favicon
// included) on any page, on a fresh server and on one with events; the
// feed shows a channel's recent history and continues live from it, each
// event once; empty channels say how to publish; chat shows authors and
// times.
func TestDemoPages(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)

	t.Run("clean", func(t *testing.T) {
		t.Parallel()
		in := memoryInstance(t)
		check := func(path, ready string) {
			t.Helper()
			p := openPage(t, b, in.base+path)
			p.wait(t, "the page ready", ready)
			// The icon the page links, and the one browsers ask for anyway.
			for _, icon := range []string{`document.querySelector('link[rel=icon]')?.href ?? '/favicon.ico'`, `'/favicon.ico'`} {
				ok := eval[bool](t, p, `fetch(`+icon+`).then(r => r.ok && r.headers.get('Content-Type').startsWith('image/'))`)
				if !ok {
					t.Errorf("%s: icon %s not served as an image", path, icon)
				}
			}
			p.expectClean(t)
		}
		subscribed := `document.body.dataset.subscribed === 'true'`
		loaded := `document.body.dataset.loaded === '1'`
		// A fresh server: no channel exists yet.
		check("/", `document.querySelector('#shell-publish .command') !== null`)
		check("/demo/chat.html?room=lobby", subscribed)
		check("/demo/feed.html?channel=feed", subscribed+` && !document.querySelector('#empty').hidden`)
		check("/demo/history.html?channel=feed", loaded)
		check("/demo/history.html", `document.querySelector('#channels li') !== null`)
		// With events.
		restPublish(t, in.base, "feed", `{"price":42}`)
		restPublish(t, in.base, "chat:lobby", `{"name":"alice","text":"hi"}`)
		check("/demo/chat.html?room=lobby", subscribed+` && document.querySelectorAll('#messages li').length === 1`)
		check("/demo/feed.html?channel=feed", subscribed+` && document.querySelectorAll('#events li').length === 1`)
		check("/demo/history.html?channel=feed", loaded+` && document.querySelectorAll('#events tr').length === 1`)
	})

	t.Run("feed-history", func(t *testing.T) {
		t.Parallel()
		in := memoryInstance(t)
		c := newClients(in.base, http.DefaultClient)
		var want []int64
		for i := range 60 {
			want = append(want, mustPublish(t, c.events, "busy", fmt.Sprint("event ", i)).Position)
			mustPublish(t, c.events, "other", "elsewhere") // interleaved positions
		}
		feed := openPage(t, b, in.base+"/demo/feed.html?channel=busy")
		feed.wait(t, "the last 50 events", `document.body.dataset.subscribed === 'true' && document.querySelectorAll('#events li').length === 50`)
		positions := `[...document.querySelectorAll('#events li')].map(e => e.dataset.position)`
		feed.expectPositions(t, positions, want[10:])
		for range 3 {
			want = append(want, mustPublish(t, c.events, "busy", "live").Position)
		}
		feed.wait(t, "53 events", `document.querySelectorAll('#events li').length >= 53`)
		feed.expectPositions(t, positions, want[10:])
		if got := eval[string](t, feed, `document.querySelector('#summary').textContent`); !strings.Contains(got, "last 50") {
			t.Errorf("summary %q does not say the page shows the last 50 events", got)
		}
		feed.expectClean(t)
	})

	t.Run("feed-empty", func(t *testing.T) {
		t.Parallel()
		in := memoryInstance(t)
		feed := openPage(t, b, in.base+"/demo/feed.html?channel=news%2Fsports")
		feed.wait(t, "the empty state", `document.body.dataset.subscribed === 'true' && !document.querySelector('#empty').hidden`)
		cmd := eval[string](t, feed, `document.querySelector('#empty .command code').textContent`)
		want := "curl --data hello " + in.base + "/v1/channels/news%2Fsports/events"
		if cmd != want {
			t.Errorf("empty state command %q, want %q", cmd, want)
		}
		// The command works as shown, and the event replaces the empty state.
		resp, err := http.Post(in.base+"/v1/channels/news%2Fsports/events", "application/x-www-form-urlencoded", strings.NewReader("hello"))
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("the command's request: %v %v", resp, err)
		}
		resp.Body.Close()
		feed.wait(t, "the event", `document.querySelector('#empty').hidden && document.querySelector('#events li .payload').textContent === 'hello'`)
		feed.expectClean(t)
	})

	t.Run("connection-state", func(t *testing.T) {
		t.Parallel()
		in := memoryInstance(t)
		addr := strings.TrimPrefix(in.base, "http://")
		for _, c := range []struct{ transport, label string }{
			{"sse", "Server-Sent Events"}, {"websocket", "WebSocket"}, {"longpoll", "long-polling"},
		} {
			p := openPage(t, b, in.base+"/demo/feed.html?channel=s&transport="+c.transport)
			p.wait(t, "Live over "+c.label, fmt.Sprintf(`document.querySelector('#status').textContent === 'Live%s'`, c.label))
		}
		p := openPage(t, b, in.base+"/demo/feed.html?channel=s")
		pill := `document.querySelector('#status').textContent`
		p.wait(t, "Live", pill+` === 'LiveServer-Sent Events'`)
		in.stop()
		p.wait(t, "Reconnecting", `/^Reconnecting in \d+ sServer-Sent Events$/.test(`+pill+`)`)
		startInstanceAt(t, server.Config{}, addr)
		p.wait(t, "Live again", pill+` === 'LiveServer-Sent Events'`)
	})

	t.Run("chat-authors-times", func(t *testing.T) {
		t.Parallel()
		in := memoryInstance(t)
		restPublish(t, in.base, "chat:r", `{"name":"alice","text":"hello"}`)
		p := openPage(t, b, in.base+"/demo/chat.html?room=r&name=bob")
		p.wait(t, "alice's message", `document.body.dataset.subscribed === 'true' && document.querySelectorAll('#messages li').length === 1`)
		got := eval[map[string]string](t, p, `(li => ({
			author: li.querySelector('.author').textContent,
			time: li.querySelector('time').textContent,
			datetime: li.querySelector('time').dateTime,
			title: li.querySelector('time').title,
			status: document.querySelector('#status').textContent,
		}))(document.querySelector('#messages li'))`)
		if got["author"] != "alice" || got["time"] == "" || got["title"] == "" {
			t.Errorf("message shows %v", got)
		}
		if ts, err := time.Parse(time.RFC3339Nano, got["datetime"]); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("message time %q: %v", got["datetime"], err)
		}
		if !strings.Contains(got["status"], "Live") || !strings.Contains(got["status"], "WebSocket") {
			t.Errorf("connection shows %q, want Live and WebSocket", got["status"])
		}
		p.expectClean(t)
	})
}

// TestDemoScreenshots writes screenshots of the demo pages, at a desktop
// and a phone width, into $HERALD_SCREENSHOTS (skipped when unset), for
// people to look at: `HERALD_SCREENSHOTS=/tmp/shots scripts/test -run
// TestDemoScreenshots ./internal/server/`.
func TestDemoScreenshots(t *testing.T) {
	dir := os.Getenv("HERALD_SCREENSHOTS")
	if dir == "" {
		t.Skip("set HERALD_SCREENSHOTS to a directory to write screenshots of the demo pages")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t)
	in := memoryInstance(t)
	chat := func(name, text string) string {
		b, _ := json.Marshal(map[string]string{"name": name, "text": text})
		return string(b)
	}
	for _, m := range [][2]string{
		{"alice", "Morning! Is the deploy still on for 10:00?"},
		{"bob", "Yes. I'll watch the dashboards while it rolls out."},
		{"alice", "Great, ping me if anything looks off."},
		{"carol", "Release notes are in the wiki; feedback welcome."},
	} {
		restPublishTyped(t, in.base, "chat:lobby", "message", chat(m[0], m[1]))
	}
	for i, d := range []string{
		`{"symbol":"HRLD","price":41.2,"change":-0.4}`,
		`order 1042 shipped`,
		`{"symbol":"HRLD","price":42.0,"change":0.8}`,
		`{"user":"alice","action":"login","ip":"192.0.2.10"}`,
		`build #311 passed in 2m14s`,
	} {
		restPublishTyped(t, in.base, "feed", []string{"price", "order.shipped", "price", "audit", "ci"}[i], d)
	}
	shots := []struct{ name, path, ready string }{
		{"index", "/demo/", `document.querySelector('#shell-publish .command') !== null`},
		{"chat", "/demo/chat.html?room=lobby&name=bob", `document.querySelectorAll('#messages li').length === 4`},
		{"feed", "/demo/feed.html?channel=feed", `document.querySelectorAll('#events li').length === 5 && document.querySelector('#status').dataset.state === 'open'`},
		{"feed-empty", "/demo/feed.html?channel=alerts", `!document.querySelector('#empty').hidden`},
		{"history", "/demo/history.html?channel=feed", `document.body.dataset.loaded === '1' && document.querySelector('#channels a') !== null`},
		{"history-none", "/demo/history.html?channel=nothing", `document.body.dataset.loaded === '1'`},
	}
	for _, size := range []struct {
		name          string
		width, height int64
	}{{"desktop", 1366, 860}, {"phone", 390, 844}} {
		for _, s := range shots {
			p := openPage(t, b, "about:blank")
			p.do(t, chromedp.EmulateViewport(size.width, size.height), chromedp.Navigate(in.base+s.path))
			p.wait(t, s.name, s.ready)
			ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, s.name+"-"+size.name+".png")
			if err := os.WriteFile(file, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", file)
			p.expectClean(t)
		}
	}
}

// restPublishTyped publishes raw data with a type over REST.
func restPublishTyped(t *testing.T, base, channel, typ, data string) {
	t.Helper()
	restCall(t, "POST", restEvents(base, channel)+"?type="+url.QueryEscape(typ), "text/plain", []byte(data)).ok(t, http.StatusCreated, &heraldv1.PublishResponse{})
}
