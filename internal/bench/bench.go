// Package bench is `herald bench`: load scenarios that measure a running
// Herald deployment from the outside, over its public transports, and check
// on every run that every subscriber got every acknowledged event exactly
// once and in order.
//
// Scenarios (Config.Scenario):
//
//   - fanout: Subs subscribers of one channel (WebSocket, SSE or the gRPC
//     Subscribe stream; several transports share the count), Rate events/s
//     published over gRPC for Duration (open loop: each event has its slot);
//     end-to-end latency p50/p99 per transport, delivered events/s, and with
//     ServerPID the server's CPU and VmRSS.
//   - publish: publish as fast as acknowledgements allow. Closed loop:
//     Publishers clients each POST one event over REST and wait for its ack
//     before the next. Pipelined: Publishers WebSocket connections each
//     keeping InFlight publishes outstanding. Subs WebSocket subscribers
//     check delivery.
//   - idle: hold Subs connections of one transport; the server's memory per
//     connection (VmRSS of ServerPID before and after), and connections that
//     dropped on their own.
//   - storm: Subs WebSocket subscribers while Rate events/s are published;
//     after Before, every connection is dropped at once (by this process) and
//     resumes at once from its last position; the time until each is live
//     again (receives an event published after its new subscription was
//     confirmed, so the missed ones were all replayed).
//   - failover: two addresses; Subs WebSocket subscribers on the first,
//     publishing to the second; after Before the first is killed (Kill:
//     --kill-pid or --kill-cmd) and each subscriber resumes on the second;
//     the time to its first event there and until it is live again.
//   - recovery: Rounds times per transport (WebSocket, SSE): publish Missed
//     events, then subscribe with the cursor before them and time until all
//     of them arrived.
//
// Config.Target centrifugo runs the same scenarios (but the gRPC transport
// and pipelined publish) against a Centrifugo server, to compare the two on
// one machine with one client and one checker (centrifugo.go).
//
// Every event carries its publish time in its first 8 bytes (one clock: the
// tool and the server must run on one machine for latencies to mean
// anything). A run with any loss (missing, duplicate, out of order or
// unexpected positions), a connection that failed or ended on its own, or a
// failed publish is marked failed.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Scenarios are the scenario names, in the order of the documentation.
var Scenarios = []string{"fanout", "publish", "idle", "storm", "failover", "recovery"}

// Transport names, as printed and as used in JSON output.
const (
	transportWS   = "ws"
	transportSSE  = "sse"
	transportGRPC = "grpc"
)

// Targets: the server the run measures. Centrifugo is there to compare
// with, on the same machine and with the same client (docs/benchmarks.md).
const (
	TargetHerald     = "herald"
	TargetCentrifugo = "centrifugo"
)

// Config is one run. Zero values take the scenario's default (Defaults).
type Config struct {
	Scenario string
	Target   string   // TargetHerald (default) or TargetCentrifugo
	Addrs    []string // host:port; failover needs two
	// Token: Herald: sent as Authorization: Bearer, when set; Centrifugo:
	// the connection token (JWT), sent in the connect command.
	Token          string
	APIKey         string // Centrifugo: the server API key (X-API-Key) to publish with
	Channel        string
	Transports     []string // fanout: ws, sse, grpc; idle: one of ws, sse; recovery: ws, sse
	WSCodec        string   // json or proto
	Subs           int
	Ramp           float64 // new connections per second
	ConnectTimeout time.Duration
	Settle         time.Duration
	Drain          time.Duration
	Rate           float64 // fanout, storm, failover: events published per second
	Duration       time.Duration
	Size           int
	Publishers     int    // fanout: most publishes in flight; publish: clients (closed) or connections (pipelined)
	Mode           string // publish: closed or pipelined
	InFlight       int    // publish pipelined: outstanding publishes per connection
	IdleNoSub      bool   // idle: WebSockets connect without subscribing
	Hold           time.Duration
	ServerPID      int
	Before, After  time.Duration // storm, failover: publishing before and after the drop
	Missed, Rounds int           // recovery
	// Kill kills the first server (failover). The command line sets it
	// from --kill-pid or --kill-cmd.
	Kill     func() error
	Progress time.Duration // interval of the progress line on stderr; <0: none
	// Inject makes the first subscriber lose or duplicate one event on
	// receipt, to show that the checker fails such a run (tests).
	Inject Injection
}

