package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/bench"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// instance is a real server on a random port, run until the test ends.
type instance struct {
	srv    *server.Server
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg server.Config) *instance {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Hub.PollInterval = 200 * time.Millisecond
	srv, err := server.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{srv: srv, addr: srv.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-in.done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + in.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return in
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill drops the instance like a crash (failover).
func (in *instance) kill() error {
	in.srv.Kill()
	return nil
}

// backends returns a function starting an instance on each log; n
// instances of the postgres one share a database.
var backends = []struct {
	name string
	new  func(t *testing.T, n int) []*instance
}{
	{"memory", func(t *testing.T, n int) []*instance {
		if n > 1 {
			return nil // instances on the memory log share nothing
		}
		return []*instance{start(t, server.Config{})}
	}},
	{"postgres", func(t *testing.T, n int) []*instance {
		_, schema := pgtest.Schema(t)
		url := pgtest.SchemaURL(t, schema)
		var ins []*instance
		for range n {
			ins = append(ins, start(t, server.Config{DatabaseURL: url, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}}))
		}
		return ins
	}},
}

// short is every scenario with small parameters.
var short = []bench.Config{
	{Scenario: "fanout", Transports: []string{"ws", "sse", "grpc"}, Subs: 30, Rate: 50, Duration: time.Second},
	{Scenario: "fanout", Transports: []string{"ws"}, WSCodec: "proto", Subs: 10, Rate: 50, Duration: 500 * time.Millisecond},
	{Scenario: "publish", Mode: "closed", Publishers: 4, Subs: 3, Duration: time.Second},
	{Scenario: "publish", Mode: "pipelined", Publishers: 2, InFlight: 32, Subs: 3, Duration: time.Second},
	{Scenario: "idle", Transports: []string{"ws"}, Subs: 40, Hold: 200 * time.Millisecond},
	{Scenario: "idle", Transports: []string{"sse"}, Subs: 40},
	{Scenario: "storm", Subs: 30, Rate: 50, Before: 500 * time.Millisecond, After: time.Second},
	{Scenario: "failover", Subs: 20, Rate: 50, Before: 500 * time.Millisecond, After: time.Second},
	{Scenario: "recovery", Missed: 20, Rounds: 2},
}

func name(c bench.Config) string {
	return c.Scenario + "/" + strings.Join(append(c.Transports, c.Mode, c.WSCodec), "")
}

// run runs cfg and returns the report and its JSON form, decoded.
func run(t *testing.T, cfg bench.Config) (bench.Report, map[string]any) {
	t.Helper()
	cfg.Settle = 100 * time.Millisecond
	cfg.ConnectTimeout = 10 * time.Second
	cfg.Drain = 10 * time.Second
	cfg.Progress = -1
	cfg.ServerPID = os.Getpid()
	var log bytes.Buffer
	r, err := bench.Run(t.Context(), &cfg, &log)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	var out bytes.Buffer
	if err := bench.Write(&out, r, true); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, out.String())
	}
	if r.Failed() || testing.Verbose() {
		var table bytes.Buffer
		r.Print(&table)
		t.Logf("%s", table.String())
	}
	return r, m
}

func num(t *testing.T, m map[string]any, path ...string) float64 {
	t.Helper()
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("report has no %v", path)
		}
		v = mm[p]
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("report's %v is %v, not a number", path, v)
	}
	return f
}

