package gateway

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// apilintDir holds the pinned linters (package.json and package-lock.json).
const apilintDir = "../tools/apilint"

// TestAPIDocumentsLint lints the OpenAPI document with Redocly CLI's
// recommended rules (tools/apilint/redocly.yaml: all of them but
// info-license) and validates the AsyncAPI document with the AsyncAPI
// parser; any error or warning fails. The linters are npm packages pinned
// in tools/apilint, installed here with `npm ci` when missing or older than
// the lockfile; without npm the test is skipped.
func TestAPIDocumentsLint(t *testing.T) {
	t.Parallel()
	redocly, node := apilintTools(t)
	dir := t.TempDir()
	write := func(name string, doc func() ([]byte, error)) string {
		b, err := doc()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	openapi := write("openapi.json", openAPIDoc)
	asyncapi := write("asyncapi.json", asyncAPIDoc)

	t.Run("openapi", func(t *testing.T) {
		t.Parallel()
		cmd := exec.CommandContext(t.Context(), redocly, "lint", "--config", filepath.Join(apilintDir, "redocly.yaml"), "--format", "json", openapi)
		cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		runErr := cmd.Run()
		var report struct {
			Totals struct {
				Errors, Warnings int
			} `json:"totals"`
			Problems []struct {
				RuleID   string `json:"ruleId"`
				Severity string `json:"severity"`
				Message  string `json:"message"`
				Location []struct {
					Pointer string `json:"pointer"`
				} `json:"location"`
			} `json:"problems"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
			t.Fatalf("redocly lint: %v (exit: %v)\nstdout: %s\nstderr: %s", err, runErr, stdout.Bytes(), stderr.Bytes())
		}
		for _, p := range report.Problems {
			where := ""
			if len(p.Location) > 0 {
				where = p.Location[0].Pointer
			}
			t.Errorf("%s %s at %s: %s", p.Severity, p.RuleID, where, p.Message)
		}
		if report.Totals.Errors+report.Totals.Warnings > 0 || runErr != nil {
			t.Errorf("redocly lint: %d errors, %d warnings (exit: %v)", report.Totals.Errors, report.Totals.Warnings, runErr)
		}
	})
	t.Run("asyncapi", func(t *testing.T) {
		t.Parallel()
		out, err := exec.CommandContext(t.Context(), node, filepath.Join(apilintDir, "validate-asyncapi.mjs"), asyncapi).CombinedOutput()
		if err != nil {
			t.Errorf("AsyncAPI validation failed (%v):\n%s", err, out)
		}
	})
}

// apilintTools installs tools/apilint when needed and returns the paths of
// redocly and node.
func apilintTools(t *testing.T) (redocly, node string) {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not on PATH: skipping the OpenAPI and AsyncAPI linters (install Node.js and npm to run them; CI has them)")
	}
	node, err = exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH: skipping the OpenAPI and AsyncAPI linters")
	}
	redocly = filepath.Join(apilintDir, "node_modules", ".bin", "redocly")
	lock, err := os.Stat(filepath.Join(apilintDir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bin, err := os.Stat(redocly); err != nil || bin.ModTime().Before(lock.ModTime()) {
		// --ignore-scripts: nothing the linters need runs at install
		// time, and one dependency's postinstall only sends analytics.
		cmd := exec.CommandContext(t.Context(), npm, "ci", "--prefix", apilintDir, "--no-audit", "--no-fund", "--ignore-scripts")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci --prefix %s: %v\n%s", apilintDir, err, out)
		}
		now := time.Now()
		if err := os.Chtimes(redocly, now, now); err != nil {
			t.Fatal(err)
		}
	}
	return redocly, node
}

// TestEndpointsServed checks the documents against the mux Register
// builds: every documented operation is served by exactly its own pattern,
// and every pattern gateway registers under /v1/ is documented.
func TestEndpointsServed(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	New(nil, Config{}).Register(mux)
	documented := map[string]bool{}
	for _, rt := range restRoutes {
		documented[rt.method+" "+rt.path] = true
	}
	for _, ep := range streamEndpoints {
		documented[ep.method+" "+ep.path] = true
	}
	for op := range documented {
		method, path, _ := strings.Cut(op, " ")
		target := strings.NewReplacer("{channel}", "c", "{position}", "1").Replace(path)
		_, pattern := mux.Handler(httptest.NewRequest(method, target, nil))
		if pattern != op {
			t.Errorf("%s is documented but served by %q", op, pattern)
		}
	}

	// The patterns registered by hand, found in the package's source.
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			pattern := constString(call.Args[0])
			method, path, found := strings.Cut(pattern, " ")
			if !found || !strings.HasPrefix(path, "/v1/") || method != strings.ToUpper(method) {
				return true // not a constant, outside the API, or a catch-all of any method
			}
			if !documented[pattern] {
				t.Errorf("%s: %s is served but not in the OpenAPI document (add it to restRoutes or streamEndpoints)", fset.Position(call.Pos()), pattern)
			}
			return true
		})
	}
}

// constString evaluates a string literal or a concatenation of literals
// and the package's string constants; "" otherwise.
func constString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.BasicLit:
		s, _ := strconv.Unquote(e.Value)
		return s
	case *ast.BinaryExpr:
		return constString(e.X) + constString(e.Y)
	case *ast.Ident:
		if e.Name == "asyncAPIPath" {
			return asyncAPIPath
		}
	}
	return ""
}

// TestAsyncAPIMessages pins what the AsyncAPI document promises: the
// WebSocket frames are the Connect RPC's messages, and the SSE messages
// carry the server's event names.
func TestAsyncAPIMessages(t *testing.T) {
	t.Parallel()
	b, err := asyncAPIDoc()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AsyncAPI   string                              `json:"asyncapi"`
		Channels   map[string]struct{ Address string } `json:"channels"`
		Components struct {
			Schemas  map[string]json.RawMessage `json:"schemas"`
			Messages map[string]struct {
				Name    string `json:"name"`
				Payload struct {
					Ref string `json:"$ref"`
				} `json:"payload"`
			} `json:"messages"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Errorf("asyncapi %q", doc.AsyncAPI)
	}
	if doc.Channels["websocket"].Address != "/v1/ws" || doc.Channels["sse"].Address != "/v1/sse" {
		t.Errorf("channels %+v", doc.Channels)
	}
	for msg, want := range map[string][2]string{
		"ConnectRequest":  {"ConnectRequest", "herald.v1.ConnectRequest"},
		"ConnectResponse": {"ConnectResponse", "herald.v1.ConnectResponse"},
		"SSESubscribed":   {sseSubscribed, "herald.v1.Subscribed"},
		"SSEEvent":        {"event", "herald.v1.Event"},
		"SSEEnd":          {sseEnd, "herald.v1.Error"},
		"SSESignal":       {sseSignal, "herald.v1.Signal"},
		"SSEPresence":     {ssePresence, "herald.v1.PresenceChange"},
	} {
		m := doc.Components.Messages[msg]
		ref := strings.TrimPrefix(m.Payload.Ref, "#/components/schemas/")
		if m.Name != want[0] || ref != want[1] {
			t.Errorf("message %s: name %q payload %q, want %q %q", msg, m.Name, ref, want[0], want[1])
		}
		if _, ok := doc.Components.Schemas[ref]; !ok {
			t.Errorf("message %s: schema %s missing", msg, ref)
		}
	}
	var names []string
	for name := range doc.Components.Schemas {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, want := range []string{"herald.v1.PublishRequest", "herald.v1.SubscribeRequest", "herald.v1.StreamEnd"} {
		if !slices.Contains(names, want) {
			t.Errorf("schemas %v lack %s", names, want)
		}
	}
}
