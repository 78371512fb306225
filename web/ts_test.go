package web_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/web"
)

// TestTypeScript checks the TypeScript side against a real server:
//
//   - web/herald.d.ts type-checks (tsc --strict) with a program that uses
//     herald.js, and refuses what it must (@ts-expect-error lines), and
//     that program, run by Node against the server, finds the shapes the
//     declarations promise (tools/ts/check/herald-node.ts);
//   - the client generated from the proto (gen/es, protoc-gen-es) works
//     with @connectrpc/connect-node over the Connect protocol (binary) and
//     gRPC: publish, a Subscribe stream resumed from its cursor, history
//     (tools/ts/check/connect-node.ts);
//   - the server serves the declarations next to the client.
//
// tsc and the Connect packages are pinned in tools/ts (installed with npm
// ci when missing, as make tools does). The programs are compiled in a
// scratch copy of the repository's layout, so that the generated code
// finds its runtime (@bufbuild/protobuf) as an application would.
func TestTypeScript(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	modules := filepath.Join(root, "tools", "ts", "node_modules")
	if _, err := os.Stat(filepath.Join(modules, ".bin", "tsc")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("npm is not installed: the TypeScript tools (tools/ts) need Node 20 or newer and npm")
		}
		run(t, root, nil, npm, "ci", "--prefix", "tools/ts", "--no-audit", "--no-fund")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: the TypeScript tests need Node 20 or newer")
	}

	dir := t.TempDir()
	for _, d := range []string{"web", "gen/es", "tools/ts/check"} {
		copyTree(t, filepath.Join(root, d), filepath.Join(dir, d))
	}
	for _, f := range []string{"tools/ts/package.json"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(dir, f))
	}
	for _, link := range []string{"node_modules", "tools/ts/node_modules"} {
		if err := os.Symlink(modules, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	// ES modules everywhere (gen/es has no package.json of its own).
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, nil, node, filepath.Join(modules, "typescript", "bin", "tsc"), "-p", "tools/ts/check")

	srv, err := server.New(t.Context(), server.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	base := "http://" + srv.Addr()

	resp, err := http.Get(base + "/herald.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, err := fs.ReadFile(web.Files, "herald.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(served, want) ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/typescript") {
		t.Fatalf("GET /herald.d.ts: %s, %q, %d bytes (want %d)", resp.Status, resp.Header.Get("Content-Type"), len(served), len(want))
	}

	for _, program := range []string{"herald-node.js", "connect-node.js"} {
		out := run(t, dir, []string{"HERALD_URL=" + base}, node, filepath.Join("tools", "ts", "check", program))
		t.Logf("%s: %s", program, strings.TrimSpace(out))
	}
}

// run runs a command in dir, with env added to the environment, and
// returns its output; it fails the test when the command fails or takes
// over a minute.
func run(t *testing.T, dir string, env []string, name string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			if d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		copyFile(t, path, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
