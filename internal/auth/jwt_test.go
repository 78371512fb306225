package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/auth"
)

var (
	now      = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clock    = func() time.Time { return now }
	secret   = []byte("0123456789abcdef0123456789abcdef-test-secret")
	testKeys = sync.OnceValue(func() (k struct {
		rsa1, rsa2 *rsa.PrivateKey
		ec1        *ecdsa.PrivateKey
	}) {
		var err error
		if k.rsa1, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if k.ec1, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		return k
	})
)

// claims returns valid user claims; tests modify the copy.
func claims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":       "alice",
		"iss":       "https://issuer.test",
		"aud":       "herald",
		"iat":       now.Add(-time.Minute).Unix(),
		"nbf":       now.Add(-time.Minute).Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"subscribe": []string{"chat:*", "user:{sub}:>"},
		"publish":   []string{"chat:*"},
		"channels":  []string{"user:{sub}"},
	}
}

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemOf(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func mustPEMKey(t testing.TB, id string, pub any) auth.PublicKey {
	t.Helper()
	k, err := auth.ParsePublicKeyPEM(id, pemOf(t, pub))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newVerifier(t testing.TB, cfg auth.JWTConfig) *auth.Verifier {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = clock
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

func TestVerifyClaims(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newVerifier(t, auth.JWTConfig{
		HS256Secret: secret,
		Keys:        []auth.PublicKey{mustPEMKey(t, "r1", &k.rsa1.PublicKey), mustPEMKey(t, "e1", &k.ec1.PublicKey)},
		Issuer:      "https://issuer.test",
		Audience:    "herald",
		Leeway:      30 * time.Second,
	})
	for _, tc := range []struct {
		name  string
		token string
		want  error // nil: accepted
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, secret, "", claims()), nil},
		{"RS256 kid", sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims()), nil},
		{"RS256 no kid", sign(t, jwt.SigningMethodRS256, k.rsa1, "", claims()), nil},
		{"ES256 kid", sign(t, jwt.SigningMethodES256, k.ec1, "e1", claims()), nil},
		{"ES256 no kid", sign(t, jwt.SigningMethodES256, k.ec1, "", claims()), nil},
		{"aud list", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "aud", []string{"other", "herald"})), nil},

		{"expired", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "exp", now.Add(-time.Minute).Unix())), auth.ErrExpired},
		{"expired within leeway", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "exp", now.Add(-20*time.Second).Unix())), nil},
		{"exp missing", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "exp", nil)), auth.ErrInvalidCredential},
		{"nbf future", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "nbf", now.Add(time.Minute).Unix())), auth.ErrNotYetValid},
		{"nbf within leeway", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "nbf", now.Add(20*time.Second).Unix())), nil},
		{"iat future", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "iat", now.Add(time.Minute).Unix())), auth.ErrNotYetValid},
		{"wrong aud", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "aud", "other")), auth.ErrInvalidCredential},
		{"no aud", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "aud", nil)), auth.ErrInvalidCredential},
		{"wrong iss", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "iss", "https://evil.test")), auth.ErrInvalidCredential},
		{"no sub", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", nil)), auth.ErrInvalidCredential},
		{"bad pattern claim", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "subscribe", []string{"chat:**"})), auth.ErrInvalidCredential},
		{"pattern claim not a list", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "subscribe", "chat:*")), auth.ErrMalformedCredential},
		{"wildcard in channels", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "channels", []string{"chat:*"})), auth.ErrInvalidCredential},
		{"sub breaks channels", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", "a:b")), auth.ErrInvalidCredential},
		{"admin not allowed", sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "scopes", []string{"admin"})), auth.ErrInvalidCredential},

		{"wrong HS secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), "", claims()), auth.ErrInvalidCredential},
		{"wrong kid", sign(t, jwt.SigningMethodRS256, k.rsa2, "r1", claims()), auth.ErrInvalidCredential},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, k.rsa1, "r9", claims()), auth.ErrInvalidCredential},
		{"unknown key no kid", sign(t, jwt.SigningMethodRS256, k.rsa2, "", claims()), auth.ErrInvalidCredential},
		{"kid not string", signHeader(t, jwt.SigningMethodRS256, k.rsa1, map[string]any{"kid": 1}), auth.ErrInvalidCredential},
		{"RS token names EC kid", sign(t, jwt.SigningMethodRS256, k.rsa1, "e1", claims()), auth.ErrInvalidCredential},
		{"ES token names RSA kid", sign(t, jwt.SigningMethodES256, k.ec1, "r1", claims()), auth.ErrInvalidCredential},
		{"RS384 not allowed", sign(t, jwt.SigningMethodRS384, k.rsa1, "r1", claims()), auth.ErrInvalidCredential},
		{"PS256 not allowed", sign(t, jwt.SigningMethodPS256, k.rsa1, "r1", claims()), auth.ErrInvalidCredential},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims()), auth.ErrInvalidCredential},
		// Classic confusion: the RSA public key, as PEM bytes, used as an HMAC secret.
		{"HS256 with RSA PEM as secret", sign(t, jwt.SigningMethodHS256, pemOf(t, &k.rsa1.PublicKey), "r1", claims()), auth.ErrInvalidCredential},
		{"HS256 with EC PEM as secret", sign(t, jwt.SigningMethodHS256, pemOf(t, &k.ec1.PublicKey), "", claims()), auth.ErrInvalidCredential},
		{"tampered payload", tamper(t, sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims())), auth.ErrInvalidCredential},
		{"tampered HS payload", tamper(t, sign(t, jwt.SigningMethodHS256, secret, "", claims())), auth.ErrInvalidCredential},
		{"stripped signature", strip(sign(t, jwt.SigningMethodHS256, secret, "", claims())), auth.ErrInvalidCredential},
		{"garbage", "a.b.c", auth.ErrMalformedCredential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v (%s)", err, detail(err))
				}
				if id.Kind() != auth.User || id.Name() != "alice" {
					t.Errorf("identity = %v %q", id.Kind(), id.Name())
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v (%s), want %v", err, detail(err), tc.want)
			}
			if id.Kind() != auth.Anonymous {
				t.Errorf("failed Verify returned a %v identity", id.Kind())
			}
			t.Logf("refused: %v (%s)", err, detail(err))
			checkNoLeak(t, err, tc.token, string(secret))
		})
	}
}

