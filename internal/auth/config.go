package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// FileConfig is the JSON file given to `herald serve --auth-config`:
//
//	{
//	  "apiKeys": [{"name": "billing", "hash": "<herald auth hash-key output>", "scopes": ["publish"]}],
//	  "jwt": {"hs256Secret": "<at least 32 bytes>", "jwksFile": "/etc/herald/jwks.json",
//	          "issuer": "https://auth.example.com", "audience": "herald", "leeway": "30s"}
//	}
//
// Either part may be left out to refuse that kind of credential.
type FileConfig struct {
	APIKeys []KeyConfig `json:"apiKeys"`
	JWT     *struct {
		HS256Secret string `json:"hs256Secret"`
		JWKSFile    string `json:"jwksFile"`
		Issuer      string `json:"issuer"`
		Audience    string `json:"audience"`
		Leeway      string `json:"leeway"`
		AllowAdmin  bool   `json:"allowAdmin"`
	} `json:"jwt"`
}

// LoadConfig reads a FileConfig and builds its Authenticator. Errors name
// the field at fault, never a secret.
func LoadConfig(path string) (*Authenticator, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}
	var fc FileConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("auth config %s: %w", path, err)
	}
	var keys *Keys
	if len(fc.APIKeys) > 0 {
		if keys, err = NewKeys(fc.APIKeys); err != nil {
			return nil, fmt.Errorf("auth config %s: apiKeys: %w", path, err)
		}
	}
	var verifier *Verifier
	if j := fc.JWT; j != nil {
		cfg := JWTConfig{Issuer: j.Issuer, Audience: j.Audience, AllowAdmin: j.AllowAdmin}
		if j.HS256Secret != "" {
			cfg.HS256Secret = []byte(j.HS256Secret)
		}
		if j.JWKSFile != "" {
			if cfg.Keys, err = ReadJWKS(j.JWKSFile); err != nil {
				return nil, fmt.Errorf("auth config %s: jwt.jwksFile: %w", path, err)
			}
		}
		if j.Leeway != "" {
			if cfg.Leeway, err = time.ParseDuration(j.Leeway); err != nil {
				return nil, fmt.Errorf("auth config %s: jwt.leeway: %w", path, err)
			}
		}
		if verifier, err = NewVerifier(cfg); err != nil {
			return nil, fmt.Errorf("auth config %s: jwt: %w", path, err)
		}
	}
	if keys == nil && verifier == nil {
		return nil, errors.New("auth config " + path + ": neither apiKeys nor jwt is configured: nobody could authenticate")
	}
	return NewAuthenticator(keys, verifier), nil
}
