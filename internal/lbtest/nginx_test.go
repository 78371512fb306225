package lbtest_test

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The example in docs/operations.md names these; the test puts its own
// addresses in their place and leaves everything else as documented.
const (
	docsPath      = "../../docs/operations.md"
	docsMarker    = "TestBehindNginx"
	docsUpstreamA = "10.0.0.11:8080"
	docsUpstreamB = "10.0.0.12:8080"
	docsListen    = "listen 80;"
)

// findNginx returns the nginx binary, or skips the test.
func findNginx(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx" // not on a non-root PATH on Debian
	}
	t.Skip("nginx is not installed (not on PATH, no /usr/sbin/nginx): this test runs Herald behind a real nginx; " +
		"install it (Debian: apt-get install -y nginx-light; scripts/test does so when run as root with apt-get)")
	return ""
}

// docsConfig returns the nginx example of docs/operations.md: the first
// ```nginx block after the comment that names this test.
func docsConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, docsMarker)
	if i < 0 {
		t.Fatalf("%s does not mention %s before its nginx example", docsPath, docsMarker)
	}
	s = s[i:]
	const open, end = "```nginx\n", "\n```"
	i = strings.Index(s, open)
	if i < 0 {
		t.Fatalf("%s: no ```nginx block after %q", docsPath, docsMarker)
	}
	s = s[i+len(open):]
	j := strings.Index(s, end)
	if j < 0 {
		t.Fatalf("%s: the nginx block does not end", docsPath)
	}
	return s[:j]
}

// nginx is a child nginx process on a spare port with its own prefix,
// configuration, pid and log files; it never touches a system nginx.
type nginx struct {
	base      string // http://127.0.0.1:port
	dir       string
	accessLog string
	errorLog  string
	proc      *child
}

// startNginx runs the documented configuration with upstreams a and b and
// waits until a request through it reaches Herald.
func startNginx(t *testing.T, bin, example, a, b string, hc *http.Client) *nginx {
	t.Helper()
	for attempt := 1; ; attempt++ {
		n := &nginx{dir: t.TempDir()}
		n.accessLog = filepath.Join(n.dir, "access.log")
		n.errorLog = filepath.Join(n.dir, "error.log")
		listen := freePort(t)
		n.base = "http://" + listen
		conf := filepath.Join(n.dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(n.config(t, example, a, b, listen)), 0o644); err != nil {
			t.Fatal(err)
		}
		// -e: the error log before the configuration is read, which
		// otherwise is the system's /var/log/nginx/error.log.
		cmd := exec.Command(bin, "-p", n.dir+"/", "-c", conf, "-e", n.errorLog)
		out, err := os.Create(filepath.Join(n.dir, "stderr"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		n.proc, err = startChild(cmd)
		out.Close()
		if err != nil {
			t.Fatalf("start nginx: %v", err)
		}
		// SIGTERM is nginx's fast shutdown.
		t.Cleanup(func() { n.proc.stop(5 * time.Second) })
		err = untilHealthy(t.Context(), hc, n.base, n.proc.done, 20*time.Second)
		if err == nil {
			return n
		}
		if log := tail(n.errorLog, 10); attempt < 3 && strings.Contains(log, "Address already in use") {
			continue
		}
		t.Fatalf("no healthy Herald through nginx on %s: %v\nerror.log:\n%s\nstderr:\n%s",
			n.base, err, tail(n.errorLog, 10), tail(filepath.Join(n.dir, "stderr"), 10))
	}
}

// config wraps the documented http-context example in a main
// configuration of the test's own: one foreground process whose pid,
// logs and temp files live in n.dir, and an access log naming the
// instance that served each request.
func (n *nginx) config(t *testing.T, example, a, b, listen string) string {
	t.Helper()
	for _, r := range [][2]string{{docsUpstreamA, a}, {docsUpstreamB, b}, {docsListen, "listen " + listen + ";"}} {
		if c := strings.Count(example, r[0]); c != 1 {
			t.Fatalf("the nginx example in %s has %q %d times; the test replaces it and needs it once", docsPath, r[0], c)
		}
		example = strings.ReplaceAll(example, r[0], r[1])
	}
	if !strings.Contains(example, "server_name "+publicHost+";") {
		t.Fatalf("the nginx example in %s does not serve %s, the name the test's clients use", docsPath, publicHost)
	}
	// master_process off: nginx serves from the one child process, so a
	// SIGKILL (or the test's death, through childAttr) stops it entirely.
	return fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
events { worker_connections 1024; }
http {
    log_format lbtest '$msec $request_method $uri $status upstream=$upstream_addr upstream_status=$upstream_status '
                      'connect=$upstream_connect_time header=$upstream_header_time total=$request_time';
    access_log %[1]s/access.log lbtest;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

    # From %[2]s:
%[3]s
}
`, n.dir, docsPath, example)
}

// accessLines returns the access log's lines from byte offset from on,
// and the offset after them.
func (n *nginx) accessLines(t *testing.T, from int64) ([]string, int64) {
	t.Helper()
	f, err := os.Open(n.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		from += int64(len(sc.Bytes())) + 1
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines, from
}

// servedBy waits until a request through nginx is answered by the
// instance at addr: after a restart, until nginx has put it back.
func (n *nginx) servedBy(t *testing.T, hc *http.Client, addr string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_, off := n.accessLines(t, 0)
	want := "/healthz 200 upstream=" + addr + " "
	waitFor(t, timeout, "nginx to send a request to "+addr, func() bool {
		healthy(t.Context(), hc, n.base)
		var lines []string
		lines, off = n.accessLines(t, off)
		for _, l := range lines {
			if strings.Contains(l, want) {
				return true
			}
		}
		return false
	})
	return time.Since(start)
}

// count502 counts requests nginx answered 502 itself (no instance could
// take them).
func (n *nginx) count502(t *testing.T) int {
	t.Helper()
	lines, _ := n.accessLines(t, 0)
	c := 0
	for _, l := range lines {
		if strings.Contains(l, " 502 upstream=") {
			c++
		}
	}
	return c
}
