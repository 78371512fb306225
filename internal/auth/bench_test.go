package auth_test

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

// BenchmarkVerify measures what Authenticate costs per credential, as the
// gateway calls it for every HTTP request (each unary RPC) and once per
// stream: the "Bearer " header value of a valid credential of each kind.
// The tokens carry the claims of the tests (issuer, audience, three
// pattern claims with a {sub} placeholder) and a kid for RS256 and ES256.
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
	a := auth.NewAuthenticator(keys, newVerifier(b, auth.JWTConfig{
		HS256Secret: secret,
		Keys:        []auth.PublicKey{mustPEMKey(b, "r1", &k.rsa1.PublicKey), mustPEMKey(b, "e1", &k.ec1.PublicKey)},
		Issuer:      "https://issuer.test",
		Audience:    "herald",
	}))
	for _, bc := range []struct {
		name, cred string
		kind       auth.Kind
	}{
		{"jwt=HS256", sign(b, jwt.SigningMethodHS256, secret, "", claims()), auth.User},
		{"jwt=RS256-2048", sign(b, jwt.SigningMethodRS256, k.rsa1, "r1", claims()), auth.User},
		{"jwt=ES256", sign(b, jwt.SigningMethodES256, k.ec1, "e1", claims()), auth.User},
		{"api-key", apiKey, auth.APIKey},
	} {
		b.Run(bc.name, func(b *testing.B) {
			header := "Bearer " + bc.cred
			b.ReportAllocs()
			for b.Loop() {
				id, err := a.Authenticate(header)
				if err != nil || id.Kind() != bc.kind {
					b.Fatalf("Authenticate = %v, %v", id.Kind(), err)
				}
			}
		})
	}
}