// Injection alters what the first subscriber records: its DropNth-th event
// received is not recorded, its DupNth-th is recorded twice (1-based; 0:
// never).
type Injection struct{ DropNth, DupNth int64 }

// Defaults fills the zero fields of c with the defaults of its scenario:
// the parameters of the rows of issue 14's table.
func (c *Config) Defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Channel == "" {
		c.Channel = "bench"
	}
	if c.Target == "" {
		c.Target = TargetHerald
	}
	if c.WSCodec == "" {
		c.WSCodec = "json"
	}
	if c.Ramp == 0 {
		c.Ramp = 500
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	def(&c.Size, 256)
	defD(&c.ConnectTimeout, 30*time.Second)
	defD(&c.Settle, 2*time.Second)
	defD(&c.Drain, 30*time.Second)
	defD(&c.Progress, time.Second)
	if len(c.Transports) == 0 {
		c.Transports = []string{transportWS}
		if c.Scenario == "recovery" {
			c.Transports = []string{transportWS, transportSSE}
		}
	}
	switch c.Scenario {
	case "fanout":
		def(&c.Subs, 1000)
		def(&c.Publishers, 256)
		defD(&c.Duration, 30*time.Second)
	case "publish":
		def(&c.Subs, 10)
		if c.Mode == "" {
			c.Mode = "closed"
		}
		if c.Mode == "closed" {
			def(&c.Publishers, 16)
		} else {
			def(&c.Publishers, 1)
		}
		def(&c.InFlight, 256)
		defD(&c.Duration, 10*time.Second)
	case "idle":
		def(&c.Subs, 10000)
	case "storm":
		def(&c.Subs, 1000)
		def(&c.Publishers, 256)
		defD(&c.Before, 3*time.Second)
		defD(&c.After, 5*time.Second)
	case "failover":
		def(&c.Subs, 200)
		def(&c.Publishers, 256)
		defD(&c.Before, 3*time.Second)
		defD(&c.After, 5*time.Second)
	case "recovery":
		def(&c.Missed, 100)
		def(&c.Rounds, 20)
	}
}

