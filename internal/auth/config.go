package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// FileConfig is the JSON file given to `herald serve --auth-config`:
//
//	{
//	  "apiKeys": [{"name": "billing", "hash": "<herald auth hash-key output>", "scopes": ["publish"]}],
//	  "jwt": {"hs256Secret": "<at least 32 bytes>", "jwksURL": "https://auth.example.com/.well-known/jwks.json",
//	          "jwksRefresh": "5m", "issuer": "https://auth.example.com", "audience": "herald", "leeway": "30s"}
//	}
//
// Either part may be left out to refuse that kind of credential. The public
// keys come from jwksURL or jwksFile (not both), reloaded every jwksRefresh
// (default 5m, at least 30s); see JWKS. "cacheSize" is JWTConfig.CacheSize
// (0 or absent: 10,000 verified tokens; negative: no cache).
type FileConfig struct {
	APIKeys []KeyConfig `json:"apiKeys"`
	JWT     *struct {
		HS256Secret string `json:"hs256Secret"`
		JWKSFile    string `json:"jwksFile"`
		JWKSURL     string `json:"jwksURL"`
		JWKSRefresh string `json:"jwksRefresh"`
		Issuer      string `json:"issuer"`
		Audience    string `json:"audience"`
		Leeway      string `json:"leeway"`
		AllowAdmin  bool   `json:"allowAdmin"`
		CacheSize   int    `json:"cacheSize"`
	} `json:"jwt"`
}

// LoadConfig reads a FileConfig and builds its Authenticator. With
// jwksURL or jwksFile it loads the key set once and fails if it cannot, so
// that a misconfiguration stops the server from starting; the
// Authenticator's Run then keeps the set current and logs to log (nil:
// slog.Default()). Errors name the field at fault, never a secret.
func LoadConfig(ctx context.Context, path string, log *slog.Logger) (*Authenticator, error) {
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
		cfg := JWTConfig{Issuer: j.Issuer, Audience: j.Audience, AllowAdmin: j.AllowAdmin, CacheSize: j.CacheSize}
		if j.HS256Secret != "" {
			cfg.HS256Secret = []byte(j.HS256Secret)
		}
		if j.Leeway != "" {
			if cfg.Leeway, err = time.ParseDuration(j.Leeway); err != nil {
				return nil, fmt.Errorf("auth config %s: jwt.leeway: %w", path, err)
			}
		}
		src := JWKSConfig{URL: j.JWKSURL, File: j.JWKSFile, Logger: log}
		field := "jwt.jwksURL"
		switch {
		case j.JWKSURL != "" && j.JWKSFile != "":
			return nil, fmt.Errorf("auth config %s: jwt: set jwksURL or jwksFile, not both", path)
		case j.JWKSFile != "":
			field = "jwt.jwksFile"
		case j.JWKSURL == "" && j.JWKSRefresh != "":
			return nil, fmt.Errorf("auth config %s: jwt.jwksRefresh: set jwksURL or jwksFile too", path)
		}
		if j.JWKSRefresh != "" {
			if src.Refresh, err = time.ParseDuration(j.JWKSRefresh); err != nil {
				return nil, fmt.Errorf("auth config %s: jwt.jwksRefresh: %w", path, err)
			}
			if src.Refresh < minJWKSRefresh {
				return nil, fmt.Errorf("auth config %s: jwt.jwksRefresh: shorter than %v", path, minJWKSRefresh)
			}
		}
		if src.URL != "" || src.File != "" {
			if cfg.JWKS, err = OpenJWKS(ctx, src); err != nil {
				return nil, fmt.Errorf("auth config %s: %s: %w", path, field, err)
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
