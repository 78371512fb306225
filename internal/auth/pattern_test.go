package auth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/auth"
)

func TestValidChannel(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"chat:room-42":           true,
		"a":                      true,
		"0":                      true,
		"user:alice@example.com": true,
		"x_.:@/=-":               true,
		"chat:":                  true,
		strings.Repeat("a", 128): true,
		"":                       false,
		strings.Repeat("a", 129): false,
		":chat":                  false,
		"_chat":                  false,
		"chat room":              false,
		"chat:*":                 false,
		"chat:>":                 false,
		"chat:{sub}":             false,
		"chat:é":                 false,
		"chat\x00":               false,
		"chat:room\n":            false,
	} {
		if got := auth.ValidChannel(name); got != want {
			t.Errorf("ValidChannel(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParsePatternErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ pattern, want string }{
		{"", "empty"},
		{strings.Repeat("a", 257), "longer than 256"},
		{"chat::room", "segment 2 is empty"},
		{":chat", "segment 1 is empty"},
		{"chat:", "segment 2 is empty"},
		{"chat:**", "'**' in segment 2"},
		{"chat:a**b", "'**' in segment 2"},
		{"chat:>:x", "only allowed as the last segment"},
		{"chat:a>", "'>' must be the whole last segment"},
		{"chat:{user}", "only {sub} is supported"},
		{"chat:{sub", "only {sub} is supported"},
		{"chat:sub}", "'}' in segment 2 is not allowed"},
		{"chat room", "' ' in segment 1 is not allowed"},
		{"chat:?", "'?' in segment 2 is not allowed"},
		{"_chat", "start with a letter or digit"},
		{"chat:é", "is not allowed"},
	} {
		_, err := auth.ParsePattern(tc.pattern)
		if err == nil {
			t.Errorf("ParsePattern(%q) succeeded, want error containing %q", tc.pattern, tc.want)
			continue
		}
		if !errors.Is(err, auth.ErrInvalidPattern) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePattern(%q) = %v, want ErrInvalidPattern containing %q", tc.pattern, err, tc.want)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern string
		yes     []string
		no      []string
	}{
		{"chat:room-1", []string{"chat:room-1"}, []string{"chat:room-10", "chat:room-", "Chat:room-1", "chat:room-1:x", "chat"}},
		{"chat:*", []string{"chat:room-1", "chat:a", "chat:a.b@c"}, []string{"chat", "chat:", "chat:a:b", "chatx:a", "news:a"}},
		{"chat:>", []string{"chat:room-1", "chat:a:b", "chat:a:b:c", "chat::", "chat:a:"}, []string{"chat", "chat:", "news:a"}},
		{">", []string{"a", "chat:a:b", strings.Repeat("z", 128)}, []string{"", "_a", strings.Repeat("z", 129), "a b"}},
		{"*", []string{"a", "chat"}, []string{"chat:a", ""}},
		{"*:*", []string{"a:b"}, []string{"a", "a:b:c", "a:"}},
		{"room-*", []string{"room-1", "room-abc"}, []string{"room-", "room", "room-1:x"}},
		{"a:*b*", []string{"a:xby", "a:xxbyy"}, []string{"a:b", "a:xb", "a:by", "a:xy"}},
		{"a:*-*-*", []string{"a:x-y-z", "a:x-y-z-w"}, []string{"a:x-y", "a:--", "a:x-y-"}},
		{"a:*:c:>", []string{"a:b:c:d", "a:b:c:d:e"}, []string{"a:b:c", "a:b:c:", "a:b:x:d"}},
		{"user:{sub}", nil, []string{"user:{sub}", "user:alice"}}, // unexpanded: matches nothing
	} {
		p, err := auth.ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if p.String() != tc.pattern {
			t.Errorf("ParsePattern(%q).String() = %q", tc.pattern, p.String())
		}
		for _, ch := range tc.yes {
			if !p.Match(ch) {
				t.Errorf("%q should match %q", tc.pattern, ch)
			}
		}
		for _, ch := range tc.no {
			if p.Match(ch) {
				t.Errorf("%q should not match %q", tc.pattern, ch)
			}
		}
	}
	var zero auth.Pattern
	if zero.Match("a") || zero.String() != "!invalid" {
		t.Error("the zero Pattern must match nothing")
	}
}

func TestPatternExpand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, sub string
		yes, no      []string
	}{
		{"user:{sub}", "alice", []string{"user:alice"}, []string{"user:bob", "user:alice:x", "user:alicex"}},
		{"dm:{sub}-*", "alice", []string{"dm:alice-bob"}, []string{"dm:alice-", "dm:bob-alice"}},
		{"{sub}:inbox", "alice", []string{"alice:inbox"}, []string{"bob:inbox"}},
		{"{sub}:inbox", "_alice", nil, []string{"_alice:inbox"}}, // expands to an invalid channel
		{"u:{sub}:{sub}", "a", []string{"u:a:a"}, []string{"u:a:b"}},
		{"chat:*", "ignored", []string{"chat:x"}, nil}, // no placeholders: unchanged
		// Injection attempts: none of these subjects may widen access.
		{"user:{sub}", "*", nil, []string{"user:*", "user:alice", "user:a"}},
		{"user:{sub}", ">", nil, []string{"user:>", "user:a:b"}},
		{"user:{sub}", "a:b", nil, []string{"user:a:b", "user:a"}},
		{"user:{sub}", "a:*", nil, []string{"user:a:x"}},
		{"user:{sub}", "", nil, []string{"user:", "user:a"}},
		{"user:{sub}", "{sub}", nil, []string{"user:{sub}"}},
		{"user:{sub}", "a b", nil, []string{"user:a b"}},
		{"user:{sub}", "a?", nil, []string{"user:ab"}},
		{"user:{sub}", strings.Repeat("a", 129), nil, []string{"user:" + strings.Repeat("a", 123)}},
	} {
		p, err := auth.ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		e := p.Expand(tc.sub)
		for _, ch := range tc.yes {
			if !e.Match(ch) {
				t.Errorf("%q with sub %q should match %q", tc.pattern, tc.sub, ch)
			}
		}
		for _, ch := range tc.no {
			if e.Match(ch) {
				t.Errorf("%q with sub %q should not match %q", tc.pattern, tc.sub, ch)
			}
		}
	}
}

func TestPatternChannel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, sub, want string
		ok                 bool
	}{
		{"user:{sub}", "alice", "user:alice", true},
		{"news:global", "", "news:global", true},
		{"user:{sub}", "a:b", "", false},
		{"chat:*", "", "", false},
		{"chat:>", "", "", false},
	} {
		p, err := auth.ParsePattern(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := p.Expand(tc.sub).Channel()
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q.Expand(%q).Channel() = %q, %v; want %q, %v", tc.pattern, tc.sub, got, ok, tc.want, tc.ok)
		}
	}
}
