package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/heraldrt/herald/internal/auth"
)

const keygenSummary = `Make an API key named NAME with the given scopes (publish, subscribe, history,
admin; default: publish subscribe history). The key is printed once and never
stored: the --auth-config file of "herald serve" holds only its SHA-256 hash.

Without --auth-config it prints the key and the "apiKeys" entry to add to that
file. With --auth-config FILE it adds the entry to FILE itself (creating FILE
when missing) and prints only the key, for scripts:

  herald keygen --auth-config auth.json backend publish > backend.key`

// keygen makes an API key.
func keygen(args []string, out io.Writer) error {
	var file string
	fs := newFlags("keygen", "NAME [SCOPE...]", keygenSummary, out)
	fs.StringVar(&file, "auth-config", "", "add the key's entry to this JSON file (the --auth-config of herald serve; created when missing) and print only the key")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fs.usage("want a NAME, then scopes (publish, subscribe, history, admin; default publish subscribe history)")
	}
	scopes := []auth.Scope{auth.ScopePublish, auth.ScopeSubscribe, auth.ScopeHistory}
	if fs.NArg() > 1 {
		scopes = scopes[:0]
		for _, s := range fs.Args()[1:] {
			scopes = append(scopes, auth.Scope(s))
		}
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	entry := auth.KeyConfig{Name: fs.Arg(0), Hash: auth.HashKey(key), Scopes: scopes}
	if _, err := auth.NewKeys([]auth.KeyConfig{entry}); err != nil {
		return err
	}
	if file != "" {
		if err := addKey(file, entry); err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, key)
		return err
	}
	b, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "key (give it to the service; it is not stored):\n%s\n\nadd to \"apiKeys\" in the --auth-config file:\n%s\n", key, b)
	return err
}

// addKey appends entry to the "apiKeys" of the auth config file path,
// keeping its other settings, or creates the file (readable by its owner
// only) with just that key.
func addKey(path string, entry auth.KeyConfig) error {
	doc := map[string]json.RawMessage{}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("auth config %s: %w", path, err)
		}
	}
	var raw []json.RawMessage // written back as they were
	var keys []auth.KeyConfig // to check the new one against
	if r, ok := doc["apiKeys"]; ok {
		if err := json.Unmarshal(r, &raw); err != nil {
			return fmt.Errorf("auth config %s: apiKeys: %w", path, err)
		}
		if err := json.Unmarshal(r, &keys); err != nil {
			return fmt.Errorf("auth config %s: apiKeys: %w", path, err)
		}
	}
	if _, err := auth.NewKeys(append(keys, entry)); err != nil {
		return fmt.Errorf("auth config %s: %w", path, err)
	}
	b, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	if doc["apiKeys"], err = json.Marshal(append(raw, b)); err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}
