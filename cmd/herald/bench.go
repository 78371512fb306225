package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/heraldrt/herald/internal/bench"
)

const benchSummary = `Measure a running Herald from the outside and check that every subscriber got every
acknowledged event exactly once, in order (a run with any loss, duplicate or reordering,
or a failed connection or publish, exits 1). SCENARIO is one of:

  fanout    SUBS subscribers (--transport ws, sse, grpc or a list), RATE events/s over gRPC:
            end-to-end latency p50/p99, delivered events/s, server CPU and RSS (--server-pid)
  publish   --mode closed: PUBLISHERS clients each POSTing one event over REST and waiting
            for its ack; --mode pipelined: PUBLISHERS WebSockets with --in-flight publishes
            outstanding; SUBS WebSocket subscribers check delivery
  idle      hold SUBS connections of one transport: server memory per connection
            (VmRSS of --server-pid, on this machine) and connections dropped
  storm     SUBS WebSocket subscribers, all dropped at once and resumed: live again p99
  failover  two --server URLs: subscribers on the first, publishing to the second; the first
            is killed (--kill-pid or --kill-cmd), subscribers resume on the second
  recovery  --rounds times per transport (ws, sse): --missed events published, then a new
            connection resumes from before them: time to receive them all

Flags left at 0 take the scenario's default, the parameters of the published benchmark
table (docs/benchmarks.md): fanout 1000 subs × 100 events/s for 30s; publish 16 closed-loop
publishers, 10 subs, 10s (pipelined: 1 connection, 256 in flight); idle 10000; storm 1000
subs at 100 events/s; failover 200 subs; recovery 100 missed × 20 rounds. Latencies use
the publish time carried in each event: run the tool on the server's machine. A progress
line goes to stderr every second; the summary (or --json) to stdout. --target centrifugo
runs the same scenarios against a Centrifugo server (v6, JSON protocol), for comparison.`

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg                  bench.Config
		server, transports   string
		killCmd              string
		killPID              int
		asJSON, quiet, noSub bool
	)
	fs := newFlags("bench", "SCENARIO", benchSummary, stdout)
	fs.String(&server, "server", []string{"HERALD_SERVER"}, "http://127.0.0.1:8080", "Herald server URL (http only); failover: two, comma-separated, the one to kill first")
	fs.String(&cfg.Token, "token", []string{"HERALD_TOKEN"}, "", "API key or JWT, sent as Authorization: Bearer (centrifugo: the connection JWT)")
	fs.StringVar(&cfg.Target, "target", "herald", "the server measured: herald, or centrifugo to compare (protocol v2 JSON; ws and sse; publish over its HTTP API)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "centrifugo: its server API key, sent as X-API-Key with each publish")
	fs.StringVar(&transports, "transport", "", "subscriber transports, comma-separated: ws, sse, grpc (fanout); default ws (recovery: ws,sse)")
	fs.StringVar(&cfg.Channel, "channel", "bench", "channel to publish to and subscribe to")
	fs.StringVar(&cfg.WSCodec, "ws-codec", "json", "WebSocket subprotocol of subscribers: json (herald.v1.json) or proto (herald.v1.proto)")
	fs.IntVar(&cfg.Subs, "subs", 0, "subscribers (connections, for idle)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "events published per second (fanout, storm, failover; default 100)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to publish (fanout, publish)")
	fs.IntVar(&cfg.Size, "size", 0, "event data size in bytes, at least 8 (default 256)")
	fs.StringVar(&cfg.Mode, "mode", "", "publish: closed (REST, wait for each ack) or pipelined (WebSocket)")
	fs.IntVar(&cfg.Publishers, "publishers", 0, "publish: publishers (closed) or connections (pipelined); fanout, storm, failover: most publishes in flight")
	fs.IntVar(&cfg.InFlight, "in-flight", 0, "publish pipelined: publishes outstanding per connection (default 256)")
	fs.Float64Var(&cfg.Ramp, "ramp", 0, "new connections per second (default 500)")
	fs.DurationVar(&cfg.Settle, "settle", 0, "wait after connecting before measuring (default 2s)")
	fs.DurationVar(&cfg.Drain, "drain", 0, "longest wait for subscribers to catch up after publishing (default 30s)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 0, "bound on dial + subscribe of one connection, and on a resume (default 30s)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "server process on this machine, to read its CPU time and VmRSS from /proc")
	fs.DurationVar(&cfg.Hold, "hold", 0, "idle: keep the connections open this long after measuring, counting drops")
	fs.BoolVar(&noSub, "no-subscribe", false, "idle: WebSockets connect without subscribing")
	fs.DurationVar(&cfg.Before, "before", 0, "storm, failover: publish this long before the drop (default 3s)")
	fs.DurationVar(&cfg.After, "after", 0, "storm, failover: and this long after it (default 5s)")
	fs.IntVar(&cfg.Missed, "missed", 0, "recovery: events missed before each resume (default 100)")
	fs.IntVar(&cfg.Rounds, "rounds", 0, "recovery: resumes per transport (default 20)")
	fs.IntVar(&killPID, "kill-pid", 0, "failover: send SIGKILL to this process (the first server)")
	fs.StringVar(&killCmd, "kill-cmd", "", "failover: run this shell command to kill the first server")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fs.usage("want one SCENARIO (%s), got %d arguments", strings.Join(bench.Scenarios, ", "), fs.NArg())
	}
	cfg.Scenario = fs.Arg(0)
	if !slices.Contains(bench.Scenarios, cfg.Scenario) {
		return fs.usage("unknown scenario %q%s", cfg.Scenario, suggest(cfg.Scenario, bench.Scenarios, ""))
	}
	for _, s := range strings.Split(server, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return fs.usage("--server %q: want http://HOST:PORT (comma-separated for failover)", s)
		}
		cfg.Addrs = append(cfg.Addrs, u.Host)
	}
	if transports != "" {
		cfg.Transports = strings.Split(transports, ",")
	}
	cfg.IdleNoSub = noSub
	if quiet {
		cfg.Progress = -1
	}
	switch {
	case killPID > 0 && killCmd != "":
		return fs.usage("give --kill-pid or --kill-cmd, not both")
	case killPID > 0:
		cfg.Kill = func() error { return syscall.Kill(killPID, syscall.SIGKILL) }
	case killCmd != "":
		cfg.Kill = func() error {
			c := exec.Command("/bin/sh", "-c", killCmd)
			c.Stdout, c.Stderr = os.Stderr, os.Stderr
			return c.Run()
		}
	}
	cfg.Defaults()
	if err := cfg.Check(); err != nil {
		return fs.usage("%s", err)
	}
	start := time.Now()
	r, err := bench.Run(ctx, &cfg, stderr)
	if r != nil {
		if werr := bench.Write(stdout, r, asJSON); werr != nil {
			return werr
		}
	}
	if err != nil {
		return fmt.Errorf("bench %s after %s: %w", cfg.Scenario, time.Since(start).Round(time.Millisecond), err)
	}
	if r.Failed() {
		return errors.New("bench " + cfg.Scenario + ": " + bench.ErrFailed.Error())
	}
	return nil
}
