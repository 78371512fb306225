package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/pgtest"
)

// TestBenchFailoverKillPID runs `herald bench failover` as a user would:
// two `herald serve` processes on one database, the first killed -9 by the
// bench through --kill-pid; every subscriber resumes on the second with
// nothing lost, and the exit code says so.
func TestBenchFailoverKillPID(t *testing.T) {
	_, schema := pgtest.Schema(t)
	env := cleanEnv("DATABASE_URL="+pgtest.SchemaURL(t, schema), "HERALD_NOTIFY_CHANNEL="+schema)
	a := startServer(t, "", env)
	b := startServer(t, "", env)
	stdout, stderr, code := runHerald(t, cleanEnv(), "bench", "failover", "--server", a.base+","+b.base,
		"--kill-pid", strconv.Itoa(a.cmd.Process.Pid), "--subs", "20", "--rate", "50",
		"--before", "500ms", "--after", "1s", "--settle", "100ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var r struct {
		Passed  bool `json:"passed"`
		Resumed int  `json:"resumed"`
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || !r.Passed || r.Resumed != 20 {
		t.Fatalf("report %+v (%v):\n%s", r, err, stdout)
	}
	if !a.exited() {
		t.Fatal("the first server is still running")
	}
	if !strings.Contains(stderr, "] published") {
		t.Errorf("no progress line on stderr:\n%s", stderr)
	}
}

// TestBenchUsage: mistakes in a bench command line exit 2 naming them.
func TestBenchUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "want one SCENARIO"},
		{[]string{"bench", "fanot"}, "did you mean fanout?"},
		{[]string{"bench", "failover"}, "two server addresses"},
		{[]string{"bench", "failover", "--server", "http://a:1,http://b:2"}, "--kill-pid or --kill-cmd"},
		{[]string{"bench", "idle", "--transport", "grpc"}, `transport "grpc"`},
		{[]string{"bench", "publish", "--mode", "batch"}, "closed or pipelined"},
		{[]string{"bench", "fanout", "--server", "127.0.0.1:8080"}, "want http://HOST:PORT"},
	} {
		_, stderr, code := runHerald(t, cleanEnv(), tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}
