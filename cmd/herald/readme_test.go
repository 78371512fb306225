package main

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldrt/herald/internal/pgtest"
)

// TestREADME runs the README's examples as printed, against a real herald
// built from this tree, in the README's order (later examples see what
// earlier ones published, as a reader following along does):
//
//   - Every ```sh block runs, one command at a time (a line, with its
//     trailing-backslash continuations), under bash in a scratch directory
//     shared by the whole README. The block marked <!-- readme-test: setup -->
//     must hold exactly the two set-up commands; its serve command is the
//     server the other examples talk to, and make test is only checked to
//     exist (it is the whole test suite).
//   - Rewritten for the machine, nothing else: "go run ./cmd/herald" runs the
//     built binary, 127.0.0.1:8080 becomes the address of the server
//     started last in the block (or the set-up one), a postgres:// URL
//     becomes a fresh schema of the test database (for psql, set through
//     libpq's options), curl gets
//     --fail-with-body (an HTTP error fails the example), and herald
//     clients get HERALD_SERVER.
//   - "herald serve" starts a server on a random port that the rest of its
//     block talks to; it must become healthy, and stop cleanly at the end of
//     the block. "herald tail" and "curl -N" stream: they run in the
//     background until their expected output has appeared.
//   - Any other command must exit 0 within a minute. A trailing
//     "# -> TEXT" must appear in its output; "# -> error: TEXT" means it must
//     fail, saying TEXT. Comment lines indented three or more spaces right
//     after a command ("#   id: 1") are lines its output must contain, in
//     that order. In both, "..." stands for anything and whitespace runs
//     compare equal.
//   - A ```text block of "> " and "< " lines is a WebSocket transcript: each
//     "> " frame is sent to /v1/ws (herald.v1.json), and a frame matching
//     each "< " line must arrive (in any order after it is sent).
//   - ```js and ```go blocks are fragments and are not run.
func TestREADME(t *testing.T) {
	blocks := readmeBlocks(t)
	r := &readmeRun{t: t, dir: t.TempDir(), bin: heraldBinary(t)}
	var setup *mdBlock
	for i := range blocks {
		if blocks[i].marker == "setup" {
			setup = &blocks[i]
		}
	}
	if setup == nil {
		t.Fatal("README has no block marked <!-- readme-test: setup -->")
	}
	r.checkSetup(setup)
	for _, b := range blocks {
		if b == *setup {
			continue
		}
		switch {
		case b.info == "sh":
			t.Run(fmt.Sprintf("line %d", b.line), func(t *testing.T) { r.runShell(t, b) })
		case b.info == "text" && isTranscript(b.lines):
			t.Run(fmt.Sprintf("line %d websocket", b.line), func(t *testing.T) { r.runTranscript(t, b) })
		}
	}
}

// TestREADMEFlagTable: the README's configuration table lists every flag
// of herald serve, and no other.
func TestREADMEFlagTable(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	row := regexp.MustCompile("^\\| `--")
	for l := range strings.SplitSeq(string(data), "\n") {
		if row.MatchString(l) {
			first := strings.Split(l, "|")[1]
			for _, m := range regexp.MustCompile("`--([a-z0-9-]+)`").FindAllStringSubmatch(first, -1) {
				documented = append(documented, m[1])
			}
		}
	}
	help, _, code := runHerald(t, cleanEnv(), "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d", code)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		flags = append(flags, m[1])
	}
	slices.Sort(documented)
	slices.Sort(flags)
	if !slices.Equal(documented, flags) {
		t.Fatalf("README documents\n%v\nherald serve has\n%v", documented, flags)
	}
}

// mdBlock is a fenced code block of README.md.
type mdBlock struct {
	info   string // the fence's language
	marker string // from a <!-- readme-test: MARKER --> line just before it
	line   int    // of the opening fence
	lines  string // the content, joined with "\n"
}

func (b mdBlock) split() []string { return strings.Split(b.lines, "\n") }

