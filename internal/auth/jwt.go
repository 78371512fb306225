package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	minHMACSecret = 32   // bytes; HS256 secrets shorter than its output are guessable
	minRSABits    = 2048 // smaller RSA keys are factorable
	maxClaimItems = 256  // patterns per claim, to bound per-token work
)

// JWTConfig configures a Verifier. At least one of HS256Secret and Keys must
// be set; the accepted algorithms follow from them and from nothing else.
type JWTConfig struct {
	// HS256Secret enables HS256 with this shared secret (at least 32 bytes).
	HS256Secret []byte
	// Keys enables RS256 (RSA keys) and ES256 (P-256 keys).
	Keys []PublicKey
	// JWKS, if set, enables RS256 and ES256 with the keys of a key set
	// that is reloaded while the Verifier is in use (see OpenJWKS). A key
	// ID in Keys takes precedence over the same ID in the set. A token
	// naming a key ID found in neither asks the set for a reload.
	JWKS *JWKS
	// Issuer, if set, must equal the "iss" claim. Set it in production.
	Issuer string
	// Audience, if set, must be one of the "aud" claim's values. Set it in
	// production so tokens minted for another service are refused.
	Audience string
	// Leeway is the clock skew tolerated when checking exp, nbf and iat.
	Leeway time.Duration
	// AllowAdmin lets a token's "scopes" claim grant admin. Without it such
	// tokens are refused.
	AllowAdmin bool
	// CacheSize is how many verified tokens the Verifier remembers, so
	// that a token presented again (a client's next request) is accepted
	// without parsing it or checking its signature. 0 means
	// DefaultCacheSize (10,000); a negative value turns the cache off.
	// A remembered token is accepted only while a fresh verification
	// would accept it: its exp, nbf and iat are checked against Now with
	// Leeway exactly as on first use, and a JWKS reload makes every token
	// verified before it be verified again. Failed tokens are not
	// remembered. Tokens longer than MaxCachedTokenLen (4 KiB), or whose
	// entry would hold more than MaxCacheEntryBytes (8 KiB), are verified
	// on every use. So the cache holds at most about CacheSize × 8.5 KB
	// of heap (85 MB at the default); a 355-byte token with the usual
	// claims takes about 1.2 KB. When full, a new token evicts an
	// arbitrary one.
	CacheSize int
	// Now replaces time.Now, for tests.
	Now func() time.Time
}

// PublicKey is a verification key with an optional key ID ("kid"). Key is an
// *rsa.PublicKey (RS256) or an *ecdsa.PublicKey on P-256 (ES256).
type PublicKey struct {
	ID  string
	Key crypto.PublicKey
}

func (k PublicKey) alg() (string, error) {
	switch pk := k.Key.(type) {
	case *rsa.PublicKey:
		if pk.N == nil || pk.N.BitLen() < minRSABits {
			return "", fmt.Errorf("RSA key %q: shorter than %d bits", k.ID, minRSABits)
		}
		return "RS256", nil
	case *ecdsa.PublicKey:
		if pk.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC key %q: curve must be P-256 for ES256", k.ID)
		}
		return "ES256", nil
	}
	return "", fmt.Errorf("key %q: type %T is not supported (want RSA or P-256 ECDSA)", k.ID, k.Key)
}

// ParsePublicKeyPEM parses a PEM "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY"
// (PKCS #1) block into a PublicKey with the given key ID.
func ParsePublicKeyPEM(id string, data []byte) (PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return PublicKey{}, fmt.Errorf("key %q: no PEM block found", id)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return PublicKey{}, fmt.Errorf("key %q: PEM block %q is not a public key", id, block.Type)
	}
	if err != nil {
		return PublicKey{}, fmt.Errorf("key %q: %w", id, err)
	}
	k := PublicKey{ID: id, Key: key}
	if _, err := k.alg(); err != nil {
		return PublicKey{}, err
	}
	return k, nil
}

type verifierKey struct {
	id  string
	alg string
	key crypto.PublicKey
}

// Verifier verifies JWTs. It is safe for concurrent use, and never waits
// for a reload of its JWKS.
type Verifier struct {
	cfg    JWTConfig
	keys   []verifierKey // from cfg.Keys; cfg.JWKS holds the others
	byKID  map[string]verifierKey
	parser *jwt.Parser
	cache  *tokenCache // nil when off
}