// TestScenarios runs every scenario briefly against real servers on both
// logs and expects each to pass its checks and measure something.
func TestScenarios(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range short {
				t.Run(name(c), func(t *testing.T) {
					n := 1
					if c.Scenario == "failover" {
						n = 2
					}
					ins := b.new(t, n)
					if ins == nil {
						t.Skip("failover needs two instances on one log: only PostgreSQL has that")
					}
					for _, in := range ins {
						c.Addrs = append(c.Addrs, in.addr)
					}
					if c.Scenario == "failover" {
						c.Kill = ins[0].kill
					}
					r, m := run(t, c)
					if r.Failed() || m["passed"] != true {
						t.Fatalf("run failed its checks")
					}
					switch c.Scenario {
					case "fanout", "publish":
						acked := num(t, m, "publish", "acked")
						// Each subscriber may also get the warm-up event.
						if got := num(t, m, "delivered", "events"); acked == 0 || got < acked*float64(c.Subs) || got > (acked+1)*float64(c.Subs) {
							t.Errorf("delivered %v events for %v acked × %d subscribers", m["delivered"], acked, c.Subs)
						}
					case "idle":
						if num(t, m, "connect", "subscribed") != float64(c.Subs) || num(t, m, "drops") != 0 {
							t.Errorf("connections: %v, drops %v", m["connect"], m["drops"])
						}
					case "storm", "failover":
						if num(t, m, "resumed") != float64(c.Subs) || num(t, m, "live_again", "p99_ms") <= 0 || num(t, m, "reconnects") < float64(c.Subs) {
							t.Errorf("resumed %v of %d, live again %v, reconnects %v", m["resumed"], c.Subs, m["live_again"], m["reconnects"])
						}
					case "recovery":
						for _, tr := range m["transports"].([]any) {
							if tm := tr.(map[string]any); num(t, tm, "rounds") != float64(c.Rounds) || num(t, tm, "time", "p50_ms") <= 0 {
								t.Errorf("recovery %v", tm)
							}
						}
					}
				})
			}
		})
	}
}

// TestCheckerFailsRun shows that the checker catches an event lost or
// duplicated on its way to a subscriber: the first subscriber drops or
// doubles one event as it receives it from a real server, and the run is
// marked failed with that count.
func TestCheckerFailsRun(t *testing.T) {
	in := start(t, server.Config{})
	for _, tc := range []struct {
		cfg   bench.Config
		path  []string
		count float64
	}{
		{bench.Config{Scenario: "fanout", Subs: 5, Rate: 50, Duration: 500 * time.Millisecond, Inject: bench.Injection{DropNth: 3}}, []string{"loss", "missing"}, 1},
		{bench.Config{Scenario: "fanout", Transports: []string{"sse"}, Subs: 5, Rate: 50, Duration: 500 * time.Millisecond, Inject: bench.Injection{DupNth: 3}}, []string{"loss", "duplicate"}, 1},
		{bench.Config{Scenario: "publish", Subs: 2, Publishers: 2, Duration: 300 * time.Millisecond, Inject: bench.Injection{DupNth: 1}}, []string{"loss", "duplicate"}, 1},
		{bench.Config{Scenario: "storm", Subs: 5, Rate: 50, Before: 300 * time.Millisecond, After: 500 * time.Millisecond, Inject: bench.Injection{DropNth: 30}}, []string{"loss", "missing"}, 1},
	} {
		t.Run(tc.cfg.Scenario, func(t *testing.T) {
			tc.cfg.Addrs = []string{in.addr}
			r, m := run(t, tc.cfg)
			if !r.Failed() || m["passed"] != false {
				t.Fatalf("run with an injected loss passed")
			}
			if got := num(t, m, tc.path...); got != tc.count {
				t.Errorf("%v = %v, want %v", tc.path, got, tc.count)
			}
			var table bytes.Buffer
			r.Print(&table)
			if !strings.Contains(table.String(), "FAIL:") {
				t.Errorf("summary does not say FAIL:\n%s", table.String())
			}
		})
	}
	t.Run("recovery", func(t *testing.T) {
		r, m := run(t, bench.Config{Scenario: "recovery", Addrs: []string{in.addr}, Missed: 10, Rounds: 2, Inject: bench.Injection{DropNth: 5}})
		ws := m["transports"].([]any)[0].(map[string]any)
		if !r.Failed() || num(t, ws, "failed") != 1 || num(t, ws, "loss", "missing") != 1 {
			t.Fatalf("recovery with an injected loss: %v", ws)
		}
	})
}