func readmeBlocks(t *testing.T) []mdBlock {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	markerRE := regexp.MustCompile(`^<!-- readme-test: (\S+) -->$`)
	var (
		blocks  []mdBlock
		cur     *mdBlock
		content []string
		marker  string
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(l, "```"):
			cur = &mdBlock{info: strings.TrimPrefix(l, "```"), marker: marker, line: n}
			content = nil
		case cur != nil && l == "```":
			cur.lines = strings.Join(content, "\n")
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			content = append(content, l)
		}
		if m := markerRE.FindStringSubmatch(l); m != nil {
			marker = m[1]
		} else if strings.TrimSpace(l) != "" {
			marker = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// example is one command of a shell block and what it must print.
type example struct {
	line     int
	text     string   // shell text, as printed
	expect   []string // lines its output must contain, in order
	contains string   // from "# -> TEXT"
	fails    bool     // "# -> error: TEXT"
}

var arrow = regexp.MustCompile(`\s#\s*->\s*(.*)$`)

func parseExamples(b mdBlock) []example {
	var out []example
	var cur *example
	cont := false
	for i, l := range b.split() {
		n := b.line + 1 + i
		switch {
		case cont:
			cur.text += "\n" + l
		case strings.HasPrefix(l, "#   ") && cur != nil && strings.TrimSpace(cur.text) != "":
			cur.expect = append(cur.expect, strings.TrimSpace(l[1:]))
			continue
		case strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "":
			cur = nil // prose
			continue
		default:
			out = append(out, example{line: n, text: l})
			cur = &out[len(out)-1]
		}
		cont = strings.HasSuffix(l, "\\")
		if !cont {
			if m := arrow.FindStringSubmatch(cur.text); m != nil {
				cur.contains = m[1]
				if rest, ok := strings.CutPrefix(m[1], "error:"); ok {
					cur.contains, cur.fails = strings.TrimSpace(rest), true
				}
			}
		}
	}
	return out
}

// readmeRun holds what the README's examples share.
type readmeRun struct {
	t        *testing.T
	dir      string // the scratch working directory
	bin      string
	main     *serveProc // from the set-up block
	database string     // URL of a fresh schema, once an example needs PostgreSQL
}

var (
	goRun      = regexp.MustCompile(`go run \./cmd/herald\b`)
	defaultURL = regexp.MustCompile(`127\.0\.0\.1:8080\b`)
	pgURL      = regexp.MustCompile(`postgres(ql)?://[^'"\s]+`)
	curlCmd    = regexp.MustCompile(`(^|[|;&(]\s*|\s)curl `)
	curlN      = regexp.MustCompile(`curl\b[^|;&]*\s-[a-zA-Z]*N`)
)

func (r *readmeRun) checkSetup(b *mdBlock) {
	t := r.t
	ex := parseExamples(*b)
	var cmds []string
	for _, e := range ex {
		cmds = append(cmds, strings.TrimSpace(strings.SplitN(e.text, "#", 2)[0]))
	}
	if !slices.Equal(cmds, []string{"go run ./cmd/herald serve", "make test"}) {
		t.Fatalf("README line %d: the set-up block must give exactly the two set-up commands "+
			"(go run ./cmd/herald serve; make test), has %q", b.line, cmds)
	}
	mk := exec.Command("make", "-n", "test")
	mk.Dir = repoRoot()
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("README line %d: make test: %v\n%s", b.line, err, out)
	}
	r.main = r.startServe(t, ex[0], cleanEnv())
}

// rewrite adapts an example to this machine (see TestREADME).
func (r *readmeRun) rewrite(text string, srv *serveProc) string {
	text = goRun.ReplaceAllLiteralString(text, r.bin)
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.base, "http://"), ":")
	text = defaultURL.ReplaceAllLiteralString(text, "127.0.0.1:"+port)
	if pgURL.MatchString(text) {
		if r.database == "" { // one database for the whole README, as a reader has
			_, schema := pgtest.Schema(r.t)
			r.database = pgtest.SchemaURL(r.t, schema)
		}
		dsn := r.database
		if strings.Contains(text, "psql ") {
			dsn = libpqURL(r.t, dsn)
		}
		text = pgURL.ReplaceAllLiteralString(text, dsn)
	}
	return curlCmd.ReplaceAllString(text, "${1}curl --fail-with-body ")
}

// libpqURL is u for psql: libpq refuses the search_path parameter that
// pgx takes, and sets the schema through options instead.
func libpqURL(t *testing.T, u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatalf("parse %s: %v", u, err)
	}
	q := parsed.Query()
	if schema := q.Get("search_path"); schema != "" {
		q.Del("search_path")
		q.Set("options", "-csearch_path="+schema)
	}
	parsed.RawQuery = q.Encode()
	return parsed.String()
}

func (r *readmeRun) startServe(t *testing.T, e example, env []string) *serveProc {
	t.Helper()
	script := r.rewrite(e.text, r.mainOr(nil))
	p := startProc(t, r.dir, append(env, "HERALD_ADDR=127.0.0.1:0", "HERALD_ADMIN_ADDR=127.0.0.1:0"), "bash", "-c", script)
	return awaitServe(t, p, fmt.Sprintf("README line %d (%s)", e.line, e.text))
}

func (r *readmeRun) mainOr(s *serveProc) *serveProc {
	if s != nil {
		return s
	}
	if r.main != nil {
		return r.main
	}
	return &serveProc{base: "http://127.0.0.1:8080"}
}

// running is a streaming example left running until the end of its block.
type running struct {
	example
	p *proc
}

