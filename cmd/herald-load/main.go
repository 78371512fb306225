// Command herald-load measures a running Herald's browser gateway: fan-out
// to many WebSocket and SSE subscribers of one channel, and the server's
// memory per idle connection. It is a benchmark tool, not a test: run it
// against a server built with `go build` (see docs/benchmarks.md, "Gateway
// fan-out", for the commands and figures).
//
// Fan-out mode (the default) publishes one warm-up event (which creates the
// channel), opens -ws WebSocket and -sse SSE subscribers of -channel (live
// only, no cursor) at -ramp connections/s, waits until every one is
// subscribed plus -settle, then publishes -rate events/s for -duration over
// gRPC (one HTTP/2 connection). Each event has its slot in a fixed schedule
// (open loop: a slow server shows as late slots and latency, not as a
// lower offered rate), with up to -publishers calls in flight. Each event's
// data starts with its publish time (8 bytes, big-endian unix nanoseconds,
// taken just before the Publish call) padded to -size bytes. Once every
// subscriber has the last acknowledged event (or -drain has passed) it
// reports:
//
//   - delivered events/s over all subscribers (events received, divided by
//     first publish → last receipt);
//   - end-to-end latency p50/p99/max per transport: receipt time minus the
//     publish time in the data, one clock, so load tool and server must run
//     on the same machine;
//   - loss per transport: positions missing, duplicated, out of order, or
//     not returned by any acknowledged publish. Every subscriber must get
//     every acknowledged position exactly once, in order;
//   - connection errors: connections that failed to subscribe, or that
//     ended before the tool closed them, with the first distinct messages;
//   - with -server-pid, the server's CPU (cores used while publishing) and
//     VmRSS.
//
// Idle mode (-idle) opens -ws WebSockets or -sse SSE streams (one kind: the
// other count must be 0), each subscribed to -channel (-idle-subscribe=false
// makes WebSockets connect without subscribing) and reports the server's
// memory per connection: VmRSS of -server-pid (from /proc/PID/status)
// after -settle with no connection open, then after every connection is
// open plus -settle, the difference divided by the count. The server and
// this tool must be separate processes on one machine.
//
// Each connection has one goroutine that reads it and alone writes its
// subscriber's records (positions, latencies); while they run, the tool
// reads only their atomic counters and flags, and it reads the records after
// every goroutine has returned. Cancelling the run's context closes every
// connection; SIGINT and SIGTERM cancel it.
//
// At start the tool raises its soft RLIMIT_NOFILE to the hard limit. It
// prints a short table, or with -json one JSON object. It exits 1 when any
// event was lost (missing, duplicated, out of order, unexpected), a frame
// did not decode, any connection failed or ended early, or any publish
// failed; 2 on bad flags.
//
// Flags:
//
//	-addr host:port        server address (default 127.0.0.1:8080)
//	-channel name          channel to subscribe and publish to (default bench)
//	-ws N, -sse M          WebSocket and SSE connections (default 1000 each)
//	-ws-codec json|proto   WebSocket subprotocol herald.v1.json (text) or herald.v1.proto (binary)
//	-ramp R                new connections per second (default 500)
//	-connect-timeout D     bound on dial + subscribe of one connection (default 30s)
//	-settle D              wait after connecting before measuring (default 2s)
//	-rate R                events published per second (default 100)
//	-duration D            how long to publish (default 30s)
//	-size B                event data size in bytes, at least 8 (default 256)
//	-publishers P          most publishes in flight (default 256); a slot sent >10 ms late counts as late
//	-drain D               longest wait for subscribers to catch up after publishing (default 30s)
//	-idle                  idle mode instead of fan-out
//	-idle-subscribe        idle WebSockets subscribe (default true)
//	-hold D                idle mode: keep the connections open this long after measuring
//	-server-pid PID        server process to read memory and CPU of (required with -idle)
//	-json                  print one JSON object instead of the table
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type config struct {
	addr, channel, wsCodec string
	ws, sse                int
	ramp                   float64
	connectTimeout, settle time.Duration
	rate                   float64
	duration, drain        time.Duration
	size, publishers       int
	idle, idleSubscribe    bool
	hold                   time.Duration
	serverPID              int
	json                   bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	var c config
	fs := flag.NewFlagSet("herald-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "server address")
	fs.StringVar(&c.channel, "channel", "bench", "channel to subscribe and publish to")
	fs.IntVar(&c.ws, "ws", 1000, "WebSocket connections")
	fs.IntVar(&c.sse, "sse", 1000, "SSE connections")
	fs.StringVar(&c.wsCodec, "ws-codec", "json", "WebSocket subprotocol: json (herald.v1.json) or proto (herald.v1.proto)")
	fs.Float64Var(&c.ramp, "ramp", 500, "new connections per second")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 30*time.Second, "bound on dial + subscribe of one connection")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "wait after connecting before measuring")
	fs.Float64Var(&c.rate, "rate", 100, "events published per second")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long to publish")
	fs.IntVar(&c.size, "size", 256, "event data size in bytes (at least 8: the publish time)")
	fs.IntVar(&c.publishers, "publishers", 256, "most publishes in flight")
	fs.DurationVar(&c.drain, "drain", 30*time.Second, "longest wait for subscribers to catch up after publishing")
	fs.BoolVar(&c.idle, "idle", false, "idle mode: server memory per idle connection")
	fs.BoolVar(&c.idleSubscribe, "idle-subscribe", true, "idle WebSockets subscribe to the channel")
	fs.DurationVar(&c.hold, "hold", 0, "idle mode: keep connections open this long after measuring")
	fs.IntVar(&c.serverPID, "server-pid", 0, "server process id, to read its VmRSS and CPU time from /proc")
	fs.BoolVar(&c.json, "json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.ws < 0 || c.sse < 0:
		return nil, errors.New("-ws and -sse must be >= 0")
	case c.wsCodec != "json" && c.wsCodec != "proto":
		return nil, errors.New("-ws-codec must be json or proto")
	case c.ramp <= 0:
		return nil, errors.New("-ramp must be > 0")
	case c.idle && (c.ws > 0) == (c.sse > 0):
		return nil, errors.New("-idle measures one kind: set exactly one of -ws and -sse above 0")
	case c.idle && c.serverPID <= 0:
		return nil, errors.New("-idle needs -server-pid")
	case !c.idle && (c.rate <= 0 || c.duration <= 0):
		return nil, errors.New("-rate and -duration must be > 0")
	case !c.idle && c.publishers <= 0:
		return nil, errors.New("-publishers must be > 0")
	case c.size < stampBytes:
		return nil, fmt.Errorf("-size must be at least %d", stampBytes)
	}
	return &c, nil
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

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "herald-load:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	soft, hard, err := raiseNoFile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "herald-load: raise RLIMIT_NOFILE:", err)
	} else if need := uint64(cfg.ws + cfg.sse + 64); soft < need {
		fmt.Fprintf(os.Stderr, "herald-load: open files limited to %d (hard %d), %d connections need about %d\n", soft, hard, cfg.ws+cfg.sse, need)
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}

	var report interface {
		failed() bool
		print(w io.Writer)
	}
	if cfg.idle {
		r, rerr := runIdle(ctx, cfg, logf)
		report, err = r, rerr
	} else {
		r, rerr := runFanout(ctx, cfg, logf)
		report, err = r, rerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herald-load:", err)
		os.Exit(1)
	}
	if cfg.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			fmt.Fprintln(os.Stderr, "herald-load:", err)
			os.Exit(1)
		}
	} else {
		report.print(os.Stdout)
	}
	if report.failed() {
		os.Exit(1)
	}
}
