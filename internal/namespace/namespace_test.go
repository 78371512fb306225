package namespace

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

const secret = "0123456789abcdef0123456789abcdef"

func mustParse(t *testing.T, doc string) *Set {
	t.Helper()
	s, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOf(t *testing.T) {
	for ch, want := range map[string]string{"chat:room-42": "chat", "plain": "", "a:b:c": "a", "user:ann": "user"} {
		if got := Of(ch); got != want {
			t.Errorf("Of(%q) = %q, want %q", ch, got, want)
		}
	}
}

func TestFor(t *testing.T) {
	s := mustParse(t, `{"default": {"publish": "services"}, "namespaces": {"news": {"subscribe": "anonymous"}, "chat": {"edit": "author", "maxEventSize": 100}}}`)
	cases := []struct {
		ch                 string
		name               string
		sub, hist, publish Access
	}{
		{"news:1", "news", Anonymous, Anonymous, Token},
		{"chat:1", "chat", Token, Token, Token},
		{"plain", "", Token, Token, Services},
		{"other:1", "", Token, Token, Services},
	}
	for _, c := range cases {
		p, err := s.For(c.ch)
		if err != nil || p.Name != c.name || p.Subscribe != c.sub || p.History != c.hist || p.Publish != c.publish {
			t.Errorf("For(%q) = %+v %v", c.ch, p, err)
		}
	}
	if p, _ := s.For("chat:x"); p.Edit != Author || p.MaxEventSize != 100 || !p.HasChannelDefaults() {
		t.Errorf("chat policy %+v", p)
	}
	// A nil Set and refuseUnknown.
	if p, err := (*Set)(nil).For("x:y"); err != nil || p.Subscribe != Token || p.Restricts() {
		t.Errorf("nil set: %+v %v", p, err)
	}
	strict := mustParse(t, `{"namespaces": {"news": {}}, "refuseUnknown": true}`)
	if _, err := strict.For("other:1"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), `"other"`) {
		t.Errorf("strict: %v", err)
	}
	if _, err := strict.For("plain"); err != nil {
		t.Errorf("strict, no namespace: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for doc, want := range map[string]string{
		`{"namespaces": {"a": {"publsh": "none"}}}`:                             "unknown field",
		`{"namespaces": {"a": {"publish": "everyone"}}}`:                        `publish: "everyone"`,
		`{"namespaces": {"a": {"edit": "owner"}}}`:                              `edit: "owner"`,
		`{"namespaces": {"a:b": {}}}`:                                           "not a namespace name",
		`{"namespaces": {"": {}}}`:                                              "not a namespace name",
		`{"namespaces": {"a": {"maxEventSize": 2000000}}}`:                      "maxEventSize",
		`{"namespaces": {"a": {"maxAge": "1 week"}}}`:                           "maxAge",
		`{"namespaces": {"a": {"maxAge": "-1h"}}}`:                              "not within",
		`{"namespaces": {"a": {"maxAge": "87601h"}}}`:                           "not within",
		`{"namespaces": {"a": {"subscribe": "anonymous", "history": "token"}}}`: "stricter than subscribe",
		`{"namespaces": {"a": {"history": "services"}}}`:                        "stricter than subscribe",
		`{"namespaces": {"a": {"maxEvents": -1}}}`:                              "not within",
		`{"namespaces": {"a": {"maxEvents": 10000001}}}`:                        "not within",
		`{"default": {"subscribe": "nobody"}}`:                                  "default: subscribe",
		`{"namespaces": {}} {}`:                                                 "trailing",
		`[]`:                                                                    "cannot unmarshal",
	} {
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", doc, err, want)
		}
	}
	// Every bad field is reported at once.
	_, err := Parse([]byte(`{"namespaces": {"a": {"publish": "x", "subscribe": "y", "maxAge": "z"}}}`))
	for _, want := range []string{"publish", "subscribe", "maxAge"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %s in %v", want, err)
		}
	}
}

