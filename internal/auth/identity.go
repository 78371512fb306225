package auth

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// validText reports whether s can be stored as text: valid UTF-8 without
// NUL, which PostgreSQL refuses in text columns. Identity names become
// event authors ("user:<sub>", "key:<name>").
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// Kind says how an Identity authenticated.
type Kind uint8

const (
	// Anonymous is the zero Kind: no credential was presented.
	Anonymous Kind = iota
	// APIKey identities are internal services holding a configured key.
	APIKey
	// User identities are end users holding a verified JWT.
	User
)

func (k Kind) String() string {
	switch k {
	case Anonymous:
		return "anonymous"
	case APIKey:
		return "api-key"
	case User:
		return "user"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Scope names a class of action an identity may take.
type Scope string

// The scopes. Admin allows every action on every channel.
const (
	ScopePublish   Scope = "publish"
	ScopeSubscribe Scope = "subscribe"
	ScopeHistory   Scope = "history"
	ScopeAdmin     Scope = "admin"
)

type scopeSet uint8

const (
	bitPublish scopeSet = 1 << iota
	bitSubscribe
	bitHistory
	bitAdmin
)

func scopeBit(s Scope) (scopeSet, bool) {
	switch s {
	case ScopePublish:
		return bitPublish, true
	case ScopeSubscribe:
		return bitSubscribe, true
	case ScopeHistory:
		return bitHistory, true
	case ScopeAdmin:
		return bitAdmin, true
	}
	return 0, false
}

// An Identity is who a connection is and what it may do. The zero Identity
// is anonymous and allowed nothing. Identities are immutable and safe for
// concurrent use.
type Identity struct {
	kind      Kind
	name      string
	scopes    scopeSet
	allCh     bool // API key without patterns: scopes apply to every channel
	subscribe []Pattern
	publish   []Pattern
	channels  []string
	expires   time.Time
	info      string // the token's info claim (JSON), for presence
}

// MaxInfoBytes bounds a token's info claim.
const MaxInfoBytes = 1024

// Info returns the token's "info" claim as JSON text, "" when none: what
// presence shows other subscribers about this user.
func (id Identity) Info() string { return id.info }

// Kind returns how the identity authenticated.
func (id Identity) Kind() Kind { return id.kind }

// Name returns the API key's configured name or the JWT subject; it is empty
// for anonymous identities.
func (id Identity) Name() string { return id.name }

// Scopes returns the identity's scopes in a fixed order.
func (id Identity) Scopes() []Scope {
	var out []Scope
	for _, s := range []Scope{ScopePublish, ScopeSubscribe, ScopeHistory, ScopeAdmin} {
		if id.has(s) {
			out = append(out, s)
		}
	}
	return out
}

func (id Identity) has(s Scope) bool {
	b, _ := scopeBit(s)
	return id.scopes&b != 0
}

// HasScope reports whether the identity holds scope s.
func (id Identity) HasScope(s Scope) bool { return id.has(s) }

// IsAdmin reports whether the identity holds the admin scope.
func (id Identity) IsAdmin() bool { return id.has(ScopeAdmin) }

// Expires returns when the credential stops being valid; the zero time means
// it does not expire (API keys, anonymous).
func (id Identity) Expires() time.Time { return id.expires }

// Expired reports whether the credential has expired at now.
func (id Identity) Expired(now time.Time) bool {
	return !id.expires.IsZero() && !now.Before(id.expires)
}

// Channels returns the server-side channels the connection should be
// subscribed to without asking (the JWT "channels" claim, expanded).
func (id Identity) Channels() []string { return slices.Clone(id.channels) }

// CanSubscribe reports whether the identity may subscribe to channel.
func (id Identity) CanSubscribe(channel string) bool {
	if !ValidChannel(channel) {
		return false
	}
	if id.IsAdmin() || slices.Contains(id.channels, channel) {
		return true
	}
	return id.has(ScopeSubscribe) && id.matches(id.subscribe, channel)
}

// CanPublish reports whether the identity may publish to channel.
func (id Identity) CanPublish(channel string) bool {
	if !ValidChannel(channel) {
		return false
	}
	if id.IsAdmin() {
		return true
	}
	return id.has(ScopePublish) && id.matches(id.publish, channel)
}

// CanReadHistory reports whether the identity may read channel's history:
// it needs the history scope and a channel its subscribe patterns (or, for
// API keys, its channel patterns, or its "channels" claim) allow; the
// subscribe scope itself is not required.
func (id Identity) CanReadHistory(channel string) bool {
	if !ValidChannel(channel) {
		return false
	}
	if id.IsAdmin() {
		return true
	}
	return id.has(ScopeHistory) && (slices.Contains(id.channels, channel) || id.matches(id.subscribe, channel))
}

func (id Identity) matches(ps []Pattern, channel string) bool {
	if id.allCh {
		return true
	}
	for _, p := range ps {
		if p.Match(channel) {
			return true
		}
	}
	return false
}