// TestVerifySubjectText: a validly signed token whose subject PostgreSQL
// could not store (it becomes the author of what the user publishes) is
// refused as unauthenticated, with a message naming the sub claim, and no
// identity is returned.
func TestVerifySubjectText(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, auth.JWTConfig{HS256Secret: secret, Issuer: "https://issuer.test", Audience: "herald"})
	for _, sub := range []string{"ali\x00ce", "\x00", "alice\x00"} {
		// No claim expands {sub} into a channel name here: only the
		// subject itself is at fault.
		token := sign(t, jwt.SigningMethodHS256, secret, "", with(claims(), "sub", sub, "channels", nil, "subscribe", []string{"chat:*"}))
		id, err := v.Verify(token)
		if !errors.Is(err, auth.ErrInvalidCredential) || id.Kind() != auth.Anonymous {
			t.Errorf("sub %q: Verify = %v %q, %v; want ErrInvalidCredential", sub, id.Kind(), id.Name(), err)
			continue
		}
		if !strings.Contains(err.Error(), "sub claim") || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("sub %q: message %q does not say what is wrong", sub, err)
		}
		checkNoLeak(t, err, token, string(secret))
	}
}

func detail(err error) string {
	var e *auth.Error
	if errors.As(err, &e) {
		return e.Detail()
	}
	return "not an *auth.Error"
}

// checkNoLeak fails if the error's client message or log detail contains the
// token, its signature, or the secret.
func checkNoLeak(t *testing.T, err error, token string, secrets ...string) {
	t.Helper()
	var e *auth.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *auth.Error", err)
	}
	parts := strings.Split(token, ".")
	for _, s := range append(secrets, token, parts[len(parts)-1]) {
		if len(s) < 8 {
			continue
		}
		if strings.Contains(e.Error(), s) || strings.Contains(e.Detail(), s) {
			t.Errorf("error leaks a credential: %q / %q", e.Error(), e.Detail())
		}
	}
	if e.Error() == "" {
		t.Error("empty client message")
	}
}

