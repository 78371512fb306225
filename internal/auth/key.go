package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeyPrefix starts every API key, so keys are recognizable in config files,
// logs that leaked them, and secret scanners.
const KeyPrefix = "hk_"

const (
	keyBytes = 32
	keyLen   = len(KeyPrefix) + 43 // unpadded base64url of 32 bytes
)

// GenerateKey returns a new API key: KeyPrefix followed by the unpadded
// base64url encoding of 32 bytes from crypto/rand. Show it once to the
// operator and configure only HashKey(key).
func GenerateKey() (string, error) {
	b := make([]byte, keyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate API key: %w", err)
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashKey returns the hex SHA-256 of key, the form stored in KeyConfig.Hash.
//
// A fast hash is the right tool here, unlike for passwords. Slow KDFs
// (bcrypt, scrypt, Argon2) exist to make guessing low-entropy secrets
// expensive; a key from GenerateKey has 256 bits of entropy, so even a
// leaked hash cannot be inverted or brute-forced at any hash speed. A
// deterministic unsalted hash also lets Keys find a key by its hash in one
// map lookup instead of running a KDF against every configured key, and
// keeps the per-request cost too low to be a CPU denial-of-service lever.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// KeyConfig configures one API key. Channels limits the key's scopes to
// channels matching any of the patterns; empty means every channel.
type KeyConfig struct {
	Name     string   `json:"name"`
	Hash     string   `json:"hash"` // HashKey(key): 64 lowercase hex digits
	Scopes   []Scope  `json:"scopes"`
	Channels []string `json:"channels,omitempty"`
}

// Keys verifies API keys against a fixed configuration. It is safe for
// concurrent use.
type Keys struct {
	byHash map[[sha256.Size]byte]keyEntry
}

type keyEntry struct {
	hash [sha256.Size]byte
	id   Identity
}

// NewKeys validates cfgs and returns a verifier for them. Names and hashes
// must be unique, scopes known and non-empty, patterns valid and free of
// placeholders (an API key has no subject to expand them with).
func NewKeys(cfgs []KeyConfig) (*Keys, error) {
	k := &Keys{byHash: make(map[[sha256.Size]byte]keyEntry, len(cfgs))}
	names := make(map[string]bool, len(cfgs))
	for i, c := range cfgs {
		if c.Name == "" {
			return nil, fmt.Errorf("api key %d: name is empty", i+1)
		}
		if !validText(c.Name) {
			// The name is stored as the author of what the key writes.
			return nil, fmt.Errorf("api key %d: name %q contains NUL or invalid UTF-8", i+1, c.Name)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("api key %q: duplicate name", c.Name)
		}
		names[c.Name] = true
		raw, err := hex.DecodeString(c.Hash)
		if err != nil || len(raw) != sha256.Size || c.Hash != strings.ToLower(c.Hash) {
			return nil, fmt.Errorf("api key %q: hash must be 64 lowercase hex digits (auth.HashKey of the key), not the key itself", c.Name)
		}
		h := [sha256.Size]byte(raw)
		if _, dup := k.byHash[h]; dup {
			return nil, fmt.Errorf("api key %q: same hash as another key", c.Name)
		}
		id := &Identity{kind: APIKey, name: c.Name}
		if len(c.Scopes) == 0 {
			return nil, fmt.Errorf("api key %q: no scopes (want some of publish, subscribe, history, admin)", c.Name)
		}
		for _, s := range c.Scopes {
			b, ok := scopeBit(s)
			if !ok {
				return nil, fmt.Errorf("api key %q: unknown scope %q (want publish, subscribe, history or admin)", c.Name, s)
			}
			id.scopes |= b
		}
		for _, s := range c.Channels {
			p, err := ParsePattern(s)
			if err != nil {
				return nil, fmt.Errorf("api key %q: %w", c.Name, err)
			}
			if p.HasPlaceholders() {
				return nil, fmt.Errorf("api key %q: pattern %q: placeholders are only for tokens", c.Name, s)
			}
			id.subscribe = append(id.subscribe, p)
			id.publish = append(id.publish, p)
		}
		id.allCh = len(c.Channels) == 0
		k.byHash[h] = keyEntry{hash: h, id: *id}
	}
	return k, nil
}

var errKeyFormat = errors.New("not an API key")

// checkKeyFormat reports whether key has the shape GenerateKey produces.
func checkKeyFormat(key string) error {
	if len(key) != keyLen || !strings.HasPrefix(key, KeyPrefix) {
		return errKeyFormat
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(key[len(KeyPrefix):])
	if err != nil || len(b) != keyBytes {
		return errKeyFormat
	}
	return nil
}

// Verify returns the identity of a configured key. Errors are *Error values
// wrapping ErrMalformedCredential or ErrInvalidCredential.
func (k *Keys) Verify(key string) (Identity, error) {
	if err := checkKeyFormat(key); err != nil {
		return Identity{}, newError(ErrMalformedCredential, "API key has the wrong length, prefix or encoding")
	}
	sum := sha256.Sum256([]byte(key))
	// The map lookup's timing depends only on the hash of the presented key,
	// which tells an attacker nothing about any configured key. The
	// constant-time compare guards the final decision regardless of how the
	// map compares keys.
	if k != nil {
		if e, ok := k.byHash[sum]; ok && subtle.ConstantTimeCompare(e.hash[:], sum[:]) == 1 {
			return e.id, nil
		}
	}
	return Identity{}, newError(ErrInvalidCredential, "API key not configured")
}
