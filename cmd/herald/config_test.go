package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestConfigPrecedence: one setting from each layer, and one set in all
// of them: a flag wins over the environment, which wins over the file,
// which wins over the default. Not parallel: it sets the environment.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "herald.yaml")
	writeFile(t, cfgPath, `
addr: 127.0.0.1:7001            # file only
poll-interval: 2s               # file, env
page-size: 50                   # file, env, flag
log-format: json
allowed-origins: [https://a.example, https://b.example]
namespaces: ns.json             # relative to this file
`)
	writeFile(t, filepath.Join(dir, "ns.json"), `{"namespaces": {}}`)
	t.Setenv("HERALD_POLL_INTERVAL", "3s")
	t.Setenv("HERALD_PAGE_SIZE", "60")
	t.Setenv("HERALD_SHUTDOWN_TIMEOUT", "7s") // env only
	o := &serveSettings{}
	fs := serveFlags(o, nil)
	if err := fs.parse([]string{"--config", cfgPath, "--page-size", "70"}); err != nil {
		t.Fatal(err)
	}
	if err := fs.applyConfigFile(o.configFile); err != nil {
		t.Fatal(err)
	}
	got := map[string]any{
		"addr": o.cfg.Addr, "poll-interval": o.cfg.Hub.PollInterval, "page-size": o.cfg.Services.PageSize,
		"shutdown-timeout": o.cfg.ShutdownTimeout, "log-format": o.logFormat, "queue-size": o.cfg.Hub.QueueSize,
		"allowed-origins": o.origins, "namespaces": o.namespaces, "log-level": o.logLevel,
	}
	want := map[string]any{
		"addr": "127.0.0.1:7001", "poll-interval": 3 * time.Second, "page-size": 70,
		"shutdown-timeout": 7 * time.Second, "log-format": "json", "queue-size": 4096,
		"allowed-origins": "https://a.example,https://b.example", "namespaces": filepath.Join(dir, "ns.json"), "log-level": "info",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
}

// TestConfigCheck: every mistake of a file is reported on its own line
// with the file's line number, and says what is valid; a good file (the
// printed defaults) passes, and lists every flag of serve.
func TestConfigCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, `addr: 127.0.0.1:8080
pol-interval: 1s
queue-size: lots
log-format: xml
poll-interval: 5
shutdown-timeout: [1s]
namespaces: missing.json
addr: 127.0.0.1:9
log-level:
`)
	stdout, stderr, code := runHerald(t, cleanEnv(), "config", "check", bad)
	if code != 1 {
		t.Fatalf("config check of a bad file: exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		bad + `:2: unknown setting "pol-interval" (did you mean poll-interval?)`,
		bad + `:3: queue-size: invalid value "lots": want a whole number`,
		bad + `:4: log-format: invalid value "xml": want one of text, json`,
		bad + `:5: poll-interval: invalid value "5": want a duration with a unit`,
		bad + `:6: shutdown-timeout: want a single value`,
		bad + `:7: namespaces: `,
		bad + `:8: addr is set twice (first on line 1)`,
		bad + `:9: log-level: no value`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("config check output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "9 error(s)") && !strings.Contains(stderr, "8 error(s)") {
		t.Errorf("stderr %q does not count the errors", stderr)
	}

	// Serve refuses the file with the same report.
	_, stderr, code = runHerald(t, cleanEnv(), "serve", "--config", bad)
	if code != 1 || !strings.Contains(stderr, bad+":3: queue-size") {
		t.Errorf("serve --config with a bad file: exit %d\n%s", code, stderr)
	}

	syntax := filepath.Join(dir, "syntax.yaml")
	writeFile(t, syntax, "addr: [\n")
	stdout, _, code = runHerald(t, cleanEnv(), "config", "check", syntax)
	if code != 1 || !regexp.MustCompile(`syntax.yaml:\d+: not valid YAML`).MatchString(stdout) {
		t.Errorf("config check of broken YAML: exit %d\n%s", code, stdout)
	}

	defaults, _, code := runHerald(t, cleanEnv(), "config", "defaults")
	if code != 0 {
		t.Fatalf("config defaults: exit %d", code)
	}
	good := filepath.Join(dir, "defaults.yaml")
	writeFile(t, good, defaults)
	if stdout, stderr, code := runHerald(t, cleanEnv(), "config", "check", good); code != 0 || !strings.Contains(stdout, "ok") {
		t.Errorf("config check of the printed defaults: exit %d\n%s%s", code, stdout, stderr)
	}
	help, _, _ := runHerald(t, cleanEnv(), "serve", "--help")
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		if m[1] != "config" && !strings.Contains(defaults, "\n"+m[1]+": ") {
			t.Errorf("config defaults lacks --%s", m[1])
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