// Check reports the first thing wrong with c (after Defaults).
func (c *Config) Check() error {
	one := func(ok bool, msg string) error {
		if ok {
			return nil
		}
		return errors.New(msg)
	}
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("unknown scenario %q: want one of %s", c.Scenario, strings.Join(Scenarios, ", "))
	}
	for _, t := range c.Transports {
		allowed := []string{transportWS, transportSSE, transportGRPC}
		switch c.Scenario {
		case "idle", "recovery":
			allowed = []string{transportWS, transportSSE}
		case "storm", "failover", "publish":
			allowed = []string{transportWS, transportSSE}
		}
		if !slices.Contains(allowed, t) {
			return fmt.Errorf("transport %q: %s takes %s", t, c.Scenario, strings.Join(allowed, ", "))
		}
	}
	for _, err := range []error{
		one(c.Target == TargetHerald || c.Target == TargetCentrifugo, "target must be herald or centrifugo"),
		one(c.Target != TargetCentrifugo || !slices.Contains(c.Transports, transportGRPC), "centrifugo: transports ws and sse only"),
		one(c.Target != TargetCentrifugo || c.Scenario != "publish" || c.Mode == "closed", "centrifugo: publish --mode closed only"),
		one(c.Target != TargetCentrifugo || c.WSCodec == "json", "centrifugo: ws codec json only"),
		one(len(c.Addrs) >= 1, "no server address"),
		one(c.Scenario != "failover" || len(c.Addrs) == 2, "failover needs two server addresses (the one to kill first)"),
		one(c.Scenario != "failover" || c.Kill != nil, "failover needs --kill-pid or --kill-cmd"),
		one(c.Scenario == "failover" || len(c.Addrs) == 1, "only failover takes two server addresses"),
		one(c.Scenario != "idle" || len(c.Transports) == 1, "idle measures one transport at a time"),
		one(c.WSCodec == "json" || c.WSCodec == "proto", "ws codec must be json or proto"),
		one(c.Subs >= 0 && c.Ramp > 0, "subs must be >= 0 and ramp > 0"),
		one(c.Rate > 0, "rate must be > 0"),
		one(c.Size >= stampBytes, fmt.Sprintf("size must be at least %d (the publish time)", stampBytes)),
		one(c.Scenario != "publish" || c.Mode == "closed" || c.Mode == "pipelined", "publish mode must be closed or pipelined"),
		one(c.Scenario != "fanout" && c.Scenario != "publish" || c.Duration > 0, "duration must be > 0"),
		one(c.Publishers >= 0 && c.InFlight >= 0, "publishers and in-flight must be >= 0"),
		one(c.Scenario != "recovery" || c.Missed > 0 && c.Rounds > 0, "missed and rounds must be > 0"),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// Report is the outcome of one run.
type Report interface {
	// Failed says whether the run lost, duplicated or reordered an event,
	// or a connection or publish failed.
	Failed() bool
	// Print writes the summary table.
	Print(w io.Writer)
}

// ErrFailed is returned by Main when the run completed but failed its
// checks.
var ErrFailed = errors.New("run failed its checks (see the report)")

// Run runs one scenario; cfg gets its defaults. The report may be non-nil
// with an error when the run stopped part way.
func Run(ctx context.Context, cfg *Config, stderr io.Writer) (Report, error) {
	cfg.Defaults()
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if soft, hard, err := raiseNoFile(); err != nil {
		fmt.Fprintln(stderr, "herald bench: raise RLIMIT_NOFILE:", err)
	} else if need := uint64(cfg.Subs + cfg.Publishers + 64); soft < need {
		fmt.Fprintf(stderr, "herald bench: open files limited to %d (hard %d), %d connections need about %d\n", soft, hard, cfg.Subs, need)
	}
	e := &env{cfg: cfg, stderr: stderr}
	switch cfg.Scenario {
	case "fanout":
		return runFanout(ctx, e)
	case "publish":
		return runPublish(ctx, e)
	case "idle":
		return runIdle(ctx, e)
	case "storm":
		return runStorm(ctx, e)
	case "failover":
		return runFailover(ctx, e)
	default:
		return runRecovery(ctx, e)
	}
}

// Write prints r as a table, or as one JSON object.
func Write(w io.Writer, r Report, asJSON bool) error {
	if !asJSON {
		r.Print(w)
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// env is what a scenario shares with its helpers.
type env struct {
	cfg    *Config
	stderr io.Writer
	cf     centrifugoState // Target centrifugo
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// progress prints line() every cfg.Progress until the returned stop is
// called.
func (e *env) progress(line func() string) (stop func()) {
	if e.cfg.Progress < 0 {
		return func() {}
	}
	done := make(chan struct{})
	var stopped atomic.Bool
	start := time.Now()
	go func() {
		t := time.NewTicker(e.cfg.Progress)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				e.logf("[%5.1fs] %s", time.Since(start).Seconds(), line())
			}
		}
	}()
	return func() {
		if !stopped.Swap(true) {
			close(done)
		}
	}
}

// raiseNoFile sets the soft open-files limit to the hard limit and returns
// the result.
func raiseNoFile() (soft, hard uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, 0, err
		}
	}
	return rl.Cur, rl.Max, nil
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
