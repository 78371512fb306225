package lbtest_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// herald is one `herald serve` child process. Its address stays the same
// across restarts, since nginx's upstream names it.
type herald struct {
	name, bin, addr, dbURL, notify string
	logPath                        string
	hc                             *http.Client

	proc *child // the current process
}

// child is a started child process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, once done is closed
}

// startChild starts cmd, which dies with the test process (childAttr).
func startChild(cmd *exec.Cmd) (*child, error) {
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// signal sends sig to the process unless it has exited.
func (c *child) signal(sig os.Signal) error {
	select {
	case <-c.done:
		return errors.New("the process has exited")
	default:
		return c.cmd.Process.Signal(sig)
	}
}

// stop ends the process if it still runs: SIGTERM, then SIGKILL after
// grace.
func (c *child) stop(grace time.Duration) {
	if c == nil || c.signal(syscall.SIGTERM) != nil {
		return
	}
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// startHerald starts an instance on a spare port and waits until it is
// healthy. notify is the LISTEN/NOTIFY channel, unique to the test like the
// schema, so parallel tests do not wake each other.
func startHerald(t *testing.T, name, bin, dbURL, notify string, hc *http.Client) *herald {
	t.Helper()
	h := &herald{name: name, bin: bin, dbURL: dbURL, notify: notify, hc: hc,
		logPath: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() { h.proc.stop(10 * time.Second) })
	for attempt := 1; ; attempt++ {
		h.addr = freePort(t)
		err := h.start(t)
		if err == nil {
			return h
		}
		if attempt == 3 || !strings.Contains(tail(h.logPath, 5), "address already in use") {
			t.Fatalf("start herald %s: %v\n%s", name, err, tail(h.logPath, 30))
		}
	}
}

// start runs the process on h.addr and waits up to 30 s until its
// /healthz answers 200 (pgtest has applied the migrations already).
func (h *herald) start(t *testing.T) error {
	t.Helper()
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "--- lbtest: start %s on %s at %s\n", h.name, h.addr, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(h.bin, "serve",
		"--addr", h.addr,
		"--allowed-hosts", publicHost,
		"--notify-channel", h.notify,
		"--shutdown-timeout", "5s",
		"--admin-addr", "127.0.0.1:0", // two instances: no fixed admin port
	)
	// Only the database comes from the environment; HERALD_* settings
	// of whoever runs the test must not change what it checks.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "DATABASE_URL="+h.dbURL)
	cmd.Stdout, cmd.Stderr = logf, logf
	if h.proc, err = startChild(cmd); err != nil {
		return err
	}
	if err := untilHealthy(t.Context(), h.hc, "http://"+h.addr, h.proc.done, 30*time.Second); err != nil {
		select {
		case <-h.proc.done:
			return fmt.Errorf("%v: %v", err, h.proc.err)
		default:
			return err
		}
	}
	return nil
}

// restart starts the instance again on its address after it exited.
func (h *herald) restart(t *testing.T) {
	t.Helper()
	if err := h.start(t); err != nil {
		t.Fatalf("restart herald %s on %s: %v\n%s", h.name, h.addr, err, tail(h.logPath, 30))
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (h *herald) kill(t *testing.T) {
	t.Helper()
	if err := h.proc.signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill herald %s: %v", h.name, err)
	}
	<-h.proc.done
}

// terminate sends SIGTERM, which starts a graceful shutdown.
func (h *herald) terminate(t *testing.T) {
	t.Helper()
	if err := h.proc.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("terminate herald %s: %v", h.name, err)
	}
}

// exited waits up to timeout for the process to end and returns its
// Wait error (nil for exit status 0).
func (h *herald) exited(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-h.proc.done:
		return h.proc.err
	case <-time.After(timeout):
		t.Fatalf("herald %s still running %v after SIGTERM\n%s", h.name, timeout, tail(h.logPath, 30))
		return nil
	}
}
