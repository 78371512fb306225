package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/pgtest"
)

var subcommands = []string{"serve", "migrate", "publish", "tail", "keygen", "bench", "config", "version"}

// TestHelpDoesNothingElse: every subcommand answers -h, -help and --help
// (anywhere before "--") with its usage on stdout and exit 0, and does
// nothing else: keygen makes no key, serve does not listen.
func TestHelpDoesNothingElse(t *testing.T) {
	t.Parallel()
	for _, cmd := range subcommands {
		for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"NAME", "--help"}} {
			t.Run(cmd+" "+strings.Join(args, " "), func(t *testing.T) {
				t.Parallel()
				stdout, stderr, code := runHerald(t, cleanEnv(), append([]string{cmd}, args...)...)
				if code != 0 || stderr != "" {
					t.Fatalf("exit %d, stderr:\n%s", code, stderr)
				}
				if !strings.HasPrefix(stdout, "Usage: herald "+cmd) {
					t.Fatalf("stdout does not start with the usage:\n%s", stdout)
				}
				if strings.Contains(stdout, "hk_") {
					t.Fatalf("help made a key:\n%s", stdout)
				}
			})
		}
	}
	t.Run("help serve", func(t *testing.T) {
		t.Parallel()
		viaHelp, _, code := runHerald(t, cleanEnv(), "help", "serve")
		direct, _, _ := runHerald(t, cleanEnv(), "serve", "--help")
		if code != 0 || viaHelp != direct {
			t.Fatalf("herald help serve (exit %d) differs from herald serve --help:\n%s", code, viaHelp)
		}
	})
	t.Run("overview", func(t *testing.T) {
		t.Parallel()
		stdout, _, code := runHerald(t, cleanEnv(), "--help")
		if code != 0 || !strings.Contains(stdout, "herald serve") {
			t.Fatalf("herald --help: exit %d\n%s", code, stdout)
		}
	})
}

