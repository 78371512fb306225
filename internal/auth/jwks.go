package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
)

// maxJWKS bounds the JWKS document size; real ones are a few kilobytes.
const maxJWKS = 1 << 20

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// ParseJWKS parses a JSON Web Key Set (RFC 7517) and returns its RSA and
// P-256 EC signature keys. Keys for encryption ("use":"enc"), of other types
// (oct, OKP) or for other algorithms are skipped, since identity providers
// publish those alongside signing keys; a malformed RSA or EC key, a key
// without "kid" or a repeated "kid" is an error, because selecting keys by
// "kid" is the only way a token names its key.
func ParseJWKS(data []byte) ([]PublicKey, error) {
	if len(data) > maxJWKS {
		return nil, fmt.Errorf("jwks: larger than %d bytes", maxJWKS)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`jwks: no "keys" array`)
	}
	var out []PublicKey
	seen := map[string]bool{}
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var (
			pk  PublicKey
			err error
		)
		switch {
		case k.Kty == "RSA" && (k.Alg == "" || k.Alg == "RS256"):
			pk, err = k.rsa()
		case k.Kty == "EC" && (k.Alg == "" || k.Alg == "ES256") && k.Crv == "P-256":
			pk, err = k.ec()
		default:
			continue
		}
		if err == nil && k.Kid == "" {
			err = errors.New(`no "kid"`)
		}
		if err == nil && seen[k.Kid] {
			err = errors.New(`duplicate "kid"`)
		}
		if err == nil {
			_, err = pk.alg()
		}
		if err != nil {
			return nil, fmt.Errorf("jwks key %d (kid %q): %w", i+1, truncate(k.Kid), err)
		}
		seen[k.Kid] = true
		out = append(out, pk)
	}
	return out, nil
}

// ReadJWKS reads and parses a JWKS document from a file.
func ReadJWKS(path string) ([]PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read jwks: %w", err)
	}
	keys, err := ParseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

func b64(field, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%q is not non-empty unpadded base64url", field)
	}
	return b, nil
}

func (k jwk) rsa() (PublicKey, error) {
	n, err := b64("n", k.N)
	if err != nil {
		return PublicKey{}, err
	}
	e, err := b64("e", k.E)
	if err != nil {
		return PublicKey{}, err
	}
	if len(e) > 4 || len(e) == 4 && e[0]&0x80 != 0 { // must fit an int32
		return PublicKey{}, errors.New(`"e" is too large`)
	}
	var exp int
	for _, c := range e {
		exp = exp<<8 | int(c)
	}
	if exp < 3 || exp%2 == 0 {
		return PublicKey{}, errors.New(`"e" must be an odd number of at least 3`)
	}
	return PublicKey{ID: k.Kid, Key: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}}, nil
}

func (k jwk) ec() (PublicKey, error) {
	const size = 32 // P-256 coordinates
	x, err := b64("x", k.X)
	if err != nil {
		return PublicKey{}, err
	}
	y, err := b64("y", k.Y)
	if err != nil {
		return PublicKey{}, err
	}
	if len(x) != size || len(y) != size {
		return PublicKey{}, fmt.Errorf(`"x" and "y" must be %d bytes each for P-256`, size)
	}
	point := append(append([]byte{4}, x...), y...)
	// ParseUncompressedPublicKey rejects points that are not on the curve.
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return PublicKey{}, fmt.Errorf("invalid P-256 point: %w", err)
	}
	return PublicKey{ID: k.Kid, Key: pub}, nil
}
