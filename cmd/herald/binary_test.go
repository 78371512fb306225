package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := 0
	func() {
		defer binary.cleanup()
		code = m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(
			// pgx pools close their background health checker asynchronously.
			goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
			goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool).Acquire.func1"),
		); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// binary is the herald command the tests run as a process: built once per
// test run from a copy of the working tree committed to a scratch git
// repository, so that the build carries VCS information (revision,
// modified) as a build in a clone does. HERALD_TEST_BINARY runs the tests
// against another build instead (a release, or the code before a fix).
var binary builtBinary

type builtBinary struct {
	once sync.Once
	dir  string // scratch directory: src/ (the repository), herald
	path string
	err  error
}

func (b *builtBinary) cleanup() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// heraldBinary returns the path of the herald binary.
func heraldBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		if p := os.Getenv("HERALD_TEST_BINARY"); p != "" {
			binary.path = p
			return
		}
		binary.dir, binary.err = os.MkdirTemp("", "herald-bin-")
		if binary.err != nil {
			return
		}
		src := filepath.Join(binary.dir, "src")
		if binary.err = copyTree(src); binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "herald")
		binary.err = buildHerald(src, binary.path)
	})
	if binary.err != nil {
		t.Fatalf("build herald: %v", binary.err)
	}
	return binary.path
}

// repoRoot is the module root (this package is cmd/herald).
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// copyTree copies the working tree's files (tracked and untracked, not
// ignored) into dst and commits them there.
func copyTree(dst string) error {
	root := repoRoot()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	for name := range strings.SplitSeq(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			return err
		}
		st, err := os.Stat(filepath.Join(root, name))
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(name)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, st.Mode().Perm()); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"init", "-q"},
		{"add", "-A"},
		{"-c", "user.name=herald test", "-c", "user.email=test@herald.invalid", "commit", "-q", "-m", "working tree"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dst
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v: %s", args, err, out)
		}
	}
	return nil
}

// buildHerald builds ./cmd/herald of the repository src into out, with
// VCS stamping on whatever GOFLAGS say, and -trimpath so that the build
// cache serves every scratch copy (its path changes each run); extra flags
// go to go build.
func buildHerald(src, out string, extra ...string) error {
	args := append([]string{"build", "-trimpath", "-buildvcs=true", "-o", out}, extra...)
	cmd := exec.Command("go", append(args, "./cmd/herald")...)
	cmd.Dir = src
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, b)
	}
	return nil
}

// cleanEnv is the test's environment without the variables herald reads,
// so that the developer's settings do not change what the tests see.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HERALD_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is a running herald (or shell) process.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	err            error
}

// startProc starts name with args in dir (empty: a temporary directory)
// and env; it is killed when the test ends.
func startProc(t *testing.T, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // kill its children too
	p := &proc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(syscall.SIGKILL) })
	return p
}

// stop sends sig to the process group and waits for the process.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.stop(syscall.SIGKILL)
		t.Fatalf("%v did not exit within %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Args, timeout, p.stdout, p.stderr)
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%v: %v", p.cmd.Args, p.err)
	}
	return 0
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// runHerald runs the binary to its end and returns what it printed and its
// exit code.
func runHerald(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := startProc(t, "", env, heraldBinary(t), args...)
	code = p.wait(t, time.Minute)
	return p.stdout.String(), p.stderr.String(), code
}

// listening matches the server's log line once it serves.
var listening = regexp.MustCompile(`msg="herald listening" addr=(\S+)`)

// serveProc is a herald serve process.
type serveProc struct {
	*proc
	addr string // host:port it listens on
	base string // http://127.0.0.1:port
}

// startServer runs herald serve with args on a random port (unless args
// give --addr) and waits until it answers /healthz.
func startServer(t *testing.T, dir string, env []string, args ...string) *serveProc {
	t.Helper()
	env = append(env, "HERALD_ADDR=127.0.0.1:0", "HERALD_ADMIN_ADDR=127.0.0.1:0")
	p := startProc(t, dir, env, heraldBinary(t), append([]string{"serve"}, args...)...)
	return awaitServe(t, p, fmt.Sprintf("herald serve %v", args))
}

// awaitServe waits until the server p runs logs where it listens and
// answers /healthz; what names it in failures.
func awaitServe(t *testing.T, p *proc, what string) *serveProc {
	t.Helper()
	var addr string
	waitUntil(t, what+" to listen", time.Minute, func() bool {
		if p.exited() {
			t.Fatalf("%s exited:\n%s", what, p.stderr)
		}
		m := listening.FindStringSubmatch(p.stderr.String())
		if m == nil {
			return false
		}
		addr = m[1]
		return true
	})
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: listen address %q: %v", what, addr, err)
	}
	s := &serveProc{proc: p, addr: addr, base: "http://127.0.0.1:" + port}
	waitUntil(t, what+" to answer /healthz", 30*time.Second, func() bool { return httpOK(s.base + "/healthz") })
	return s
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lines returns the non-empty lines of s.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// httpOK reports whether a GET of url answers 200.
func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
