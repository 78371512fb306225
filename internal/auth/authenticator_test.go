package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

type fixture struct {
	a        *auth.Authenticator
	key, jwt string
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	key := mustKey(t)
	keys, err := auth.NewKeys([]auth.KeyConfig{{Name: "svc", Hash: auth.HashKey(key), Scopes: []auth.Scope{auth.ScopePublish}}})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, auth.JWTConfig{HS256Secret: secret, Audience: "herald"})
	return fixture{
		a:   auth.NewAuthenticator(keys, v),
		key: key,
		jwt: sign(t, jwt.SigningMethodHS256, secret, "", claims()),
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	expired := sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "exp", now.Add(-time.Hour).Unix()))
	for _, tc := range []struct {
		name, cred string
		kind       auth.Kind // when want is nil
		want       error
	}{
		{"header jwt", "Bearer " + f.jwt, auth.User, nil},
		{"lowercase scheme", "bearer " + f.jwt, auth.User, nil},
		{"extra spaces", "  Bearer   " + f.jwt + " ", auth.User, nil},
		{"bare jwt (query or cookie)", f.jwt, auth.User, nil},
		{"header key", "Bearer " + f.key, auth.APIKey, nil},
		{"bare key", f.key, auth.APIKey, nil},

		{"empty", "", 0, auth.ErrMissingCredential},
		{"blank", " \t ", 0, auth.ErrMissingCredential},
		{"scheme only", "Bearer", 0, auth.ErrMissingCredential},
		{"scheme and space", "Bearer  ", 0, auth.ErrMissingCredential},
		{"basic", "Basic dXNlcjpwYXNz", 0, auth.ErrMalformedCredential},
		{"two tokens", "Bearer " + f.jwt + " " + f.jwt, 0, auth.ErrMalformedCredential},
		{"garbage", "hello", 0, auth.ErrMalformedCredential},
		{"too long", "Bearer " + strings.Repeat("a", auth.MaxCredentialLen), 0, auth.ErrMalformedCredential},
		{"short key", f.key[:20], 0, auth.ErrMalformedCredential},
		{"unknown key", mustKey(t), 0, auth.ErrInvalidCredential},
		{"expired jwt", "Bearer " + expired, 0, auth.ErrExpired},
		{"tampered jwt", tamper(t, f.jwt), 0, auth.ErrInvalidCredential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := f.a.Authenticate(tc.cred)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Authenticate: %v (%s)", err, detail(err))
				}
				if id.Kind() != tc.kind {
					t.Errorf("kind = %v, want %v", id.Kind(), tc.kind)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Authenticate = %v (%s), want %v", err, detail(err), tc.want)
			}
			if id.Kind() != auth.Anonymous || id.CanSubscribe("chat:a") {
				t.Error("a failed Authenticate must return the anonymous identity")
			}
			if tc.cred != "" {
				checkNoLeak(t, err, strings.TrimSpace(strings.TrimPrefix(tc.cred, "Bearer ")), string(secret))
			}
		})
	}
}

func TestAuthenticateDisabledKinds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	none := auth.NewAuthenticator(nil, nil)
	for _, cred := range []string{f.key, f.jwt} {
		if _, err := none.Authenticate(cred); !errors.Is(err, auth.ErrInvalidCredential) {
			t.Errorf("Authenticate with nothing enabled = %v, want ErrInvalidCredential", err)
		}
	}
}

func TestAnonymousIdentity(t *testing.T) {
	t.Parallel()
	var id auth.Identity
	if id.Kind() != auth.Anonymous || id.Name() != "" || id.IsAdmin() || len(id.Scopes()) != 0 ||
		id.CanSubscribe("a") || id.CanPublish("a") || id.CanReadHistory("a") || id.Expired(now) {
		t.Error("the zero Identity must be anonymous and allowed nothing")
	}
	if auth.Anonymous.String() != "anonymous" || auth.APIKey.String() != "api-key" || auth.User.String() != "user" {
		t.Error("Kind.String")
	}
}
