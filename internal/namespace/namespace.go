// Package namespace owns channel namespaces: the part of a channel name
// before its first ':' ("chat" in "chat:room-42") and the policy each
// namespace carries: who may subscribe, read history, publish and edit,
// and the settings its channels are created with (retention, max event
// size). It decides nothing about credentials themselves (package auth)
// and is applied by the services, so every transport gets the same rules.
package namespace

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// Access says who may take an action in a namespace.
type Access string

// The access levels, from most to least open.
const (
	// Anonymous: anyone, with or without a credential (public feeds).
	Anonymous Access = "anonymous"
	// Authenticated: any valid credential (a user's JWT or an API key),
	// whatever channels it names.
	Authenticated Access = "authenticated"
	// Token: the credential's own permissions decide (JWT claims, API key
	// scopes and patterns). The default.
	Token Access = "token"
	// Services: only API keys (and admins) whose permissions allow it;
	// end users may not, whatever their token says. For publish this is
	// "clients may not publish": the backend owns the channel.
	Services Access = "services"
)

// rank orders the levels by who they admit: each admits a subset of the
// one before.
func (a Access) rank() int {
	switch a {
	case Anonymous:
		return 0
	case Authenticated:
		return 1
	case Token:
		return 2
	}
	return 3
}

func (a Access) valid() bool {
	switch a {
	case Anonymous, Authenticated, Token, Services:
		return true
	}
	return false
}

// Edit says who may update or delete published events.
type Edit string

// The edit policies.
const (
	// Publishers: whoever may publish to the channel. The default.
	Publishers Edit = "publishers"
	// Author: only the identity that published the event (its Author),
	// plus API keys allowed to publish there and admins (moderation).
	Author Edit = "author"
	// ServicesOnly: only API keys allowed to publish there, and admins.
	ServicesOnly Edit = "services"
	// None: events are never changed, except by admins.
	None Edit = "none"
)

func (e Edit) valid() bool {
	switch e {
	case Publishers, Author, ServicesOnly, None:
		return true
	}
	return false
}

// Policy is one namespace's settings. Zero fields mean the default.
type Policy struct {
	// Name is the namespace ("" for the default policy).
	Name string
	// Subscribe says who may subscribe (default Token).
	Subscribe Access
	// History says who may read the history API (list, get; default: as
	// Subscribe). It cannot be stricter than Subscribe: a subscription
	// replays from its cursor, which is how clients resume without loss.
	History Access
	// Publish says who may publish (default Token).
	Publish Access
	// Edit says who may update and delete events (default Publishers).
	Edit Edit
	// MaxEventSize caps event data in bytes (0: the channel's setting
	// alone). New channels of the namespace get it as max_event_size.
	MaxEventSize int32
	// MaxEvents and MaxAge are the retention new channels of the
	// namespace are created with (0: keep; channel settings may change
	// it later).
	MaxEvents int64
	MaxAge    time.Duration
	// Signals allows ephemeral signals (EventService.Signal) on the
	// namespace's channels, to whoever may publish there. Default off.
	Signals bool
	// Presence, when set, turns presence on for the namespace's channels
	// (every subscription is a member of its channels' presence sets) and
	// says who may read the sets and receive joins and leaves: one of the
	// access levels, applied like Subscribe (token: whoever may subscribe).
	// Empty: presence is off.
	Presence Access
}

// HasChannelDefaults reports whether channels of the namespace are created
// with settings other than the server's defaults.
func (p *Policy) HasChannelDefaults() bool {
	return p.MaxEventSize != 0 || p.MaxEvents != 0 || p.MaxAge != 0
}

// Restricts reports whether the policy changes who may do what (which
// only takes effect when authentication is on).
func (p *Policy) Restricts() bool {
	return p.Subscribe != Token || p.History != Token || p.Publish != Token || p.Edit != Publishers
}

func (p *Policy) fill() {
	if p.Subscribe == "" {
		p.Subscribe = Token
	}
	if p.History == "" {
		p.History = p.Subscribe
	}
	if p.Publish == "" {
		p.Publish = Token
	}
	if p.Edit == "" {
		p.Edit = Publishers
	}
}

