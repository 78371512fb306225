package auth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/auth"
)

func mustKey(t testing.TB) string {
	t.Helper()
	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		k := mustKey(t)
		if !strings.HasPrefix(k, auth.KeyPrefix) || len(k) != 46 {
			t.Fatalf("key %q: want %s + 43 base64url characters", k, auth.KeyPrefix)
		}
		if seen[k] {
			t.Fatal("GenerateKey repeated a key")
		}
		seen[k] = true
	}
}

func TestHashKey(t *testing.T) {
	t.Parallel()
	// SHA-256 of the empty string, a well-known vector.
	if got := auth.HashKey(""); got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("HashKey(\"\") = %s", got)
	}
}

func TestNewKeysErrors(t *testing.T) {
	t.Parallel()
	h := auth.HashKey(mustKey(t))
	for _, tc := range []struct {
		name string
		cfgs []auth.KeyConfig
		want string
	}{
		{"no name", []auth.KeyConfig{{Hash: h, Scopes: []auth.Scope{"publish"}}}, "name is empty"},
		{"NUL in name", []auth.KeyConfig{{Name: "bill\x00ing", Hash: h, Scopes: []auth.Scope{"publish"}}}, "contains NUL or invalid UTF-8"},
		{"name not UTF-8", []auth.KeyConfig{{Name: "bill\xffing", Hash: h, Scopes: []auth.Scope{"publish"}}}, "contains NUL or invalid UTF-8"},
		{"dup name", []auth.KeyConfig{{Name: "a", Hash: h, Scopes: []auth.Scope{"publish"}}, {Name: "a", Hash: auth.HashKey("x"), Scopes: []auth.Scope{"publish"}}}, "duplicate name"},
		{"dup hash", []auth.KeyConfig{{Name: "a", Hash: h, Scopes: []auth.Scope{"publish"}}, {Name: "b", Hash: h, Scopes: []auth.Scope{"publish"}}}, "same hash"},
		{"raw key as hash", []auth.KeyConfig{{Name: "a", Hash: mustKey(t), Scopes: []auth.Scope{"publish"}}}, "64 lowercase hex"},
		{"upper hex", []auth.KeyConfig{{Name: "a", Hash: strings.ToUpper(h), Scopes: []auth.Scope{"publish"}}}, "64 lowercase hex"},
		{"no scopes", []auth.KeyConfig{{Name: "a", Hash: h}}, "no scopes"},
		{"bad scope", []auth.KeyConfig{{Name: "a", Hash: h, Scopes: []auth.Scope{"write"}}}, `unknown scope "write"`},
		{"bad pattern", []auth.KeyConfig{{Name: "a", Hash: h, Scopes: []auth.Scope{"publish"}, Channels: []string{"chat::x"}}}, "segment 2 is empty"},
		{"placeholder", []auth.KeyConfig{{Name: "a", Hash: h, Scopes: []auth.Scope{"publish"}, Channels: []string{"user:{sub}"}}}, "placeholders are only for tokens"},
	} {
		_, err := auth.NewKeys(tc.cfgs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewKeys = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestKeysVerify(t *testing.T) {
	t.Parallel()
	pub, admin, other := mustKey(t), mustKey(t), mustKey(t)
	keys, err := auth.NewKeys([]auth.KeyConfig{
		{Name: "ingest", Hash: auth.HashKey(pub), Scopes: []auth.Scope{auth.ScopePublish, auth.ScopeHistory}, Channels: []string{"chat:>"}},
		{Name: "ops", Hash: auth.HashKey(admin), Scopes: []auth.Scope{auth.ScopeAdmin}},
	})
	if err != nil {
		t.Fatal(err)
	}

	id, err := keys.Verify(pub)
	if err != nil {
		t.Fatal(err)
	}
	if id.Kind() != auth.APIKey || id.Name() != "ingest" || id.IsAdmin() || !id.Expires().IsZero() {
		t.Errorf("identity = %v %q admin=%v expires=%v", id.Kind(), id.Name(), id.IsAdmin(), id.Expires())
	}
	if !id.CanPublish("chat:a:b") || id.CanPublish("news:a") || id.CanSubscribe("chat:a") {
		t.Error("ingest key: want publish on chat:> only and no subscribe")
	}
	if !id.CanReadHistory("chat:a") || id.CanReadHistory("news:a") {
		t.Error("ingest key: want history on chat:> only")
	}

	id, err = keys.Verify(admin)
	if err != nil {
		t.Fatal(err)
	}
	if !id.IsAdmin() || !id.CanPublish("any:thing") || !id.CanSubscribe("x") || !id.CanReadHistory("y") || id.CanPublish("bad channel") {
		t.Error("admin key: want every action on every valid channel")
	}

	for _, tc := range []struct {
		key  string
		want error
	}{
		{other, auth.ErrInvalidCredential},
		{pub[:len(pub)-1], auth.ErrMalformedCredential},
		{pub + "A", auth.ErrMalformedCredential},
		{pub[:len(pub)-1] + "!", auth.ErrMalformedCredential},
		{"hk_" + strings.Repeat("A", 42) + "B", auth.ErrMalformedCredential}, // non-canonical final character
		{"xx_" + pub[3:], auth.ErrMalformedCredential},
		{auth.HashKey(pub), auth.ErrMalformedCredential}, // the hash is not the key
	} {
		if _, err := keys.Verify(tc.key); !errors.Is(err, tc.want) {
			t.Errorf("Verify(%.8s…) = %v, want %v", tc.key, err, tc.want)
		}
	}
}
