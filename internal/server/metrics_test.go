package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// scrape is one parsed /metrics answer.
type scrape struct {
	raw []byte
	mfs map[string]*dto.MetricFamily
}

func scrapeMetrics(t *testing.T, adminAddr string) scrape {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v\n%s", resp.StatusCode, err, raw)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, raw)
	}
	return scrape{raw: raw, mfs: mfs}
}

// value returns the value of the series name{labels} (a counter's, a
// gauge's, or a histogram's count), and whether it exists.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	mf := s.mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func (s scrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in /metrics", name, labels)
	}
	return v
}

// TestMetrics runs a known workload on PostgreSQL (two subscribers, over
// SSE and a Connect stream; publishes that succeed, repeat an idempotency
// key and are refused) and checks that /metrics on the admin listener
// moved as it should: connections and subscriptions by transport,
// published events by result, publish latency by protocol, delivery lag
// per transport, the writer's batches, the hub's reads and head, the pool,
// the Go runtime; then that closing the subscribers brings the gauges
// back. promtool check metrics must accept the output.
func TestMetrics(t *testing.T) {
	t.Parallel()
	dsn, schema := database(t)
	m := metrics.New()
	in := startInstance(t, server.Config{
		DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema},
		AdminAddr: "127.0.0.1:0", Metrics: m,
		Services: services.Config{NoAutoCreate: true},
	})
	admin := in.srv.AdminAddr()
	c := newClients(in.base, http.DefaultClient)
	ctx := t.Context()
	if _, err := c.channels.CreateChannel(ctx, connect.NewRequest(&heraldv1.CreateChannelRequest{Name: "m"})); err != nil {
		t.Fatal(err)
	}

	before := scrapeMetrics(t, admin)
	for _, tr := range []string{"sse", "connect", "ws", "grpc"} {
		if v := before.must(t, "herald_connections_open", "transport", tr); v != 0 {
			t.Errorf("connections_open{transport=%q} = %v before any connection", tr, v)
		}
	}

	sse := getSSE(t, http.DefaultClient, in.base+"/v1/sse?channel=m", nil)
	for sse.next(t).event != "@subscribed" { // after the retry field
	}
	st := subscribe(t, c.events, []string{"m"}, nil)
	st.next(t) // subscribed

	opened := scrapeMetrics(t, admin)
	for _, tr := range []string{"sse", "connect"} {
		if v := opened.must(t, "herald_connections_open", "transport", tr); v != 1 {
			t.Errorf("connections_open{transport=%q} = %v, want 1", tr, v)
		}
		if v := opened.must(t, "herald_subscriptions_open", "transport", tr); v != 1 {
			t.Errorf("subscriptions_open{transport=%q} = %v, want 1", tr, v)
		}
	}

	const n = 20
	for i := range n {
		req := &heraldv1.PublishRequest{Channel: "m", Data: []byte(fmt.Sprintf(`"e%d"`, i)), IdempotencyKey: fmt.Sprintf("k%d", i)}
		if _, err := c.events.Publish(ctx, connect.NewRequest(req)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// One duplicate (same key, same data), one refused (no such channel).
	if resp, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "m", Data: []byte(`"e0"`), IdempotencyKey: "k0"})); err != nil || !resp.Msg.Duplicate {
		t.Fatalf("duplicate publish: %v %v", resp, err)
	}
	if _, err := c.events.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{Channel: "nowhere", Data: []byte(`1`)})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("publish to a missing channel: %v, want not_found", err)
	}
	st.events(t, n)
	for got := 0; got < n; {
		if ev := sse.next(t); ev.hasID && ev.event != "@subscribed" {
			got++
		}
	}

	var after scrape
	waitFor(t, func() bool { // the SSE handler records after its flush
		after = scrapeMetrics(t, admin)
		v, _ := after.value("herald_delivery_lag_seconds", "transport", "sse")
		return v >= n
	})
	checks := []struct {
		name   string
		labels []string
		want   func(float64) bool
		says   string
	}{
		{"herald_events_published_total", []string{"result", "ok"}, eq(n), "== 20"},
		{"herald_events_published_total", []string{"result", "duplicate"}, eq(1), "== 1"},
		{"herald_events_published_total", []string{"result", "refused"}, eq(1), "== 1"},
		{"herald_events_published_total", []string{"result", "failed"}, eq(0), "== 0"},
		{"herald_publish_duration_seconds", []string{"protocol", "connect"}, eq(n + 1), "count == 21 (ok and duplicate)"},
		{"herald_delivery_lag_seconds", []string{"transport", "connect"}, eq(n), "count == 20"},
		{"herald_delivery_lag_seconds", []string{"transport", "sse"}, eq(n), "count == 20"},
		{"herald_writer_batch_events", nil, between(1, n+2), "count in [1, 22]"},
		{"herald_writer_commit_duration_seconds", nil, between(1, n+2), "count in [1, 22]"},
		{"herald_writer_queue_depth", nil, eq(0), "== 0"},
		{"herald_hub_events_dispatched_total", nil, eq(n), "== 20"},
		{"herald_hub_head_position", nil, eq(n), "== 20"},
		{"herald_hub_wakeups_total", []string{"cause", "notify"}, atLeast(1), ">= 1"},
		{"herald_db_pool_total_connections", nil, atLeast(1), ">= 1"},
		{"herald_db_pool_acquires_total", nil, atLeast(n), ">= 20"},
		{"herald_ready", nil, eq(1), "== 1"},
		{"go_goroutines", nil, atLeast(1), ">= 1"},
		{"process_resident_memory_bytes", nil, atLeast(1), "> 0"},
	}
	for _, c := range checks {
		v, ok := after.value(c.name, c.labels...)
		if !ok || !c.want(v) {
			t.Errorf("%s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.says)
		}
	}
	// Commit to write: the lag of a local delivery is well under a second.
	if h := histogram(after, "herald_delivery_lag_seconds", "sse"); h.GetSampleSum() <= 0 || h.GetSampleSum() > n*1.0 {
		t.Errorf("delivery lag sum over SSE = %v s for %d events", h.GetSampleSum(), n)
	}

	// The subscribers leave: the gauges come back to 0.
	st.stop()
	sse.resp.Body.Close()
	waitFor(t, func() bool {
		s := scrapeMetrics(t, admin)
		return s.must(t, "herald_connections_open", "transport", "sse") == 0 &&
			s.must(t, "herald_connections_open", "transport", "connect") == 0 &&
			s.must(t, "herald_subscriptions_open", "transport", "sse") == 0 &&
			s.must(t, "herald_subscriptions_open", "transport", "connect") == 0
	})

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool not installed (Debian package prometheus; scripts/test installs it): skipping the lint of /metrics")
		}
		cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(after.raw)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
		// The alert rules recommended in docs/operations.md.
		doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
		if err != nil {
			t.Fatal(err)
		}
		_, rest, found := strings.Cut(string(doc), "<!-- promtool: rules -->\n```yaml\n")
		rules, _, closed := strings.Cut(rest, "```")
		if !found || !closed {
			t.Fatal("docs/operations.md has no rules block after <!-- promtool: rules -->")
		}
		path := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(t.Context(), promtool, "check", "rules", path).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules (docs/operations.md): %v\n%s", err, out)
		}
	})
}

