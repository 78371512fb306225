package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/heraldrt/herald/internal/auth"
)

// keygen makes an API key. The key itself is printed once and never
// stored; the config entry holds only its SHA-256 hash.
func keygen(args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("keygen needs a NAME, then scopes (publish, subscribe, history, admin; default publish subscribe history)")
	}
	scopes := []auth.Scope{auth.ScopePublish, auth.ScopeSubscribe, auth.ScopeHistory}
	if len(args) > 1 {
		scopes = scopes[:0]
		for _, s := range args[1:] {
			scopes = append(scopes, auth.Scope(s))
		}
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	entry := auth.KeyConfig{Name: args[0], Hash: auth.HashKey(key), Scopes: scopes}
	if _, err := auth.NewKeys([]auth.KeyConfig{entry}); err != nil {
		return err
	}
	b, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "key (give it to the service; it is not stored):\n%s\n\nadd to \"apiKeys\" in the --auth-config file:\n%s\n", key, b)
	return err
}
