// Command herald runs the Herald realtime event server and small clients
// for trying it from a shell.
//
//	herald serve                    # embedded in-memory log on 127.0.0.1:8080
//	DATABASE_URL=postgres://... herald serve
//	herald migrate                  # apply database migrations and exit
//	herald publish CHANNEL [DATA]   # DATA or stdin
//	herald tail CHANNEL...          # stream events, resuming after disconnects
//	herald keygen NAME [SCOPE...]   # make an API key
//	herald bench SCENARIO           # load a running server, check exactly-once delivery
//	herald version                  # version and source revision
//
// Every command answers -h/--help with its usage. Mistakes on the command
// line exit with 2 and one line that names them; failures exit with 1.
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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

const usage = `herald: realtime channels of ordered, durable events.

Usage:
  herald serve   [flags]               run the server (gRPC, gRPC-Web, Connect, WebSocket, SSE, REST on one port)
  herald migrate [flags]               apply PostgreSQL migrations and exit
  herald publish [flags] CHANNEL [DATA] publish one event (DATA, or stdin when absent)
  herald tail    [flags] CHANNEL...    print events as they arrive; resumes after disconnects
  herald keygen  [flags] NAME [SCOPE...] make an API key: prints the key once, and the
                                       apiKeys entry (its hash) for --auth-config
  herald bench   [flags] SCENARIO     measure a running server (fanout, publish, idle, storm,
                                       failover, recovery), checking exactly-once delivery
  herald config  check FILE | defaults check a configuration file (every error with its line),
                                       or print a complete commented one
  herald version                       print the version and the source revision

Run "herald COMMAND --help" for the flags of a command. Every flag can also be
set by an environment variable, shown in its help (HERALD_*, DATABASE_URL), and
those of serve in a YAML file (--config): flag > environment > file > default.
`

// commands are the subcommands, for "herald help CMD" and for suggestions.
var commands = []string{"serve", "migrate", "publish", "tail", "keygen", "bench", "config", "version", "help"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs one command and returns the exit code: 0, 1 when the command
// failed, 2 for a mistake on the command line.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, args := args[0], args[1:]; cmd {
	case "serve":
		err = serve(ctx, args, stdout)
	case "migrate":
		err = migrate(ctx, args, stdout)
	case "publish":
		err = publish(ctx, args, stdin, stdout)
	case "tail":
		err = tail(ctx, args, stdout)
	case "keygen":
		err = keygen(args, stdout)
	case "bench":
		err = benchCmd(ctx, args, stdout, stderr)
	case "config":
		err = configCmd(ctx, args, stdout)
	case "version", "--version", "-version":
		err = printVersion(args, stdout)
	case "help", "-h", "-help", "--help":
		if len(args) > 0 && slices.Contains(commands, args[0]) && args[0] != "help" {
			return run(ctx, []string{args[0], "--help"}, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
	default:
		err = &usageError{msg: fmt.Sprintf("unknown command %q%s", cmd, suggest(cmd, commands, ""))}
	}
	var uerr *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &uerr):
		fmt.Fprintln(stderr, "herald:", uerr)
		return 2
	default:
		fmt.Fprintln(stderr, "herald:", err)
		return 1
	}
}

// usageError is a mistake on the command line. It is printed as one line
// that says what was wrong and how to get help, and exits with 2.
type usageError struct {
	cmd string // "" for herald itself
	msg string
}

func (e *usageError) Error() string {
	help := "herald --help"
	if e.cmd != "" {
		help = "herald " + e.cmd + " --help"
		return e.cmd + ": " + e.msg + "; run '" + help + "'"
	}
	return e.msg + "; run '" + help + "'"
}

// envFlags is a command's flag set. Its flags may take their defaults from
// environment variables, and parse turns every mistake into one line that
// names the flag and says what to do.
type envFlags struct {
	*flag.FlagSet
	cmd     string // the subcommand, e.g. "serve"
	args    string // synopsis of the arguments after the flags
	summary string // what the command does
	stdout  io.Writer
	errs    []error // bad environment values, reported by parse
	// Per flag: its own default (before the environment's) and its
	// environment variables, for the configuration file (config.go).
	defaults map[string]string
	envKeys  map[string][]string
}

// newFlags returns the flag set of "herald cmd": args is the synopsis of
// its arguments ("CHANNEL [DATA]"), summary what it does; --help prints
// both and the flags to stdout.
func newFlags(cmd, args, summary string, stdout io.Writer) *envFlags {
	fs := flag.NewFlagSet("herald "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors itself, in one line
	return &envFlags{FlagSet: fs, cmd: cmd, args: args, summary: summary, stdout: stdout,
		defaults: map[string]string{}, envKeys: map[string][]string{}}
}

// note records a flag's own default and environment variables.
func (f *envFlags) note(name string, keys []string, def string) {
	f.defaults[name] = def
	f.envKeys[name] = keys
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
	f.note(name, keys, def)
	v, _ := f.envOr(keys, def)
	f.StringVar(p, name, v, envHelp(keys, help))
}

func (f *envFlags) Bool(p *bool, name string, keys []string, def bool, help string) {
	f.note(name, keys, strconv.FormatBool(def))
	v, k := f.envOr(keys, strconv.FormatBool(def))
	b, err := strconv.ParseBool(v)
	f.envErr(err, k, v, name, false)
	f.BoolVar(p, name, b, envHelp(keys, help))
}

func (f *envFlags) Int(p *int, name string, keys []string, def int, help string) {
	f.note(name, keys, strconv.Itoa(def))
	v, k := f.envOr(keys, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	f.envErr(err, k, v, name, 0)
	f.IntVar(p, name, n, envHelp(keys, help))
}

func (f *envFlags) Float64(p *float64, name string, keys []string, def float64, help string) {
	f.note(name, keys, strconv.FormatFloat(def, 'g', -1, 64))
	v, k := f.envOr(keys, strconv.FormatFloat(def, 'g', -1, 64))
	n, err := strconv.ParseFloat(v, 64)
	f.envErr(err, k, v, name, 0.0)
	f.Float64Var(p, name, n, envHelp(keys, help))
}

func (f *envFlags) Duration(p *time.Duration, name string, keys []string, def time.Duration, help string) {
	f.note(name, keys, def.String())
	v, k := f.envOr(keys, def.String())
	d, err := time.ParseDuration(v)
	f.envErr(err, k, v, name, time.Duration(0))
	f.DurationVar(p, name, d, envHelp(keys, help))
}

// envErr records a bad value of environment variable key for flag name;
// want is a value of the flag's type.
func (f *envFlags) envErr(err error, key, value, name string, want any) {
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("environment variable %s=%q (for --%s): %s", key, value, name, wantValue(want)))
	}
}