// TestUsageErrors: a mistake on the command line prints one line that
// names it (with a suggestion when one is close) and how to get help, and
// exits with 2.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env   []string
		args  []string
		words []string
	}{
		{nil, []string{"serve", "--pol-interval", "5s"}, []string{"unknown flag --pol-interval", "did you mean --poll-interval?"}},
		{nil, []string{"serve", "-adr=:0"}, []string{"unknown flag -adr", "did you mean --addr?"}},
		{nil, []string{"serve", "--database"}, []string{"--database-url or --database-wait"}},
		{nil, []string{"publish", "--keyy", "k1", "chat", "hi"}, []string{"unknown flag --keyy", "did you mean --key?"}},
		{nil, []string{"serve", "--poll-interval", "5"}, []string{`invalid value "5" for --poll-interval`, "unit", "5s", "500ms"}},
		{nil, []string{"serve", "--shutdown-timeout=10"}, []string{"--shutdown-timeout", "unit"}},
		{[]string{"HERALD_POLL_INTERVAL=5"}, []string{"serve"}, []string{`HERALD_POLL_INTERVAL="5"`, "--poll-interval", "unit"}},
		{[]string{"HERALD_POLL_INTERVAL=5", "HERALD_QUEUE_SIZE=big"}, []string{"serve"}, []string{`HERALD_POLL_INTERVAL="5"`, `HERALD_QUEUE_SIZE="big" (for --queue-size)`}},
		{nil, []string{"serve", "--queue-size", "lots"}, []string{`invalid value "lots" for --queue-size: want a whole number`}},
		{nil, []string{"serve", "--window-size", "-1"}, []string{"--window-size is -1", "want a positive number (0: the default)"}},
		{[]string{"HERALD_QUEUE_BYTES=-5"}, []string{"serve"}, []string{"--queue-bytes is -5"}},
		{nil, []string{"serve", "--auto-create-channels=maybe"}, []string{"--auto-create-channels", "true or false"}},
		{nil, []string{"serve", "--user-publish-rate", "fast"}, []string{"--user-publish-rate", "want a number"}},
		{nil, []string{"serve", "--log-level", "loud"}, []string{`invalid value "loud" for --log-level`, "debug, info, warn or error"}},
		{nil, []string{"serve", "--addr"}, []string{"--addr needs a value"}},
		{nil, []string{"serve", "extra"}, []string{"takes no arguments"}},
		{nil, []string{"tail", "--from", "x", "chat"}, []string{"--from", "whole number"}},
		{nil, []string{"tail"}, []string{"CHANNEL"}},
		{nil, []string{"publish", "chat", "-5"}, []string{"unknown flag -5", "put -- before it"}},
		{nil, []string{"keygen"}, []string{"NAME"}},
		{nil, []string{"migrate"}, []string{"DATABASE_URL"}},
		{nil, []string{"srve"}, []string{`unknown command "srve"`, "did you mean serve?", "run 'herald --help'"}},
	} {
		t.Run(strings.Join(append(tc.env, tc.args...), " "), func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runHerald(t, cleanEnv(tc.env...), tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout:\n%s", stdout)
			}
			if n := strings.Count(stderr, "\n"); n != 1 {
				t.Errorf("%d lines on stderr, want 1:\n%s", n, stderr)
			}
			help := "run 'herald " + tc.args[0] + " --help'"
			if tc.args[0] == "srve" {
				help = "run 'herald --help'"
			}
			for _, w := range append(tc.words, help) {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	names := []string{"addr", "poll-interval", "database-url", "database-wait", "key"}
	for name, want := range map[string]string{
		"pol-interval":  " (did you mean --poll-interval?)",
		"poll_interval": " (did you mean --poll-interval?)",
		"Addr":          " (did you mean --addr?)",
		"ke":            " (did you mean --key?)",
		"database":      " (did you mean --database-url or --database-wait?)",
		"verbose":       "",
		"x":             "",
	} {
		if got := suggest(name, names, "--"); got != want {
			t.Errorf("suggest(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestVersion: herald version reports what the toolchain recorded: the
// module version and, in a git clone, the revision and whether the tree
// had uncommitted changes; -ldflags -X main.version overrides the version.
func TestVersion(t *testing.T) {
	bin := heraldBinary(t)
	if os.Getenv("HERALD_TEST_BINARY") != "" {
		t.Skip("builds its own binaries from the source")
	}
	src := filepath.Join(filepath.Dir(bin), "src")
	rev := gitOutput(t, src, "rev-parse", "HEAD")

	stdout, _, code := runHerald(t, cleanEnv(), "version")
	want := regexp.MustCompile(`^herald v0\.0\.0-\d{14}-` + rev[:12] + `, revision ` + rev + `, committed \S+, go1\.\S+\n$`)
	if code != 0 || !want.MatchString(stdout) {
		t.Fatalf("herald version (exit %d):\n%s\nwant %s", code, stdout, want)
	}

	// A tree with changes, and a version set at link time.
	if err := os.WriteFile(filepath.Join(src, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gitOutput(t, src, "checkout", "README.md") })
	out := filepath.Join(t.TempDir(), "herald")
	if err := buildHerald(src, out, "-ldflags", "-X main.version=v9.8.7"); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "", cleanEnv(), out, "version")
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr)
	}
	wantModified := "herald v9.8.7, revision " + rev + " (modified: the tree had uncommitted changes), committed "
	if !strings.HasPrefix(p.stdout.String(), wantModified) {
		t.Fatalf("herald version of a modified tree:\n%s\nwant prefix %s", p.stdout, wantModified)
	}
}

func TestVersionString(t *testing.T) {
	t.Parallel()
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}
	if got, want := versionString(info, ""), "herald (devel), revision unknown (built without VCS information: go run, -buildvcs=false, or outside a git clone), go1.26.8"; got != want {
		t.Errorf("no VCS:\n%s\nwant\n%s", got, want)
	}
	info.Main.Version = "v1.2.3"
	info.Settings = []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "false"}}
	if got, want := versionString(info, ""), "herald v1.2.3, revision abc, committed 2026-01-02T03:04:05Z, go1.26.8"; got != want {
		t.Errorf("release:\n%s\nwant\n%s", got, want)
	}
	if got, want := versionString(info, "v2.0.0"), "herald v2.0.0, revision abc, committed 2026-01-02T03:04:05Z, go1.26.8"; got != want {
		t.Errorf("override:\n%s\nwant\n%s", got, want)
	}
}

