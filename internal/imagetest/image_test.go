// Package imagetest tests the container image (Containerfile, built by
// scripts/image) for real: it builds it with podman, runs it against the
// test database, and checks that it serves, reports its version, runs as
// the non-root user and stops cleanly on SIGTERM. Without podman it builds
// the image's context and runs the static binary from it.
package imagetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/pgtest"
)

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot(t)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runArgs are podman run's arguments for this kind of machine: where crun
// cannot set the default rlimits or cgroups (no CAP_SYS_RESOURCE, hybrid
// cgroups), runc with limits no higher than the caller's works.
func runArgs() []string {
	if v := os.Getenv("HERALD_PODMAN_RUN_ARGS"); v != "" {
		return strings.Fields(v)
	}
	args := []string{"--network", "host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"}
	if _, err := exec.LookPath("runc"); err == nil {
		return append([]string{"--runtime", "runc"}, args...)
	}
	return args
}

func TestContainerImage(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		testContextOnly(t)
		return
	}
	tag := fmt.Sprintf("localhost/herald-test:%d", os.Getpid())
	if out, err := run(t, 10*time.Minute, "scripts/image", tag); err != nil {
		t.Fatalf("scripts/image: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = run(t, time.Minute, podman, "rmi", "-f", tag) })

	out, err := run(t, time.Minute, podman, "image", "inspect", "--format", "{{.Config.User}} {{len .RootFS.Layers}} {{.Size}}", tag)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	t.Logf("image: user, layers, size: %s", strings.TrimSpace(out))
	if !strings.HasPrefix(out, "65532:65532 ") {
		t.Errorf("image user %q, want 65532:65532 (non-root)", out)
	}

	// herald version runs in the image (static binary, no libc).
	out, err = run(t, time.Minute, podman, append(append([]string{"run", "--rm"}, runArgs()...), tag, "version")...)
	if err != nil {
		t.Fatalf("podman run %s version: %v\n%s\n(set HERALD_PODMAN_RUN_ARGS to the arguments this machine needs)", tag, err, out)
	}
	rev, _ := run(t, time.Minute, "git", "rev-parse", "HEAD")
	if !strings.HasPrefix(out, "herald ") || !strings.Contains(out, "revision "+strings.TrimSpace(rev)) {
		t.Errorf("herald version in the image: %q, want the version and revision %s", out, rev)
	}

	// Serve against the test database, as the non-root user.
	_, schema := pgtest.Schema(t)
	port, admin := freePort(t), freePort(t)
	name := fmt.Sprintf("herald-test-%d", os.Getpid())
	args := append([]string{"run", "-d", "--rm", "--name", name}, runArgs()...)
	args = append(args, "-e", "DATABASE_URL="+pgtest.SchemaURL(t, schema), "-e", "HERALD_NOTIFY_CHANNEL="+schema,
		"-e", fmt.Sprintf("HERALD_ADDR=127.0.0.1:%d", port), "-e", fmt.Sprintf("HERALD_ADMIN_ADDR=127.0.0.1:%d", admin), tag)
	if out, err := run(t, time.Minute, podman, args...); err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _ = run(t, time.Minute, podman, "rm", "-f", name)
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for !ok(base + "/readyz") {
		if time.Now().After(deadline) {
			logs, _ := run(t, time.Minute, podman, "logs", name)
			t.Fatalf("the container did not become ready:\n%s", logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Post(base+"/v1/channels/img/events", "application/json", strings.NewReader(`{"data":"aGk="}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish through the container: %d %s", resp.StatusCode, body)
	}
	var pub struct {
		Event struct {
			Position string `json:"position"`
		} `json:"event"`
	}
	if err := json.Unmarshal(body, &pub); err != nil || pub.Event.Position == "" {
		t.Errorf("publish answer %s (%v)", body, err)
	}
	if !ok(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin)) {
		t.Error("/metrics on the admin port of the container")
	}
	out, _ = run(t, time.Minute, podman, "top", name, "user", "comm")
	if !strings.Contains(out, "nonroot") {
		t.Errorf("herald does not run as the non-root user in the container:\n%s", out)
	}

	// SIGTERM: a graceful stop, exit 0.
	if out, err := run(t, time.Minute, podman, "stop", "--time", "20", name); err != nil {
		t.Fatalf("podman stop: %v\n%s", err, out)
	}
	stopped = true
}

// testContextOnly is what can be checked without podman: the build
// context is made and its static binary runs.
func testContextOnly(t *testing.T) {
	t.Log("podman not installed (Debian: apt-get install -y podman runc; scripts/test installs them): " +
		"checking the image's build context and binary only")
	dir := t.TempDir()
	if out, err := run(t, 10*time.Minute, "scripts/image", "--context", dir); err != nil {
		t.Fatalf("scripts/image --context: %v\n%s", err, out)
	}
	for _, f := range []string{"herald", "ca-certificates.crt", "passwd", "group", "Containerfile"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("build context lacks %s", f)
		}
	}
	out, err := run(t, time.Minute, filepath.Join(dir, "herald"), "version")
	if err != nil || !strings.HasPrefix(out, "herald ") {
		t.Errorf("the image's herald version: %v %q", err, out)
	}
}

func ok(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