// NewVerifier validates cfg and returns a Verifier.
func NewVerifier(cfg JWTConfig) (*Verifier, error) {
	v := &Verifier{cfg: cfg, byKID: make(map[string]verifierKey)}
	var algs []string
	if cfg.HS256Secret != nil {
		if len(cfg.HS256Secret) < minHMACSecret {
			return nil, fmt.Errorf("HS256 secret: shorter than %d bytes", minHMACSecret)
		}
		v.cfg.HS256Secret = slices.Clone(cfg.HS256Secret)
		algs = append(algs, "HS256")
	}
	for _, k := range cfg.Keys {
		alg, err := k.alg()
		if err != nil {
			return nil, err
		}
		vk := verifierKey{id: k.ID, alg: alg, key: k.Key}
		if k.ID != "" {
			if _, dup := v.byKID[k.ID]; dup {
				return nil, fmt.Errorf("key %q: duplicate key ID", k.ID)
			}
			v.byKID[k.ID] = vk
		}
		v.keys = append(v.keys, vk)
		if !slices.Contains(algs, alg) {
			algs = append(algs, alg)
		}
	}
	if cfg.JWKS != nil {
		// The set may gain either kind of key; keyFor still hands each
		// key only to its own algorithm.
		for _, alg := range []string{"RS256", "ES256"} {
			if !slices.Contains(algs, alg) {
				algs = append(algs, alg)
			}
		}
	}
	if len(algs) == 0 {
		return nil, errors.New("jwt: configure an HS256 secret or at least one public key")
	}
	if cfg.Leeway < 0 {
		return nil, errors.New("jwt: leeway is negative")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	v.cfg.Now = now
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	switch {
	case cfg.CacheSize == 0:
		v.cache = newTokenCache(DefaultCacheSize)
	case cfg.CacheSize > 0:
		v.cache = newTokenCache(cfg.CacheSize)
	}
	return v, nil
}

// claims are the token claims Herald reads besides the registered ones.
type claims struct {
	jwt.RegisteredClaims
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	Channels  []string `json:"channels,omitempty"`
	Scopes    []string `json:"scopes,omitempty"`
	// Info is shown to other subscribers in presence sets (any JSON).
	Info json.RawMessage `json:"info,omitempty"`
}

// keyFor selects the verification key for a token. Each key serves exactly
// one algorithm: the HS256 secret is never handed to an RS/ES token and an
// RSA or EC key never to an HS token, which rules out algorithm confusion
// even before jwt's own key-type checks.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	rawKID, hasKID := t.Header["kid"]
	kid, ok := rawKID.(string)
	if hasKID && !ok {
		return nil, errors.New("kid header is not a string")
	}
	if alg == "HS256" {
		if v.cfg.HS256Secret == nil {
			return nil, errors.New("HS256 is not configured")
		}
		return v.cfg.HS256Secret, nil
	}
	var set *keySet
	if v.cfg.JWKS != nil {
		set = v.cfg.JWKS.current() // one snapshot for the whole lookup
	}
	if hasKID {
		k, ok := v.byKID[kid]
		if !ok && set != nil {
			k, ok = set.byKID[kid]
		}
		if !ok {
			if v.cfg.JWKS != nil {
				v.cfg.JWKS.requestReload() // the provider may have rotated its keys
			}
			return nil, fmt.Errorf("unknown key id %q", truncate(kid))
		}
		if k.alg != alg {
			return nil, fmt.Errorf("key %q is for %s, token says %s", truncate(kid), k.alg, alg)
		}
		return k.key, nil
	}
	var candidates jwt.VerificationKeySet
	for _, keys := range [][]verifierKey{v.keys, set.all()} {
		for _, k := range keys {
			if k.alg == alg {
				candidates.Keys = append(candidates.Keys, k.key)
			}
		}
	}
	if len(candidates.Keys) == 0 {
		return nil, fmt.Errorf("no %s key configured", alg)
	}
	return candidates, nil
}