// MaxName bounds a namespace name; channel names are at most 128 bytes.
const MaxName = 64

// Set maps channels to policies. The zero and nil Sets give every channel
// the default policy (token permissions, no channel defaults).
type Set struct {
	byName        map[string]*Policy
	def           *Policy
	refuseUnknown bool
}

var defaultPolicy = func() *Policy { p := &Policy{}; p.fill(); return p }()

// Of returns the namespace of a channel: the part before the first ':', or
// "" when the name has none.
func Of(channel string) string {
	if i := strings.IndexByte(channel, ':'); i >= 0 {
		return channel[:i]
	}
	return ""
}

// For returns the policy of channel's namespace, or an error saying the
// namespace is not configured when the Set refuses unknown namespaces.
func (s *Set) For(channel string) (*Policy, error) {
	if s == nil || s.def == nil {
		return defaultPolicy, nil
	}
	name := Of(channel)
	if p, ok := s.byName[name]; ok {
		return p, nil
	}
	if name != "" && s.refuseUnknown {
		return nil, &UnknownError{Namespace: name, Channel: channel}
	}
	return s.def, nil
}

// Policies returns the configured policies, the default first.
func (s *Set) Policies() []*Policy {
	if s == nil || s.def == nil {
		return []*Policy{defaultPolicy}
	}
	out := []*Policy{s.def}
	names := make([]string, 0, len(s.byName))
	for n := range s.byName {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, s.byName[n])
	}
	return out
}

// ErrUnknown is wrapped by every UnknownError.
var ErrUnknown = errors.New("unknown namespace")

// UnknownError refuses a channel whose namespace is not configured (with
// refuseUnknown set). errors.Is(err, ErrUnknown).
type UnknownError struct{ Namespace, Channel string }

func (e *UnknownError) Unwrap() error { return ErrUnknown }

func (e *UnknownError) Error() string {
	return fmt.Sprintf("channel %q is in namespace %q, which this server does not serve: use a configured namespace", e.Channel, e.Namespace)
}

// File is the JSON document given to `herald serve --namespaces`:
//
//	{
//	  "default": {"subscribe": "token", "publish": "token"},
//	  "namespaces": {
//	    "news": {"subscribe": "anonymous", "publish": "services", "maxAge": "168h"},
//	    "chat": {"edit": "author", "maxEventSize": 4096, "maxEvents": 10000,
//	             "signals": true, "presence": "token"}
//	  },
//	  "refuseUnknown": false
//	}
//
// "default" applies to channels without a namespace and, unless
// refuseUnknown is true, to namespaces not listed.
type File struct {
	Default       *PolicyConfig           `json:"default"`
	Namespaces    map[string]PolicyConfig `json:"namespaces"`
	RefuseUnknown bool                    `json:"refuseUnknown"`
}

// PolicyConfig is one policy in a File.
type PolicyConfig struct {
	Subscribe    Access `json:"subscribe"`
	History      Access `json:"history"`
	Publish      Access `json:"publish"`
	Edit         Edit   `json:"edit"`
	MaxEventSize int32  `json:"maxEventSize"`
	MaxEvents    int64  `json:"maxEvents"`
	MaxAge       string `json:"maxAge"`
	Signals      bool   `json:"signals"`
	Presence     Access `json:"presence"`
}

// Limits the policies must respect (they mirror the event log's).
const (
	maxEventSizeLimit = 1 << 20
	maxEventsLimit    = 10_000_000
	maxAgeLimit       = 10 * 365 * 24 * time.Hour
	maxNamespaces     = 1000
)