// wantValue says what a flag of v's type takes.
func wantValue(v any) string {
	switch v.(type) {
	case time.Duration:
		return "want a duration with a unit, such as 5s, 500ms or 1m"
	case bool:
		return "want true or false"
	case int, int64, uint, uint64:
		return "want a whole number"
	case float64:
		return "want a number"
	}
	return "not a valid value"
}

// parse parses args: flags may come before, between or after the
// arguments ("--" ends the flags). -h, -help or --help anywhere prints the
// command's help to stdout and returns flag.ErrHelp, doing nothing else.
// Any mistake returns a *usageError naming the flag.
func (f *envFlags) parse(args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			f.printHelp()
			return flag.ErrHelp
		}
	}
	if len(f.errs) > 0 {
		msgs := make([]string, len(f.errs))
		for i, err := range f.errs {
			msgs[i] = err.Error()
		}
		return f.usage("%s", strings.Join(msgs, "; "))
	}
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a) // "-" is an argument (stdin)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		fl := f.Lookup(name)
		if fl == nil {
			return f.unknownFlag(a, name)
		}
		if bf, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if i+1 == len(args) {
				return f.usage("flag --%s needs a value (--%s=VALUE)", name, name)
			}
			i++
			value = args[i]
		}
		if err := f.Set(name, value); err != nil {
			var want any
			if g, ok := fl.Value.(flag.Getter); ok {
				want = g.Get()
			}
			return f.usage("invalid value %q for --%s: %s", value, name, wantValue(want))
		}
	}
	// Let the FlagSet hold the arguments (Args, NArg) without parsing again.
	return f.FlagSet.Parse(append([]string{"--"}, positional...))
}

func (f *envFlags) unknownFlag(arg, name string) error {
	var names []string
	f.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	msg := fmt.Sprintf("unknown flag %s", arg)
	if name == "" || !unicode.IsLetter(rune(name[0])) {
		return f.usage("%s (to pass an argument that starts with '-', put -- before it)", msg)
	}
	return f.usage("%s%s", msg, suggest(name, names, "--"))
}

func (f *envFlags) usage(format string, a ...any) error {
	return &usageError{cmd: f.cmd, msg: fmt.Sprintf(format, a...)}
}

// printHelp prints the command's synopsis, summary and flags.
func (f *envFlags) printHelp() {
	w := f.stdout
	synopsis := "herald " + f.cmd
	if f.hasFlags() {
		synopsis += " [flags]"
	}
	if f.args != "" {
		synopsis += " " + f.args
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", synopsis, f.summary)
	if !f.hasFlags() {
		return
	}
	fmt.Fprintf(w, "\nFlags:\n")
	f.VisitAll(func(fl *flag.Flag) {
		typ, help := flag.UnquoteUsage(fl)
		line := "  --" + fl.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n        %s", line, strings.ReplaceAll(help, "\n", "\n        "))
		switch {
		case fl.DefValue == "" || fl.DefValue == "0" || fl.DefValue == "false":
		case typ == "string":
			fmt.Fprintf(w, " (default %q)", fl.DefValue)
		default:
			fmt.Fprintf(w, " (default %s)", fl.DefValue)
		}
		fmt.Fprintln(w)
	})
}

func (f *envFlags) hasFlags() bool {
	n := 0
	f.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// suggest returns " (did you mean PREFIX+x?)" for the candidates closest to
// name, or "" when none is close: within a third of the name's length in
// edit distance (at least 1), or starting with name.
func suggest(name string, candidates []string, prefix string) string {
	limit := max(1, len(name)/3)
	best, bestDist := []string(nil), limit+1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(name), c)
		switch {
		case d < bestDist:
			best, bestDist = []string{c}, d
		case d == bestDist:
			best = append(best, c)
		}
	}
	if len(best) == 0 && len(name) >= 3 {
		for _, c := range candidates {
			if strings.HasPrefix(c, name) {
				best = append(best, c)
			}
		}
	}
	if len(best) == 0 || len(best) > 3 {
		return ""
	}
	for i := range best {
		best[i] = prefix + best[i]
	}
	return " (did you mean " + strings.Join(best, " or ") + "?)"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid value %q for --log-level: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid value %q for --log-format: want text or json", format)
}