func signHeader(t testing.TB, m jwt.SigningMethod, key any, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims())
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tamper re-encodes the payload with a different subject, keeping the
// original signature.
func tamper(t testing.TB, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	c["sub"] = "mallory"
	raw, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func strip(token string) string { return token[:strings.LastIndexByte(token, '.')+1] }

func TestAlgorithmsFollowConfiguredKeys(t *testing.T) {
	t.Parallel()
	k := testKeys()
	hsOnly := newVerifier(t, auth.JWTConfig{HS256Secret: secret})
	rsOnly := newVerifier(t, auth.JWTConfig{Keys: []auth.PublicKey{mustPEMKey(t, "", &k.rsa1.PublicKey)}})
	esOnly := newVerifier(t, auth.JWTConfig{Keys: []auth.PublicKey{mustPEMKey(t, "", &k.ec1.PublicKey)}})
	hs := sign(t, jwt.SigningMethodHS256, secret, "", claims())
	rs := sign(t, jwt.SigningMethodRS256, k.rsa1, "", claims())
	es := sign(t, jwt.SigningMethodES256, k.ec1, "", claims())
	confused := sign(t, jwt.SigningMethodHS256, pemOf(t, &k.rsa1.PublicKey), "", claims())
	for _, tc := range []struct {
		name  string
		v     *auth.Verifier
		token string
		ok    bool
	}{
		{"hs/hs", hsOnly, hs, true},
		{"hs/rs", hsOnly, rs, false},
		{"hs/es", hsOnly, es, false},
		{"rs/rs", rsOnly, rs, true},
		{"rs/hs", rsOnly, hs, false},
		{"rs/confused", rsOnly, confused, false},
		{"rs/es", rsOnly, es, false},
		{"es/es", esOnly, es, true},
		{"es/rs", esOnly, rs, false},
		{"es/hs", esOnly, hs, false},
	} {
		_, err := tc.v.Verify(tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Verify = %v (%s), want ok=%v", tc.name, err, detail(err), tc.ok)
		}
	}
}

func TestVerifierIdentity(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, auth.JWTConfig{HS256Secret: secret, AllowAdmin: true})
	verify := func(c jwt.MapClaims) auth.Identity {
		t.Helper()
		id, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, "", c))
		if err != nil {
			t.Fatalf("Verify: %v (%s)", err, detail(err))
		}
		return id
	}

	id := verify(claims())
	if !id.Expires().Equal(now.Add(time.Hour)) || id.Expired(now) || !id.Expired(now.Add(time.Hour)) {
		t.Errorf("Expires = %v", id.Expires())
	}
	if got := id.Channels(); !slices.Equal(got, []string{"user:alice"}) {
		t.Errorf("Channels = %q", got)
	}
	if got := id.Scopes(); !slices.Equal(got, []auth.Scope{auth.ScopePublish, auth.ScopeSubscribe, auth.ScopeHistory}) {
		t.Errorf("default Scopes = %q", got)
	}
	for _, tc := range []struct {
		channel             string
		sub, pub, hist, adm bool
	}{
		{"chat:room-1", true, true, true, false},
		{"chat:a:b", false, false, false, false},
		{"user:alice", true, false, true, false}, // from the channels claim
		{"user:alice:inbox", true, false, true, false},
		{"user:bob", false, false, false, false},
		{"user:bob:inbox", false, false, false, false},
		{"news:x", false, false, false, false},
		{"chat:bad channel", false, false, false, false},
	} {
		if id.CanSubscribe(tc.channel) != tc.sub || id.CanPublish(tc.channel) != tc.pub || id.CanReadHistory(tc.channel) != tc.hist || id.IsAdmin() != tc.adm {
			t.Errorf("%s: subscribe=%v publish=%v history=%v, want %v %v %v", tc.channel,
				id.CanSubscribe(tc.channel), id.CanPublish(tc.channel), id.CanReadHistory(tc.channel), tc.sub, tc.pub, tc.hist)
		}
	}

	id = verify(with(claims(), "scopes", []string{"subscribe", "openid"}))
	if id.CanPublish("chat:a") || !id.CanSubscribe("chat:a") || id.CanReadHistory("chat:a") {
		t.Error("scopes [subscribe]: want subscribe only")
	}
	id = verify(with(claims(), "scopes", []string{"admin"}))
	if !id.IsAdmin() || !id.CanPublish("news:x") {
		t.Error("admin scope with AllowAdmin: want admin")
	}
	// A subject that is not a safe literal makes {sub} patterns match nothing.
	id = verify(with(claims(), "sub", "*", "channels", nil, "subscribe", []string{"user:{sub}", "user:{sub}:>"}))
	for _, ch := range []string{"user:x", "user:*", "user:x:y"} {
		if id.CanSubscribe(ch) {
			t.Errorf("sub \"*\" can subscribe to %q", ch)
		}
	}
}

