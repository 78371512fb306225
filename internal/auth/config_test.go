package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/auth"
)

func TestLoadConfig(t *testing.T) {
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"apiKeys":[{"name":"svc","hash":"`+auth.HashKey(key)+`","scopes":["publish"]}],
		"jwt":{"hs256Secret":"0123456789abcdef0123456789abcdef","leeway":"30s","issuer":"https://auth.example"}}`)
	a, err := auth.LoadConfig(t.Context(), good, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate("Bearer " + key)
	if err != nil || id.Name() != "svc" || !id.CanPublish("any:channel") || id.CanSubscribe("any:channel") {
		t.Fatalf("key from the config: %v, %v", id, err)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"unknown field": {`{"apiKey":[]}`, "unknown field"},
		"nothing":       {`{}`, "neither apiKeys nor jwt"},
		"short secret":  {`{"jwt":{"hs256Secret":"short-but-secret"}}`, "jwt"},
		"bad leeway":    {`{"jwt":{"hs256Secret":"0123456789abcdef0123456789abcdef","leeway":"soon"}}`, "jwt.leeway"},
		"raw key":       {`{"apiKeys":[{"name":"x","hash":"` + key + `","scopes":["publish"]}]}`, "apiKeys"},
	} {
		_, err := auth.LoadConfig(t.Context(), write(strings.ReplaceAll(name, " ", "-")+".json", tc.body), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "short-but-secret") || strings.Contains(err.Error(), key)) {
			t.Errorf("%s: the error shows a secret: %v", name, err)
		}
	}
}

func TestLoadConfigCacheSize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		field string
		limit int // auth.CacheLimit: 0 when off
	}{{``, auth.DefaultCacheSize}, {`,"cacheSize":0`, auth.DefaultCacheSize}, {`,"cacheSize":500`, 500}, {`,"cacheSize":-1`, 0}} {
		path := filepath.Join(dir, "auth.json")
		body := `{"jwt":{"hs256Secret":"0123456789abcdef0123456789abcdef"` + tc.field + `}}`
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := auth.LoadConfig(t.Context(), path, nil)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got := auth.CacheLimit(auth.VerifierOf(a)); got != tc.limit {
			t.Errorf("%s: cache limit %d, want %d", body, got, tc.limit)
		}
	}
	path := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(path, []byte(`{"jwt":{"hs256Secret":"0123456789abcdef0123456789abcdef","cacheSize":"big"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.LoadConfig(t.Context(), path, nil); err == nil || !strings.Contains(err.Error(), "jwt.cacheSize") {
		t.Errorf("cacheSize \"big\": %v, want an error naming jwt.cacheSize", err)
	}
}
