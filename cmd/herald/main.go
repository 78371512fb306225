// Command herald runs the Herald realtime event server and small clients
// for trying it from a shell.
//
//	herald serve                    # embedded in-memory log on 127.0.0.1:8080
//	DATABASE_URL=postgres://... herald serve
//	herald migrate                  # apply database migrations and exit
//	herald publish CHANNEL [DATA]   # DATA or stdin
//	herald tail CHANNEL...          # stream events, resuming after disconnects
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `herald: realtime channels of ordered, durable events.

Usage:
  herald serve   [flags]               run the server (gRPC, gRPC-Web, Connect, WebSocket, SSE, REST on one port)
  herald migrate [flags]               apply PostgreSQL migrations and exit
  herald publish [flags] CHANNEL [DATA] publish one event (DATA, or stdin when absent)
  herald tail    [flags] CHANNEL...    print events as they arrive; resumes after disconnects
  herald keygen  NAME [SCOPE...]       make an API key: prints the key once, and the
                                       apiKeys entry (its hash) for --auth-config
  herald version

Run "herald COMMAND -h" for the flags of a command. Every flag can also be
set by an environment variable, shown in its help (HERALD_*, DATABASE_URL).
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(ctx, args)
	case "migrate":
		err = migrate(ctx, args)
	case "publish":
		err = publish(ctx, args, os.Stdin, os.Stdout)
	case "tail":
		err = tail(ctx, args, os.Stdout)
	case "keygen":
		err = keygen(args, os.Stdout)
	case "version", "--version":
		fmt.Println("herald", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "herald: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

// envFlags registers flags whose defaults come from environment variables.
type envFlags struct {
	*flag.FlagSet
	errs []error
}

func newFlags(name string) *envFlags {
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	return &envFlags{FlagSet: fs}
}

func (f *envFlags) envOr(keys []string, def string) (string, string) {
	for _, k := range keys {
		if v, ok := os.LookupEnv(k); ok && v != "" {
			return v, k
		}
	}
	return def, ""
}

func envHelp(keys []string, help string) string {
	return help + " (env " + strings.Join(keys, ", ") + ")"
}

func (f *envFlags) String(p *string, name string, keys []string, def, help string) {
	v, _ := f.envOr(keys, def)
	f.StringVar(p, name, v, envHelp(keys, help))
}

func (f *envFlags) Bool(p *bool, name string, keys []string, def bool, help string) {
	v, k := f.envOr(keys, strconv.FormatBool(def))
	b, err := strconv.ParseBool(v)
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s=%q: want true or false", k, v))
	}
	f.BoolVar(p, name, b, envHelp(keys, help))
}

func (f *envFlags) Int(p *int, name string, keys []string, def int, help string) {
	v, k := f.envOr(keys, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s=%q: want an integer", k, v))
	}
	f.IntVar(p, name, n, envHelp(keys, help))
}

func (f *envFlags) Float64(p *float64, name string, keys []string, def float64, help string) {
	v, k := f.envOr(keys, strconv.FormatFloat(def, 'g', -1, 64))
	n, err := strconv.ParseFloat(v, 64)
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s=%q: want a number", k, v))
	}
	f.Float64Var(p, name, n, envHelp(keys, help))
}

func (f *envFlags) Duration(p *time.Duration, name string, keys []string, def time.Duration, help string) {
	v, k := f.envOr(keys, def.String())
	d, err := time.ParseDuration(v)
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s=%q: want a duration such as 500ms or 1m", k, v))
	}
	f.DurationVar(p, name, d, envHelp(keys, help))
}

// parse parses args and reports bad environment values first.
func (f *envFlags) parse(args []string) error {
	if len(f.errs) > 0 {
		return errors.Join(f.errs...)
	}
	return f.Parse(args)
}

func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