func gitOutput(t *testing.T, dir string, args ...string) string {
	t.Helper()
	p := startProc(t, dir, cleanEnv(), "git", args...)
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("git %v: exit %d: %s", args, code, p.stderr)
	}
	return strings.TrimSpace(p.stdout.String())
}

// endpointLine matches a startup log line that names a URL.
var endpointLine = regexp.MustCompile(`msg=("[^"]*"|\S+) url=("[^"]*"|\S+)`)

// TestServeLogsWhereToGo: at start the server logs the URL of the demo
// pages and of each family of endpoints, built from the address it
// actually listens on, and every one answers. On every interface (":0")
// it says how to reach it and the URLs use the loopback address.
func TestServeLogsWhereToGo(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:0", ":0"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, "", cleanEnv(), "--addr", addr)
			logs := s.stderr.String()
			urls := map[string]string{}
			for _, m := range endpointLine.FindAllStringSubmatch(logs, -1) {
				urls[strings.Trim(m[1], `"`)] = strings.Trim(m[2], `"`)
			}
			for _, want := range []struct{ msg, url string }{
				{"demo pages (open in a browser)", s.base + "/demo/"},
				{"gRPC, gRPC-Web and Connect (h2c: HTTP/2 without TLS, and HTTP/1.1)", s.base},
				{"WebSocket", "ws" + strings.TrimPrefix(s.base, "http") + "/v1/ws"},
				{"Server-Sent Events", s.base + "/v1/sse?channel=CHANNEL"},
				{"REST and long-poll", s.base + "/v1/"},
				{"health", s.base + "/healthz"},
			} {
				if urls[want.msg] != want.url {
					t.Errorf("log line %q has url %q, want %q\n%s", want.msg, urls[want.msg], want.url, logs)
				}
			}
			if !strings.Contains(logs, "openapi="+s.base+"/v1/openapi.json") {
				t.Errorf("no OpenAPI URL:\n%s", logs)
			}
			if every := strings.Contains(logs, "listening on every network interface"); every != (addr == ":0") {
				t.Errorf("every-interface notice: %v for %s:\n%s", every, addr, logs)
			}

			for _, u := range []string{urls["demo pages (open in a browser)"], urls["health"], s.base + "/v1/openapi.json",
				strings.Replace(urls["Server-Sent Events"], "CHANNEL", "chat", 1)} {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s: %v %v", u, resp, err)
				}
				if resp != nil {
					resp.Body.Close()
				}
				cancel()
			}
			resp, err := http.Post(urls["gRPC, gRPC-Web and Connect (h2c: HTTP/2 without TLS, and HTTP/1.1)"]+"/grpc.health.v1.Health/Check",
				"application/json", strings.NewReader("{}"))
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("health check over Connect at the logged base URL: %v %v", resp, err)
			} else {
				resp.Body.Close()
			}
			conn, _, err := websocket.Dial(t.Context(), urls["WebSocket"], &websocket.DialOptions{Subprotocols: []string{"herald.v1.json"}})
			if err != nil {
				t.Errorf("WebSocket at %s: %v", urls["WebSocket"], err)
			} else {
				conn.CloseNow()
			}
			s.stop(syscall.SIGTERM)
			if code := s.wait(t, 30*time.Second); code != 0 {
				t.Errorf("exit %d after SIGTERM:\n%s", code, s.stderr)
			}
		})
	}
}