func (r *readmeRun) runShell(t *testing.T, b mdBlock) {
	var (
		srv     *serveProc // started in this block
		streams []running
	)
	defer func() {
		for _, s := range streams {
			r.finishStream(t, s)
		}
		if srv != nil {
			srv.stop(syscall.SIGTERM)
			if code := srv.wait(t, 30*time.Second); code != 0 {
				t.Errorf("README line %d: the server exited with %d on SIGTERM:\n%s", b.line, code, srv.stderr)
			}
		}
	}()
	for _, e := range parseExamples(b) {
		env := cleanEnv("HERALD_SERVER=" + r.mainOr(srv).base)
		switch {
		case goRun.MatchString(e.text) && strings.Contains(e.text, "cmd/herald serve"):
			if srv != nil {
				t.Fatalf("README line %d: a second server in one block", e.line)
			}
			srv = r.startServe(t, e, env)
		case strings.Contains(e.text, "cmd/herald tail") || curlN.MatchString(e.text):
			p := startProc(t, r.dir, env, "bash", "-c", r.rewrite(e.text, r.mainOr(srv)))
			streams = append(streams, running{e, p})
			// A reader following along sees the stream's output before
			// typing the next command: give it a moment to print what it
			// must (a replay shows the log as it is now, so a later edit
			// would otherwise change what it prints). Its expectations may
			// also need later commands: those are checked at the end.
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !p.exited(); {
				if checkOutput(e, p.stdout.String()) == "" {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		default:
			p := startProc(t, r.dir, env, "bash", "-c", r.rewrite(e.text, r.mainOr(srv)))
			code := p.wait(t, time.Minute)
			out := p.stdout.String() + p.stderr.String()
			switch {
			case e.fails && code == 0:
				t.Fatalf("README line %d: %s\nsucceeded, want it to fail:\n%s", e.line, e.text, out)
			case !e.fails && code != 0:
				t.Fatalf("README line %d: %s\nexit %d:\n%s", e.line, e.text, code, out)
			}
			if msg := checkOutput(e, out); msg != "" {
				t.Fatalf("README line %d: %s\n%s", e.line, e.text, msg)
			}
		}
	}
}

// finishStream waits until a streaming example printed what it must, then
// stops it.
func (r *readmeRun) finishStream(t *testing.T, s running) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		msg := checkOutput(s.example, s.p.stdout.String())
		if msg == "" {
			break
		}
		if s.p.exited() || time.Now().After(deadline) {
			t.Errorf("README line %d: %s\n%s\nstderr:\n%s", s.line, s.text, msg, s.p.stderr)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.p.stop(syscall.SIGTERM)
}

// checkOutput returns what out lacks of e's expectations, with out, or "".
func checkOutput(e example, out string) string {
	if e.contains != "" && !pattern(e.contains, false).MatchString(normalize(out)) {
		return fmt.Sprintf("output does not contain %q:\n%s", e.contains, out)
	}
	got := lines(out)
	i := 0
	for _, w := range e.expect {
		if w == "..." {
			continue
		}
		re := pattern(w, true)
		for i < len(got) && !re.MatchString(normalize(got[i])) {
			i++
		}
		if i == len(got) {
			return fmt.Sprintf("output has no line %q (after the lines matched before it):\n%s", w, out)
		}
		i++
	}
	return ""
}

// normalize makes text compare equal whatever its spacing: runs of white
// space become one space, and none follows ':' or ',' (protojson may add
// one there).
func normalize(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.NewReplacer(": ", ":", ", ", ",").Replace(s)
}

// pattern compiles an expectation: "..." stands for anything.
func pattern(want string, whole bool) *regexp.Regexp {
	parts := strings.Split(normalize(want), "...")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	re := strings.Join(parts, ".*")
	if whole {
		re = "^" + re + "$"
	}
	return regexp.MustCompile(re)
}

func isTranscript(block string) bool {
	for l := range strings.SplitSeq(block, "\n") {
		if !strings.HasPrefix(l, "> ") && !strings.HasPrefix(l, "< ") {
			return false
		}
	}
	return block != ""
}

// runTranscript plays a WebSocket transcript against the main server.
func (r *readmeRun) runTranscript(t *testing.T, b mdBlock) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	url := "ws" + strings.TrimPrefix(r.main.base, "http") + "/v1/ws"
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"herald.v1.json"}})
	if err != nil {
		t.Fatalf("README line %d: dial %s: %v", b.line, url, err)
	}
	defer conn.CloseNow()
	frames := make(chan string, 1024)
	go func() {
		defer close(frames)
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			frames <- string(data)
		}
	}()
	var received []string // not matched yet
	for i, l := range b.split() {
		n := b.line + 1 + i
		frame := l[2:]
		if strings.HasPrefix(l, "> ") {
			if err := conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
				t.Fatalf("README line %d: send: %v", n, err)
			}
			continue
		}
		re := pattern(frame, true)
		for {
			j := slices.IndexFunc(received, func(f string) bool { return re.MatchString(normalize(f)) })
			if j >= 0 {
				received = slices.Delete(received, j, j+1)
				break
			}
			select {
			case f, ok := <-frames:
				if !ok {
					t.Fatalf("README line %d: connection closed before a frame like\n%s\nunmatched frames:\n%s", n, frame, strings.Join(received, "\n"))
				}
				received = append(received, f)
			case <-time.After(10 * time.Second):
				t.Fatalf("README line %d: no frame like\n%s\nwithin 10s; unmatched frames:\n%s", n, frame, strings.Join(received, "\n"))
			}
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	cancel()
	for range frames {
	}
}
