package auth_test

import (
	"fmt"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

// BenchmarkVerify measures what Authenticate costs per credential, as the
// gateway calls it for every HTTP request (each unary RPC) and once per
// stream: the "Bearer " header value of a valid credential of each kind.
// The tokens carry the claims of the tests (issuer, audience, three
// pattern claims with a {sub} placeholder) and a kid for RS256 and ES256.
//
//   - jwt=ALG: full verification, with the cache of verified tokens off
//     (JWTConfig.CacheSize -1), as every token's first use costs.
//   - jwt=ALG,cache=hit: the same token again with the cache on, as a
//     client's next request costs.
//   - jwt=HS256,cache=miss: two tokens taking turns in a one-entry cache,
//     so that every call misses, verifies, evicts and stores.
//   - jwt=HS256,cache=hit,parallel: hits from GOMAXPROCS goroutines over
//     1,000 tokens, for contention on the cache's lock (run with -cpu 1,2).
//
// docs/benchmarks.md has the results:
//
//	go test -run '^$' -bench BenchmarkVerify -benchmem -count 5 ./internal/auth/
func BenchmarkVerify(b *testing.B) {
	k := testKeys()
	apiKey := mustKey(b)
	keys, err := auth.NewKeys([]auth.KeyConfig{{Name: "backend", Hash: auth.HashKey(apiKey), Scopes: []auth.Scope{auth.ScopePublish}}})
	if err != nil {
		b.Fatal(err)
	}
	authenticator := func(cacheSize int) *auth.Authenticator {
		return auth.NewAuthenticator(keys, newVerifier(b, auth.JWTConfig{
			HS256Secret: secret,
			Keys:        []auth.PublicKey{mustPEMKey(b, "r1", &k.rsa1.PublicKey), mustPEMKey(b, "e1", &k.ec1.PublicKey)},
			Issuer:      "https://issuer.test",
			Audience:    "herald",
			CacheSize:   cacheSize,
		}))
	}
	off, on := authenticator(-1), authenticator(0)
	hs := sign(b, jwt.SigningMethodHS256, secret, "", claims())
	rs := sign(b, jwt.SigningMethodRS256, k.rsa1, "r1", claims())
	es := sign(b, jwt.SigningMethodES256, k.ec1, "e1", claims())
	for _, bc := range []struct {
		name  string
		a     *auth.Authenticator
		creds []string // used in turn
		kind  auth.Kind
	}{
		{"jwt=HS256", off, []string{hs}, auth.User},
		{"jwt=RS256-2048", off, []string{rs}, auth.User},
		{"jwt=ES256", off, []string{es}, auth.User},
		{"api-key", off, []string{apiKey}, auth.APIKey},
		{"jwt=HS256,cache=hit", on, []string{hs}, auth.User},
		{"jwt=RS256-2048,cache=hit", on, []string{rs}, auth.User},
		{"jwt=ES256,cache=hit", on, []string{es}, auth.User},
		{"jwt=HS256,cache=miss", authenticator(1), []string{hs, sign(b, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", "bob"))}, auth.User},
	} {
		b.Run(bc.name, func(b *testing.B) {
			headers := make([]string, len(bc.creds))
			for i, c := range bc.creds {
				headers[i] = "Bearer " + c
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				id, err := bc.a.Authenticate(headers[i%len(headers)])
				if err != nil || id.Kind() != bc.kind {
					b.Fatalf("Authenticate = %v, %v", id.Kind(), err)
				}
				i++
			}
		})
	}
	b.Run("jwt=HS256,cache=hit,parallel", func(b *testing.B) {
		headers := make([]string, 1000)
		for i := range headers {
			headers[i] = "Bearer " + sign(b, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", fmt.Sprintf("user-%d", i)))
			if _, err := on.Authenticate(headers[i]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := on.Authenticate(headers[i%len(headers)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}
