package auth_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

var patternSeeds = []string{
	"chat:room-1", "chat:*", "chat:>", ">", "*", "room-*:*b*", "a:*-*-*", "a:*:c:>",
	"user:{sub}", "dm:{sub}-*", "{sub}:inbox", "chat::x", "chat:**", "chat:>:x", "chat:{user}", "_x", "",
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range patternSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := auth.ParsePattern(s)
		if err != nil {
			if !errors.Is(err, auth.ErrInvalidPattern) {
				t.Fatalf("error %v does not wrap ErrInvalidPattern", err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("String() = %q, want the source %q", p.String(), s)
		}
		q, err := auth.ParsePattern(p.String())
		if err != nil || q.String() != s {
			t.Fatalf("round trip: %v", err)
		}
		if ch, ok := p.Channel(); ok && (ch != s || !p.Match(ch)) {
			t.Fatalf("Channel() = %q but pattern is %q / does not match it", ch, s)
		}
	})
}

// reference compiles a valid pattern to a regular expression directly from
// its source, as an independent check on Pattern.Match.
func reference(t *testing.T, pattern, sub string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	segs := strings.Split(pattern, ":")
	for i, seg := range segs {
		if i > 0 {
			b.WriteString(":")
		}
		if seg == ">" {
			b.WriteString("(?s:.+)")
			continue
		}
		seg = strings.ReplaceAll(seg, "{sub}", "\x00")
		for _, c := range []byte(seg) {
			switch c {
			case '*':
				b.WriteString("[^:]+")
			case 0:
				b.WriteString(regexp.QuoteMeta(sub))
			default:
				b.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

var subjectRE = regexp.MustCompile(`^[A-Za-z0-9_.@/=-]{1,128}$`)

func FuzzMatch(f *testing.F) {
	for _, p := range patternSeeds {
		for _, sub := range []string{"alice", "*", ">", "a:b", "", "{sub}", "a b"} {
			for _, ch := range []string{"chat:room-1", "chat:a:b", "user:alice", "dm:alice-bob", "alice:inbox", "user:*", "user:a:b", "room-1:xby", "a"} {
				f.Add(p, sub, ch)
			}
		}
	}
	f.Fuzz(func(t *testing.T, pattern, sub, channel string) {
		p, err := auth.ParsePattern(pattern)
		if err != nil {
			return
		}
		if p.Match(channel) {
			if !auth.ValidChannel(channel) {
				t.Fatalf("%q matched invalid channel %q", pattern, channel)
			}
			if p.HasPlaceholders() {
				t.Fatalf("unexpanded %q matched %q", pattern, channel)
			}
		}
		e := p.Expand(sub)
		got := e.Match(channel)
		if got && !auth.ValidChannel(channel) {
			t.Fatalf("%q with sub %q matched invalid channel %q", pattern, sub, channel)
		}
		safeSub := subjectRE.MatchString(sub)
		if p.HasPlaceholders() {
			if !safeSub && got {
				t.Fatalf("%q with unsafe sub %q matched %q", pattern, sub, channel)
			}
			if got && !strings.Contains(channel, sub) {
				t.Fatalf("%q with sub %q matched %q, which does not contain the subject", pattern, sub, channel)
			}
		}
		if !p.HasPlaceholders() && got != p.Match(channel) {
			t.Fatalf("Expand changed a pattern without placeholders")
		}
		if p.HasPlaceholders() && !safeSub {
			return
		}
		want := auth.ValidChannel(channel) && reference(t, pattern, sub).MatchString(channel)
		if got != want {
			t.Fatalf("%q with sub %q on %q: Match = %v, reference = %v", pattern, sub, channel, got, want)
		}
	})
}

func FuzzAuthenticate(f *testing.F) {
	fx := newFixture(f)
	valid := map[string]bool{fx.key: true, fx.jwt: true}
	for _, s := range []string{
		"", "Bearer", "Bearer " + fx.jwt, fx.jwt, "Bearer " + fx.key, fx.key, "Basic abc",
		"a.b.c", "hk_", "hk_" + strings.Repeat("A", 43), tamper(f, fx.jwt), strip(fx.jwt),
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
		sign(f, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), "", claims()),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cred string) {
		id, err := fx.a.Authenticate(cred)
		if err == nil {
			tok := strings.TrimSpace(cred)
			if scheme, rest, ok := strings.Cut(tok, " "); ok && strings.EqualFold(scheme, "Bearer") {
				tok = strings.TrimLeft(rest, " ")
			}
			if !valid[tok] {
				t.Fatalf("authenticated an unknown credential %q as %v %q", cred, id.Kind(), id.Name())
			}
			return
		}
		var e *auth.Error
		if !errors.As(err, &e) || e.Error() == "" {
			t.Fatalf("error %v is not an *auth.Error with a message", err)
		}
		n := 0
		for _, s := range []error{auth.ErrMissingCredential, auth.ErrMalformedCredential, auth.ErrExpired, auth.ErrNotYetValid, auth.ErrInvalidCredential} {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %v wraps %d sentinels, want 1", err, n)
		}
		if id.Kind() != auth.Anonymous {
			t.Fatalf("failed Authenticate returned a %v identity", id.Kind())
		}
		if strings.Contains(e.Error(), string(secret)) || strings.Contains(e.Detail(), string(secret)) ||
			len(cred) >= 24 && (strings.Contains(e.Error(), cred) || strings.Contains(e.Detail(), cred)) {
			t.Fatalf("error echoes a secret or the credential: %q / %q", e.Error(), e.Detail())
		}
	})
}

// FuzzParseJWKS: any document is either refused or gives keys a Verifier
// accepts, each with its own non-empty kid; never a panic.
func FuzzParseJWKS(f *testing.F) {
	k := testKeys()
	f.Add(jwks(f, rsaJWK("rsa-1", &k.rsa1.PublicKey), ecJWK(f, "ec-1", &k.ec1.PublicKey)))
	f.Add(jwks(f, rsaJWK("a", &k.rsa1.PublicKey), rsaJWK("a", &k.rsa2.PublicKey)))
	for _, s := range []string{
		`{"keys":[]}`, `{}`, `null`, `{"keys":null}`, `[]`, `{"keys":[null]}`,
		`{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}`,
		`{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AAAAAAE"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"AA","y":"AA"}]}`,
		`{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"},{"kty":"RSA","use":"enc","kid":"e"}]}`,
		`{"keys":[{"kty":"RSA","kid":"a","alg":"RS256","use":"sig","n":"","e":""}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := auth.ParseJWKS(data)
		if err != nil {
			if keys != nil {
				t.Fatalf("ParseJWKS returned keys and %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, key := range keys {
			if key.ID == "" || seen[key.ID] {
				t.Fatalf("key ID %q is empty or repeated", key.ID)
			}
			seen[key.ID] = true
		}
		if len(keys) > 0 {
			if _, err := auth.NewVerifier(auth.JWTConfig{Keys: keys}); err != nil {
				t.Fatalf("parsed keys are refused by NewVerifier: %v", err)
			}
		}
	})
}