func TestNewVerifierErrors(t *testing.T) {
	t.Parallel()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := testKeys()
	for _, tc := range []struct {
		name string
		cfg  auth.JWTConfig
		want string
	}{
		{"nothing", auth.JWTConfig{}, "configure an HS256 secret"},
		{"short secret", auth.JWTConfig{HS256Secret: []byte("short")}, "shorter than 32 bytes"},
		{"small RSA", auth.JWTConfig{Keys: []auth.PublicKey{{ID: "s", Key: &small.PublicKey}}}, "shorter than 2048 bits"},
		{"P-384", auth.JWTConfig{Keys: []auth.PublicKey{{ID: "p", Key: &p384.PublicKey}}}, "P-256"},
		{"raw bytes key", auth.JWTConfig{Keys: []auth.PublicKey{{ID: "b", Key: secret}}}, "not supported"},
		{"dup kid", auth.JWTConfig{Keys: []auth.PublicKey{{ID: "a", Key: &k.rsa1.PublicKey}, {ID: "a", Key: &k.rsa2.PublicKey}}}, "duplicate key ID"},
		{"negative leeway", auth.JWTConfig{HS256Secret: secret, Leeway: -1}, "negative"},
	} {
		if _, err := auth.NewVerifier(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewVerifier = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct{ name, pem, want string }{
		{"not PEM", "hello", "no PEM block"},
		{"private key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), "not a public key"},
		{"bad DER", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})), "k"},
	} {
		if _, err := auth.ParsePublicKeyPEM("k", []byte(tc.pem)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParsePublicKeyPEM = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa1.PublicKey)})
	if _, err := auth.ParsePublicKeyPEM("k", pkcs1); err != nil {
		t.Errorf("PKCS #1 PEM: %v", err)
	}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, pub *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64u(pub.N.Bytes()), "e": b64u(big.NewInt(int64(pub.E)).Bytes())}
}

func ecJWK(t testing.TB, kid string, pub *ecdsa.PublicKey) map[string]any {
	t.Helper()
	pt, err := pub.Bytes() // 0x04 || X || Y, each 32 bytes
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64u(pt[1:33]), "y": b64u(pt[33:])}
}

func jwks(t testing.TB, keys ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	k := testKeys()
	path := filepath.Join(t.TempDir(), "jwks.json")
	doc := jwks(t,
		rsaJWK("rsa-1", &k.rsa1.PublicKey),
		ecJWK(t, "ec-1", &k.ec1.PublicKey),
		map[string]any{"kty": "RSA", "kid": "enc", "use": "enc", "n": "xx", "e": "AQAB"},  // skipped: encryption key
		map[string]any{"kty": "oct", "kid": "sym", "k": b64u(secret)},                     // skipped: symmetric
		map[string]any{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AA"},            // skipped: unsupported
		map[string]any{"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},  // skipped: other curve
		map[string]any{"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AA", "e": "AQAB"}, // skipped: other alg
	)
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ReadJWKS(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != "rsa-1" || keys[1].ID != "ec-1" {
		t.Fatalf("ReadJWKS = %+v, want rsa-1 and ec-1", keys)
	}
	v := newVerifier(t, auth.JWTConfig{Keys: keys})
	for _, tc := range []struct {
		name  string
		token string
		ok    bool
	}{
		{"rsa", sign(t, jwt.SigningMethodRS256, k.rsa1, "rsa-1", claims()), true},
		{"ec", sign(t, jwt.SigningMethodES256, k.ec1, "ec-1", claims()), true},
		{"rsa wrong key", sign(t, jwt.SigningMethodRS256, k.rsa2, "rsa-1", claims()), false},
		{"kid of skipped key", sign(t, jwt.SigningMethodRS256, k.rsa1, "enc", claims()), false},
		{"hs with jwks", sign(t, jwt.SigningMethodHS256, secret, "sym", claims()), false},
	} {
		if _, err := v.Verify(tc.token); (err == nil) != tc.ok {
			t.Errorf("%s: Verify = %v (%s), want ok=%v", tc.name, err, detail(err), tc.ok)
		}
	}

	offCurve := ecJWK(t, "bad", &k.ec1.PublicKey)
	offCurve["y"] = offCurve["x"]
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	noKID := rsaJWK("", &k.rsa1.PublicKey)
	evenE := rsaJWK("e", &k.rsa1.PublicKey)
	evenE["e"] = b64u([]byte{1, 0, 0})
	shortX := ecJWK(t, "s", &k.ec1.PublicKey)
	shortX["x"] = b64u([]byte{1, 2, 3})
	padded := rsaJWK("p", &k.rsa1.PublicKey)
	padded["e"] = "AQAB="
	for _, tc := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"not JSON", []byte("{"), "jwks"},
		{"no keys", []byte(`{}`), `no "keys"`},
		{"off curve", jwks(t, offCurve), "invalid P-256 point"},
		{"short coordinate", jwks(t, shortX), "32 bytes"},
		{"small RSA", jwks(t, rsaJWK("s", &small.PublicKey)), "2048 bits"},
		{"no kid", jwks(t, noKID), `no "kid"`},
		{"dup kid", jwks(t, rsaJWK("a", &k.rsa1.PublicKey), ecJWK(t, "a", &k.ec1.PublicKey)), `duplicate "kid"`},
		{"even e", jwks(t, evenE), "odd"},
		{"padded e", jwks(t, padded), "base64url"},
	} {
		if _, err := auth.ParseJWKS(tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParseJWKS = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := auth.ReadJWKS(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("ReadJWKS of a missing file succeeded")
	}
}