// TestMetricsSlowConsumerAndRefusals checks the counters of what goes
// wrong or is cut short: a connection refused by the instance limit, a
// subscriber ended as a slow consumer, retention removing events, and a
// replay that finds its history truncated; and that the memory log exports
// no writer metrics.
func TestMetricsSlowConsumerAndRefusals(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{
		AdminAddr: "127.0.0.1:0", Metrics: metrics.New(), RetentionInterval: 100 * time.Millisecond,
		Services: services.Config{MaxConnections: 1}, Hub: fanout.Options{QueueSize: 16},
	})
	admin := in.srv.AdminAddr()
	pub := newClients(in.base, h2cClient(), connect.WithGRPC())
	// The subscriber has its own connection with small HTTP/2 windows and
	// does not read until everything is published (as in
	// TestSlowConsumerOverGRPC).
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	small := &http.Client{Transport: &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 64 << 10,
	}}}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	slow, err := newClients(in.base, small, connect.WithGRPC()).events.Subscribe(ctx,
		connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"firehose"}}))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	waitFor(t, func() bool {
		return scrapeMetrics(t, admin).must(t, "herald_subscriptions_open", "transport", "grpc") == 1
	})

	// The second long-lived request is refused by --max-connections.
	s2, err := pub.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"b"}}))
	if err == nil {
		s2.Receive()
		err = s2.Err()
		s2.Close()
	}
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("second stream: %v, want resource_exhausted", err)
	}

	// Straight to the log: every request, unary ones too, counts toward
	// the one connection the subscriber holds.
	data := make([]byte, 32<<10)
	for range 600 {
		if _, errs, err := in.srv.Log().Append(ctx, []eventlog.Publish{{Channel: "firehose", Data: data}}); err != nil || errs[0] != nil {
			t.Fatal(err, errs)
		}
	}
	for slow.Receive() {
	}
	if connect.CodeOf(slow.Err()) != connect.CodeResourceExhausted {
		t.Fatalf("slow subscriber ended with %v, want resource_exhausted", slow.Err())
	}

	// Retention keeps one event of "keep"; a replay from 0 then finds its
	// history truncated.
	if _, err := pub.channels.CreateChannel(ctx, connect.NewRequest(&heraldv1.CreateChannelRequest{
		Name: "keep", Settings: &heraldv1.ChannelSettings{MaxEvents: ptr(int64(1))}})); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mustPublish(t, pub.events, "keep", "x")
	}
	waitFor(t, func() bool {
		v, _ := scrapeMetrics(t, admin).value("herald_retention_events_removed_total")
		return v >= 2
	})
	slow.Close() // frees the one connection slot
	waitFor(t, func() bool {
		return scrapeMetrics(t, admin).must(t, "herald_connections_open", "transport", "grpc") == 0
	})
	replay := subscribe(t, pub.events, []string{"keep"}, ptr(int64(0)))
	if sub := replay.next(t).GetSubscribed(); sub == nil || !sub.HistoryTruncated {
		t.Fatalf("replay from 0 of a trimmed channel: %v, want history_truncated", sub)
	}
	replay.events(t, 1)
	// A resume from a cursor within the hub's window is served from it
	// (once the one connection slot is free again).
	replay.stop()
	waitFor(t, func() bool {
		return scrapeMetrics(t, admin).must(t, "herald_connections_open", "transport", "grpc") == 0
	})
	w1 := mustPublish(t, pub.events, "recent", "1")
	mustPublish(t, pub.events, "recent", "2")
	resume := subscribe(t, pub.events, []string{"recent"}, ptr(w1.GetPosition()))
	resume.next(t)
	resume.events(t, 1)

	s := scrapeMetrics(t, admin)
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		says   string
	}{
		{"herald_connections_refused_total", []string{"transport", "grpc", "reason", "connections_per_instance"}, eq(1), "== 1"},
		{"herald_subscriptions_ended_total", []string{"reason", "slow_consumer"}, eq(1), "== 1"},
		{"herald_retention_runs_total", nil, atLeast(1), ">= 1"},
		{"herald_retention_events_removed_total", nil, atLeast(2), ">= 2"},
		{"herald_replays_total", []string{"source", "log"}, eq(1), "== 1"},
		{"herald_replays_total", []string{"source", "window"}, eq(1), "== 1"},
		{"herald_replayed_events_total", nil, atLeast(1), ">= 1"},
		{"herald_replays_truncated_total", nil, eq(1), "== 1"},
	} {
		if v, ok := s.value(c.name, c.labels...); !ok || !c.want(v) {
			t.Errorf("%s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.says)
		}
	}
	if _, ok := s.value("herald_writer_queue_depth"); ok {
		t.Error("writer_queue_depth exported on the memory log, which has no writer")
	}
	replay.stop()
}

func histogram(s scrape, name, transport string) *dto.Histogram {
	for _, m := range s.mfs[name].GetMetric() {
		for _, lp := range m.Label {
			if lp.GetName() == "transport" && lp.GetValue() == transport {
				return m.Histogram
			}
		}
	}
	return nil
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func atLeast(want float64) func(float64) bool {
	return func(v float64) bool { return v >= want }
}
func between(lo, hi float64) func(float64) bool {
	return func(v float64) bool { return v >= lo && v <= hi }
}
