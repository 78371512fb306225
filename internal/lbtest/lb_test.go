package lbtest_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/pgtest"
)

// TestBehindNginx runs two herald processes on one PostgreSQL schema
// behind nginx (configured from docs/operations.md), with WebSocket and
// SSE subscribers and REST publishers all going through nginx:
//
//  1. events flow; instance A is killed with SIGKILL mid-stream; its
//     subscribers reconnect through nginx (to B) and resume from their
//     last position; publishes that failed are retried with their
//     idempotency key;
//  2. A is restarted and nginx sends requests to it again;
//  3. B gets SIGTERM: its subscribers get their end frames and are
//     receiving through A again within a second; B exits cleanly;
//  4. every subscriber got exactly the events the log holds, in order,
//     once each; every acknowledged publish is in the log once, at the
//     acknowledged position; a publish that failed and was never
//     acknowledged may be in the log, once.
func TestBehindNginx(t *testing.T) {
	t.Parallel()
	nginxBin := findNginx(t)
	example := docsConfig(t)
	start := time.Now()
	bin := heraldBinary(t)
	built := time.Since(start)

	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}

	_, schema := pgtest.Schema(t)
	dbURL := pgtest.SchemaURL(t, schema)
	a := startHerald(t, "A", bin, dbURL, schema, hc)
	b := startHerald(t, "B", bin, dbURL, schema, hc)
	lb := startNginx(t, nginxBin, example, a.addr, b.addr, hc)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("herald A log:\n%s", tail(a.logPath, 20))
			t.Logf("herald B log:\n%s", tail(b.logPath, 20))
			t.Logf("nginx error log:\n%s", tail(lb.errorLog, 20))
			t.Logf("nginx access log:\n%s", tail(lb.accessLog, 30))
		}
	})
	t.Logf("A on %s, B on %s, nginx on %s (%v to build herald, %v to start all)",
		a.addr, b.addr, lb.base, built.Round(time.Millisecond), (time.Since(start) - built).Round(time.Millisecond))

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	channels := []string{"lb-a", "lb-b"}

	// Subscribers connect one after another, so that nginx's round robin
	// puts every other one on A: the kill then breaks some of each kind.
	var subs []*subscriber
	for i := range 6 {
		s := &subscriber{name: fmt.Sprintf("ws%d", i), channels: channels, base: lb.base, hc: hc, session: wsSession}
		if i >= 3 {
			s.name, s.session = fmt.Sprintf("sse%d", i-3), sseSession
		}
		subs = append(subs, s)
		wg.Go(func() { s.run(ctx) })
		waitFor(t, 10*time.Second, s.name+" to subscribe", func() bool { return s.connections() == 1 })
	}

	stopPub := make(chan struct{})
	var pubWG sync.WaitGroup
	var pubs []*publisher
	for i := range 3 {
		p := &publisher{id: i, channels: channels, base: lb.base, hc: hc, failures: map[string]int{}}
		pubs = append(pubs, p)
		pubWG.Go(func() { p.run(ctx, stopPub, 10*time.Millisecond) })
	}
	defer func() { // after a failure: stop retrying too
		cancel()
		pubWG.Wait()
	}()
	acked := func() int {
		n := 0
		for _, p := range pubs {
			n += p.acked()
		}
		return n
	}
	maxAcked := func() int64 {
		var m int64
		for _, p := range pubs {
			p.mu.Lock()
			for _, a := range p.acks {
				m = max(m, a.pos)
			}
			p.mu.Unlock()
		}
		return m
	}
	// caughtUp waits until every subscriber has received position pos.
	caughtUp := func(what string, pos int64) {
		t.Helper()
		waitFor(t, 20*time.Second, what, func() bool {
			for _, s := range subs {
				if s.position() < pos {
					return false
				}
			}
			return true
		})
	}
	conns := func() []int {
		out := make([]int, len(subs))
		for i, s := range subs {
			out[i] = s.connections()
		}
		return out
	}

	waitFor(t, 20*time.Second, "100 acknowledged publishes", func() bool { return acked() >= 100 })
	caughtUp("every subscriber to receive the first 100 events", maxAcked())

	// 1. SIGKILL A mid-stream.
	beforeKill := conns()
	killAt := time.Now()
	a.kill(t)
	ackedAtKill := acked()
	t.Logf("A killed (SIGKILL) after %d acknowledged publishes", ackedAtKill)
	waitFor(t, 20*time.Second, "100 more acknowledged publishes after the kill", func() bool { return acked() >= ackedAtKill+100 })
	caughtUp("every subscriber to receive the events published after the kill", maxAcked())
	var moved []string
	kinds := map[string]bool{}
	for i, s := range subs {
		if m, ok := s.movedAfter(beforeKill[i], killAt); ok {
			moved = append(moved, fmt.Sprintf("%s (%v)", s.name, m))
			kinds[strings.TrimRight(s.name, "0123456789")] = true
		}
	}
	if !kinds["ws"] || !kinds["sse"] {
		t.Fatalf("after the kill, resumed subscribers: %v; want some WebSocket and some SSE ones (nginx alternates instances)", moved)
	}
	t.Logf("after the kill, receiving again through B: %s", strings.Join(moved, "; "))

	// 2. Restart A; wait until nginx sends it requests again (its
	// fail_timeout has passed and a request succeeded).
	a.restart(t)
	back := lb.servedBy(t, hc, a.addr, 20*time.Second)
	t.Logf("A restarted; nginx sent it requests again %v after it was healthy", back.Round(time.Millisecond))

	// 3. SIGTERM B, which now holds every subscriber.
	beforeTerm := conns()
	termAt := time.Now()
	b.terminate(t)
	moves := make([]move, len(subs))
	waitFor(t, 20*time.Second, "every subscriber to receive events through A after B's SIGTERM", func() bool {
		for i, s := range subs {
			var ok bool
			if moves[i], ok = s.movedAfter(beforeTerm[i], termAt); !ok {
				return false
			}
		}
		return true
	})
	var report []string
	for i, s := range subs {
		m := moves[i]
		report = append(report, fmt.Sprintf("%s (%v)", s.name, m))
		if m.event > time.Second {
			t.Errorf("%s received again through A %v after B's SIGTERM; want within 1s (%v)", s.name, m.event, m)
		}
		// B said why and where to resume, then closed: WebSocket with
		// 1012, SSE by ending the response.
		want := ending{reason: "STREAM_END_REASON_SHUTDOWN", close: "close 1012"}
		if strings.HasPrefix(s.name, "sse") {
			want.close = "EOF"
		}
		if len(m.endings) == 0 || m.endings[0].reason != want.reason || m.endings[0].close != want.close {
			t.Errorf("%s: its connections since B's SIGTERM ended %+v; want the first with end %s and %s", s.name, m.endings, want.reason, want.close)
		}
	}
	t.Logf("after B's SIGTERM, receiving again through A: %s", strings.Join(report, "; "))
	if err := b.exited(t, 15*time.Second); err != nil {
		t.Errorf("B after SIGTERM: %v (want exit status 0)\n%s", err, tail(b.logPath, 20))
	}

	// 4. Stop publishing (each publisher gets its last event
	// acknowledged), then compare everything with the log.
	close(stopPub)
	pubWG.Wait()
	log, err := readLog(ctx, hc, lb.base, channels)
	if err != nil {
		t.Fatalf("read the log through nginx: %v", err)
	}
	if len(log) == 0 {
		t.Fatal("the log is empty")
	}
	caughtUp("every subscriber to receive the whole log", log[len(log)-1].Position)
	cancel()
	wg.Wait()

	checkLog(t, log, pubs, subs)
	failures := map[string]int{}
	dups := 0
	for _, p := range pubs {
		for k, v := range p.failures {
			failures[k] += v
		}
		for _, a := range p.acks {
			if a.duplicate {
				dups++
			}
		}
	}
	t.Logf("%d events in the log, %d acknowledged publishes (%d answered duplicate on a retry); failed attempts, retried: %v; nginx answered 502 %d times",
		len(log), acked(), dups, failures, lb.count502(t))
	for _, s := range subs {
		t.Logf("%s: %d connections, %d events", s.name, s.connections(), s.received())
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// checkLog checks the publishers' acknowledgements and the subscribers'
// streams against the log.
func checkLog(t *testing.T, log []*heraldv1.Event, pubs []*publisher, subs []*subscriber) {
	t.Helper()
	// The log: in position order, each publish (idempotency key) once,
	// nothing the publishers did not send.
	at := make(map[string]int64, len(log))
	var prev int64
	for _, ev := range log {
		key := ev.IdempotencyKey
		if ev.Position <= prev {
			t.Fatalf("log: position %d after %d", ev.Position, prev)
		}
		prev = ev.Position
		if p, dup := at[key]; dup {
			t.Errorf("log: publish %s committed twice, at %d and %d", key, p, ev.Position)
		}
		at[key] = ev.Position
		var pub, n int
		if _, err := fmt.Sscanf(key, "p%d-%d", &pub, &n); err != nil || string(ev.Data) != key {
			t.Errorf("log: event %d (key %q, data %q) is not one the publishers sent", ev.Position, key, ev.Data)
		}
	}

	// Every acknowledged publish is in the log at the acknowledged
	// position, and each publisher's events are in the order it sent them.
	acked := map[string]bool{}
	for _, p := range pubs {
		p.mu.Lock()
		acks, errs := slices.Clone(p.acks), slices.Clone(p.errs)
		p.mu.Unlock()
		for _, err := range errs {
			t.Errorf("publisher %d: %v", p.id, err)
		}
		var last int64
		for _, a := range acks {
			key := pubKey(a.pub, a.n)
			acked[key] = true
			if pos, ok := at[key]; !ok {
				t.Errorf("acknowledged publish %s (position %d) is not in the log", key, a.pos)
			} else if pos != a.pos {
				t.Errorf("publish %s acknowledged at position %d, in the log at %d", key, a.pos, pos)
			}
			if a.pos <= last {
				t.Errorf("publisher %d: %s at position %d, after its previous event at %d", p.id, key, a.pos, last)
			}
			last = a.pos
		}
	}
	unacked := 0
	for key := range at {
		if !acked[key] {
			unacked++ // committed, but the publisher never heard: allowed, once
		}
	}

	// Every subscriber got exactly the log, in order: every acknowledged
	// event once, every committed one once, nothing else.
	for _, s := range subs {
		s.mu.Lock()
		evs, errs := slices.Clone(s.events), slices.Clone(s.errs)
		s.mu.Unlock()
		for _, err := range errs {
			t.Errorf("%s: %v", s.name, err)
		}
		for i := range max(len(evs), len(log)) {
			switch {
			case i >= len(evs):
				t.Errorf("%s: got %d events, the log has %d; first missing: position %d", s.name, len(evs), len(log), log[i].Position)
			case i >= len(log):
				t.Errorf("%s: got %d events, the log has %d; first extra: position %d", s.name, len(evs), len(log), evs[i].pos)
			case evs[i].pos != log[i].Position || evs[i].key != log[i].IdempotencyKey:
				t.Errorf("%s: event %d is position %d (%s); the log has %d (%s)", s.name, i, evs[i].pos, evs[i].key, log[i].Position, log[i].IdempotencyKey)
			default:
				continue
			}
			break
		}
	}
	if unacked > 0 {
		t.Logf("%d committed publishes were never acknowledged (allowed, once each)", unacked)
	}
}
