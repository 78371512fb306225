package lbtest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// publicHost is the name clients use for the deployment: nginx's
// server_name in docs/operations.md and the instances' --allowed-hosts.
const publicHost = "herald.example.com"

var binDir string // where heraldBinary builds, removed after the run

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-lbtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbtest:", err)
		os.Exit(1)
	}
	binDir = dir
	code := 0
	func() {
		defer os.RemoveAll(dir)
		defer func() {
			// goleak.VerifyTestMain would exit before the removal.
			if err := goleak.Find(
				// pgx pools close their background health checker asynchronously.
				goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
				goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool).Acquire.func1"),
			); err != nil && code == 0 {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				code = 1
			}
		}()
		code = m.Run()
	}()
	os.Exit(code)
}

var build struct {
	once sync.Once
	path string
	err  error
}

// heraldBinary builds cmd/herald once per test process (go build, so the
// instances are real processes that can be killed) and returns its path.
func heraldBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		build.path = filepath.Join(binDir, "herald")
		// go test puts its own go first on PATH; the package directory
		// is inside the module, so the import path resolves from here.
		out, err := exec.Command("go", "build", "-o", build.path, "github.com/heraldrt/herald/cmd/herald").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build cmd/herald: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// freePort returns a loopback address with a port nothing listened on a
// moment ago. Whoever binds it next may lose a race to another process;
// the starters below retry with a new port when that happens.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// waitFor polls cond every 10 ms until it holds, and fails the test with
// what after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("test ended while waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// healthy reports whether GET base/healthz answers 200 for publicHost.
func healthy(ctx context.Context, hc *http.Client, base string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return false
	}
	req.Host = publicHost
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// untilHealthy polls base/healthz until it answers 200, and gives up when
// done is closed (the process behind it exited) or after timeout.
func untilHealthy(ctx context.Context, hc *http.Client, base string, done <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !healthy(ctx, hc, base) {
		select {
		case <-done:
			return errors.New("the process exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/healthz did not answer 200 within %v", base, timeout)
		}
	}
	return nil
}

// tail returns the last n lines of the file at path, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