// Verify checks a compact JWT's signature and claims and returns the user's
// identity. Errors are *Error values. A token verified before is answered
// from the cache (see JWTConfig.CacheSize) while a fresh verification
// would still accept it; otherwise it is verified in full.
func (v *Verifier) Verify(token string) (Identity, error) {
	if v.cache == nil {
		id, _, err := v.verify(token)
		return id, err
	}
	// The set is read before verifying: keyFor reads it again and sees
	// this set or a newer one, never an older one. So an entry is only
	// ever served under a set at least as new as the one that verified
	// it, and since a reload always stores a new set, "unchanged since"
	// is a pointer comparison.
	var set *keySet
	if v.cfg.JWKS != nil {
		set = v.cfg.JWKS.current()
	}
	if id, ok := v.cache.lookup(token, set, v.cfg.Now(), v.cfg.Leeway); ok {
		return id, nil
	}
	// A miss, an entry under an older key set, or one whose time claims
	// no longer hold: verify in full, so that errors are those of a
	// token never seen before.
	e, c, err := v.verify(token)
	if err != nil {
		v.cache.remove(token)
		return Identity{}, err
	}
	v.cache.put(token, newCacheEntry(e, c, set))
	return e, nil
}

// verify is Verify without the cache. It also returns the claims, whose
// registered claims the cache keeps.
func (v *Verifier) verify(token string) (Identity, *claims, error) {
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyFor); err != nil {
		return Identity{}, nil, jwtError(err)
	}
	if c.Subject == "" {
		return Identity{}, nil, newError(ErrInvalidCredential, "token has no sub claim")
	}
	if !validText(c.Subject) {
		// The subject is stored as the author of what the user writes:
		// refused here, rather than by the database on every publish.
		e := newError(ErrInvalidCredential, "sub claim contains NUL or invalid UTF-8")
		e.client = "invalid credential: the token's sub claim contains a NUL character or invalid UTF-8, " +
			"which this server does not accept; obtain a token whose subject is plain text"
		return Identity{}, nil, e
	}
	id := Identity{kind: User, name: c.Subject, expires: c.ExpiresAt.Time}
	if len(c.Info) > 0 && string(c.Info) != "null" {
		if len(c.Info) > MaxInfoBytes {
			return Identity{}, nil, newError(ErrInvalidCredential, fmt.Sprintf("info claim is larger than %d bytes", MaxInfoBytes))
		}
		id.info = string(c.Info)
	}
	if c.Scopes == nil {
		id.scopes = bitPublish | bitSubscribe | bitHistory
	}
	for _, s := range c.Scopes {
		b, known := scopeBit(Scope(s))
		if b == bitAdmin && !v.cfg.AllowAdmin {
			return Identity{}, nil, newError(ErrInvalidCredential, "token claims the admin scope, which this server does not grant to tokens")
		}
		if known { // other scopes may be meant for other services
			id.scopes |= b
		}
	}
	var err error
	if id.subscribe, err = expandClaim("subscribe", c.Subscribe, c.Subject); err != nil {
		return Identity{}, nil, err
	}
	if id.publish, err = expandClaim("publish", c.Publish, c.Subject); err != nil {
		return Identity{}, nil, err
	}
	chans, err := expandClaim("channels", c.Channels, c.Subject)
	if err != nil {
		return Identity{}, nil, err
	}
	for i, p := range chans {
		ch, ok := p.Channel()
		if !ok {
			return Identity{}, nil, newError(ErrInvalidCredential, fmt.Sprintf("channels claim item %d is not a single valid channel for this subject", i+1))
		}
		id.channels = append(id.channels, ch)
	}
	return id, &c, nil
}

func expandClaim(name string, items []string, sub string) ([]Pattern, error) {
	if len(items) > maxClaimItems {
		return nil, newError(ErrInvalidCredential, fmt.Sprintf("%s claim has more than %d items", name, maxClaimItems))
	}
	out := make([]Pattern, 0, len(items))
	for i, s := range items {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, newError(ErrInvalidCredential, fmt.Sprintf("%s claim item %d: %v", name, i+1, err))
		}
		out = append(out, p.Expand(sub))
	}
	return out, nil
}

// jwtError classifies a jwt error. Expiry wins over other claim failures so
// a client that only needs a fresh token is told so.
func jwtError(err error) *Error {
	detail := err.Error()
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return newError(ErrMalformedCredential, detail)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return newError(ErrInvalidCredential, detail)
	case errors.Is(err, jwt.ErrTokenExpired):
		return newError(ErrExpired, detail)
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return newError(ErrNotYetValid, detail)
	}
	return newError(ErrInvalidCredential, detail)
}