func identities(t testing.TB) map[string]auth.Identity {
	t.Helper()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := auth.GenerateKey()
	keys, err := auth.NewKeys([]auth.KeyConfig{
		{Name: "backend", Hash: auth.HashKey(key), Scopes: []auth.Scope{auth.ScopePublish, auth.ScopeSubscribe, auth.ScopeHistory}},
		{Name: "ops", Hash: auth.HashKey(admin), Scopes: []auth.Scope{auth.ScopeAdmin}},
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.JWTConfig{HS256Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.NewAuthenticator(keys, v)
	tok := func(claims jwt.MapClaims) string {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	out := map[string]auth.Identity{"anonymous": {}}
	for name, cred := range map[string]string{
		"key":   key,
		"admin": admin,
		"ann":   tok(jwt.MapClaims{"sub": "ann", "subscribe": []string{"chat:>"}, "publish": []string{"chat:>", "news:>"}}),
		"bob":   tok(jwt.MapClaims{"sub": "bob"}),
	} {
		id, err := a.Authenticate("Bearer " + cred)
		if err != nil {
			t.Fatal(name, err)
		}
		out[name] = id
	}
	return out
}

func TestAllow(t *testing.T) {
	ids := identities(t)
	s := mustParse(t, `{"namespaces": {
		"news": {"subscribe": "anonymous", "publish": "services"},
		"lobby": {"subscribe": "authenticated", "history": "anonymous", "publish": "authenticated"},
		"chat": {}
	}}`)
	// want: one letter per identity in the order anonymous, bob, ann, key,
	// admin: a allowed, c need credential, d denied.
	order := []string{"anonymous", "bob", "ann", "key", "admin"}
	cases := []struct {
		ch   string
		act  Action
		want string
	}{
		{"news:1", Subscribe, "aaaaa"},
		{"news:1", History, "aaaaa"},
		{"news:1", Publish, "cddaa"}, // ann's token says news:>, the namespace says services only
		{"lobby:1", Subscribe, "caaaa"},
		{"lobby:1", History, "aaaaa"}, // history open to anyone, subscriptions to credentials
		{"lobby:1", Publish, "caaaa"},
		{"chat:1", Subscribe, "cdaaa"},
		{"chat:1", Publish, "cdaaa"},
	}
	for _, c := range cases {
		pol, _ := s.For(c.ch)
		got := ""
		for _, n := range order {
			got += string("acd"[pol.Allow(ids[n], c.act, c.ch)])
		}
		if got != c.want {
			t.Errorf("%s action %d: %s, want %s (%v)", c.ch, c.act, got, c.want, order)
		}
	}
}

func TestAllowEdit(t *testing.T) {
	ids := identities(t)
	s := mustParse(t, `{"namespaces": {
		"chat": {"edit": "author"}, "feed": {"edit": "services"}, "log": {"edit": "none"}, "wiki": {}
	}}`)
	order := []string{"anonymous", "bob", "ann", "key", "admin"}
	callers := map[string]string{"ann": "user:ann", "bob": "user:bob", "key": "key:backend", "admin": "key:ops"}
	cases := []struct {
		ch, author, want string
	}{
		{"chat:1", "user:ann", "cdaaa"}, // ann wrote it; bob may not publish to chat at all
		{"chat:1", "user:bob", "cddaa"}, // someone else's message
		{"chat:1", "", "cddaa"},
		{"feed:1", "user:ann", "cddaa"}, // ann may not publish to feed (no claim), keys may
		{"log:1", "key:backend", "cddda"},
		{"wiki:1", "user:bob", "cddaa"}, // publishers: ann has no wiki claim
	}
	for _, c := range cases {
		pol, _ := s.For(c.ch)
		got := ""
		for _, n := range order {
			got += string("acd"[pol.AllowEdit(ids[n], c.ch, c.author, callers[n])])
		}
		if got != c.want {
			t.Errorf("%s by %q: %s, want %s (%v)", c.ch, c.author, got, c.want, order)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{"default": {"publish": "services"}, "namespaces": {"news": {"subscribe": "anonymous", "maxAge": "1h"}}, "refuseUnknown": true}`, "news:1")
	f.Add(`{"namespaces": {"a": {"edit": "author", "maxEventSize": 10}}}`, "a")
	f.Fuzz(func(t *testing.T, doc, channel string) {
		s, err := Parse([]byte(doc))
		if err != nil {
			return
		}
		p, err := s.For(channel)
		if err != nil {
			if !errors.Is(err, ErrUnknown) || Of(channel) == "" {
				t.Fatalf("For(%q): %v", channel, err)
			}
			return
		}
		if !p.Subscribe.valid() || !p.History.valid() || !p.Publish.valid() || !p.Edit.valid() ||
			p.MaxEventSize < 0 || p.MaxEvents < 0 || p.MaxAge < 0 {
			t.Fatalf("invalid policy %+v from %s", p, doc)
		}
		if p.Name != "" && p.Name != Of(channel) {
			t.Fatalf("For(%q) returned namespace %q", channel, p.Name)
		}
	})
}

// BenchmarkAllow is the per-channel cost a namespace adds to every
// subscribe, publish and history check.
func BenchmarkAllow(b *testing.B) {
	ids := identities(b)
	s, err := Parse([]byte(`{"namespaces": {"news": {"subscribe": "anonymous", "publish": "services"}, "chat": {"edit": "author"}}}`))
	if err != nil {
		b.Fatal(err)
	}
	ann := ids["ann"]
	b.ReportAllocs()
	for b.Loop() {
		p, _ := s.For("chat:room-42")
		if p.Allow(ann, Publish, "chat:room-42") != Allowed {
			b.Fatal("refused")
		}
	}
}

// TestPresenceAndSignals: both are off unless a namespace turns them on;
// "presence" is who may read the sets, applied like subscribe; a value
// that is not an access level is refused.
func TestPresenceAndSignals(t *testing.T) {
	ids := identities(t)
	s := mustParse(t, `{"namespaces": {
		"room": {"signals": true, "presence": "authenticated"},
		"chat": {"presence": "token"},
		"news": {}
	}}`)
	order := []string{"anonymous", "bob", "ann", "key", "admin"}
	for ch, want := range map[string]string{"room:1": "caaaa", "chat:1": "cdaaa", "news:1": "cddda"} {
		pol, _ := s.For(ch)
		got := ""
		for _, n := range order {
			got += string("acd"[pol.Allow(ids[n], ReadPresence, ch)])
		}
		if got != want {
			t.Errorf("%s read presence: %s, want %s", ch, got, want)
		}
	}
	if p, _ := s.For("room:1"); !p.Signals || p.Presence != Authenticated {
		t.Errorf("room: %+v", p)
	}
	if p, _ := s.For("news:1"); p.Signals || p.Presence != "" {
		t.Errorf("news: %+v", p)
	}
	if _, err := Parse([]byte(`{"namespaces": {"x": {"presence": "everyone"}}}`)); err == nil || !strings.Contains(err.Error(), "presence") {
		t.Errorf("presence: everyone accepted: %v", err)
	}
}
