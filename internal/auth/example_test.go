package auth_test

import (
	"fmt"

	"github.com/heraldrt/herald/internal/auth"
)

func ExamplePattern_Match() {
	for _, s := range []string{"chat:*", "chat:>"} {
		p, err := auth.ParsePattern(s)
		if err != nil {
			panic(err)
		}
		fmt.Println(s, p.Match("chat:room-1"), p.Match("chat:a:b"), p.Match("chat"))
	}
	// Output:
	// chat:* true false false
	// chat:> true true false
}

func ExamplePattern_Expand() {
	p, err := auth.ParsePattern("user:{sub}")
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Expand("alice").Match("user:alice"))
	// A subject that would act as a wildcard or add a segment matches nothing.
	fmt.Println(p.Expand("*").Match("user:bob"), p.Expand("a:b").Match("user:a:b"))
	// Output:
	// true
	// false false
}

func ExampleAuthenticator_Authenticate() {
	key, err := auth.GenerateKey()
	if err != nil {
		panic(err)
	}
	keys, err := auth.NewKeys([]auth.KeyConfig{{
		Name:     "ingest",
		Hash:     auth.HashKey(key), // only the hash is configured
		Scopes:   []auth.Scope{auth.ScopePublish},
		Channels: []string{"chat:>"},
	}})
	if err != nil {
		panic(err)
	}
	a := auth.NewAuthenticator(keys, nil)

	id, err := a.Authenticate("Bearer " + key)
	fmt.Println(id.Kind(), id.Name(), id.CanPublish("chat:room-1"), id.CanPublish("news:x"), err)

	_, err = a.Authenticate("")
	fmt.Println(err)
	// Output:
	// api-key ingest true false <nil>
	// authentication required: send an Authorization: Bearer header with a token or API key (EventSource clients: the access_token query parameter or cookie)
}