// TestServeDatabaseMistakes: a database that does not exist stops the
// server at once (no waiting for what waiting cannot fix) with the command
// that creates it; one nobody listens for is retried for --database-wait.
// Neither shows the password.
func TestServeDatabaseMistakes(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(pgtest.URL(t))
	if err != nil || u.Scheme == "" {
		t.Skipf("needs a postgres:// test URL: %v", err)
	}
	// The URL's own password when it has one (the server may check it),
	// else one a trusting server ignores; neither may be shown.
	password, ok := u.User.Password()
	if !ok {
		password = "hunter2-not-shown"
	}
	u.User = url.UserPassword(u.User.Username(), password)
	shown := func(s string) bool {
		return strings.Contains(s, ":"+password+"@") || len(password) >= 12 && strings.Contains(s, password)
	}
	t.Run("no such database", func(t *testing.T) {
		t.Parallel()
		missing := *u
		missing.Path = "/herald_missing_db"
		start := time.Now()
		_, stderr, code := runHerald(t, cleanEnv("DATABASE_URL="+missing.String()), "serve", "--addr", "127.0.0.1:0")
		if code != 1 || !strings.Contains(stderr, "createdb") || !strings.Contains(stderr, "herald_missing_db") || shown(stderr) {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("took %v with the default --database-wait: a missing database must not be waited for", d)
		}
	})
	t.Run("nobody listens", func(t *testing.T) {
		t.Parallel()
		refused := *u
		refused.Host = "127.0.0.1:1"
		_, stderr, code := runHerald(t, cleanEnv(), "migrate", "--database-wait", "1s", "--database-url", refused.String())
		if code != 1 || !strings.Contains(stderr, "retrying") || !strings.Contains(stderr, "gave up after") ||
			!strings.Contains(stderr, "is PostgreSQL running") || shown(stderr) {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
	})
}

// TestKeygenAuthConfig: keygen --auth-config adds the key's entry to the
// file (creating it, then keeping what is there) and prints only the key,
// which the file then authenticates.
func TestKeygenAuthConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "auth.json")
	var keys []string
	for _, args := range [][]string{{"backend", "publish"}, {"reader", "subscribe", "history"}} {
		var out bytes.Buffer
		if err := keygen(append([]string{"--auth-config", path}, args...), &out); err != nil {
			t.Fatal(err)
		}
		key := strings.TrimSpace(out.String())
		if !strings.HasPrefix(key, "hk_") || strings.Contains(key, "\n") {
			t.Fatalf("keygen --auth-config printed %q, want only the key", out.String())
		}
		keys = append(keys, key)
	}
	if err := keygen([]string{"--auth-config", path, "backend"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("a second key named backend: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("auth config: %v %v, want mode 0600", st, err)
	}
	a, err := auth.LoadConfig(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range keys {
		if _, err := a.Authenticate("Bearer " + key); err != nil {
			t.Errorf("key %d does not authenticate: %v", i, err)
		}
	}
	var doc map[string][]map[string]any
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &doc); err != nil || len(doc["apiKeys"]) != 2 {
		t.Fatalf("auth config:\n%s\n%v", b, err)
	}
}

// TestFlagsAfterArguments: flags may follow the arguments (herald tail
// chat --from 0), and "--" ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	t.Parallel()
	var from int
	var wait time.Duration
	fs := newFlags("tail", "CHANNEL...", "", &bytes.Buffer{})
	fs.IntVar(&from, "from", -1, "")
	fs.Duration(&wait, "wait", []string{"HERALD_TEST_UNSET_WAIT"}, time.Second, "")
	if err := fs.parse([]string{"chat", "--from", "3", "news", "-wait=2s", "--", "--from", "-"}); err != nil {
		t.Fatal(err)
	}
	if from != 3 || wait != 2*time.Second || !slices.Equal(fs.Args(), []string{"chat", "news", "--from", "-"}) {
		t.Fatalf("from %d, wait %v, args %q", from, wait, fs.Args())
	}
}