func (c PolicyConfig) policy(name string) (*Policy, error) {
	p := &Policy{Name: name, Subscribe: c.Subscribe, History: c.History, Publish: c.Publish, Edit: c.Edit,
		MaxEventSize: c.MaxEventSize, MaxEvents: c.MaxEvents, Signals: c.Signals, Presence: c.Presence}
	var errs []error
	for field, a := range map[string]Access{"subscribe": c.Subscribe, "history": c.History, "publish": c.Publish} {
		if a != "" && !a.valid() {
			errs = append(errs, fmt.Errorf("%s: %q is not one of anonymous, authenticated, token, services", field, a))
		}
	}
	if c.Presence != "" && !c.Presence.valid() {
		errs = append(errs, fmt.Errorf("presence: %q is not one of anonymous, authenticated, token, services (or leave it out: presence off)", c.Presence))
	}
	if c.Edit != "" && !c.Edit.valid() {
		errs = append(errs, fmt.Errorf("edit: %q is not one of publishers, author, services, none", c.Edit))
	}
	if c.MaxEventSize < 0 || c.MaxEventSize > maxEventSizeLimit {
		errs = append(errs, fmt.Errorf("maxEventSize: %d is not within 0..%d bytes", c.MaxEventSize, maxEventSizeLimit))
	}
	if c.MaxEvents < 0 || c.MaxEvents > maxEventsLimit {
		errs = append(errs, fmt.Errorf("maxEvents: %d is not within 0..%d", c.MaxEvents, maxEventsLimit))
	}
	if c.Subscribe.valid() && c.History.valid() && c.History.rank() > c.Subscribe.rank() {
		errs = append(errs, fmt.Errorf("history: %q is stricter than subscribe (%q): subscribers replay history from their cursor anyway; make subscribe as strict", c.History, c.Subscribe))
	}
	if c.History.valid() && c.Subscribe == "" && c.History.rank() > Token.rank() {
		errs = append(errs, fmt.Errorf("history: %q is stricter than subscribe (token, the default): subscribers replay history from their cursor anyway; make subscribe as strict", c.History))
	}
	if c.MaxAge != "" {
		d, err := time.ParseDuration(c.MaxAge)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("maxAge: %w", err))
		case d < 0 || d > maxAgeLimit:
			errs = append(errs, fmt.Errorf("maxAge: %v is not within 0..%v", d, maxAgeLimit))
		default:
			p.MaxAge = d
		}
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, errors.Join(errs...)
	}
	p.fill()
	return p, nil
}

// New builds a Set from f, reporting every invalid field.
func New(f File) (*Set, error) {
	s := &Set{byName: make(map[string]*Policy, len(f.Namespaces)), refuseUnknown: f.RefuseUnknown}
	var errs []error
	def := PolicyConfig{}
	if f.Default != nil {
		def = *f.Default
	}
	p, err := def.policy("")
	if err != nil {
		errs = append(errs, fmt.Errorf("default: %w", err))
	}
	s.def = p
	if len(f.Namespaces) > maxNamespaces {
		errs = append(errs, fmt.Errorf("namespaces: %d configured, at most %d", len(f.Namespaces), maxNamespaces))
	}
	names := make([]string, 0, len(f.Namespaces))
	for n := range f.Namespaces {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !validName(n) {
			errs = append(errs, fmt.Errorf("namespaces: %q is not a namespace name (1-%d letters, digits, '_', '.', '-', starting with a letter or digit)", n, MaxName))
			continue
		}
		p, err := f.Namespaces[n].policy(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("namespaces.%s: %w", n, err))
			continue
		}
		s.byName[n] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// validName: a channel's leading segment that can be configured (channel
// names start with a letter or digit; ':' ends the namespace; '/' '@' '='
// are allowed in channels but make confusing namespace names).
func validName(n string) bool {
	if n == "" || len(n) > MaxName {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// maxFile bounds the configuration file.
const maxFile = 1 << 20

// Parse reads a File from JSON, refusing unknown fields (a misspelt
// "publish" must not silently leave a namespace open).
func Parse(data []byte) (*Set, error) {
	if len(data) > maxFile {
		return nil, fmt.Errorf("larger than %d bytes", maxFile)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	return New(f)
}

// Load reads and parses the file at path.
func Load(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("namespaces: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("namespaces %s: %w", path, err)
	}
	return s, nil
}
