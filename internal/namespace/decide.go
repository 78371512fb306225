package namespace

import "github.com/heraldrt/herald/internal/auth"

// Action is what a caller wants to do on a channel.
type Action uint8

// The actions a namespace governs (edits have their own rule, AllowEdit).
const (
	Subscribe Action = iota
	History
	Publish
	// ReadPresence: read the presence set, receive joins and leaves.
	ReadPresence
)

// Verdict is a policy decision.
type Verdict uint8

const (
	// Allowed: go ahead.
	Allowed Verdict = iota
	// NeedCredential: refused to an anonymous caller, whom a credential
	// might admit (unauthenticated, 401).
	NeedCredential
	// Denied: refused to this credential (permission_denied, 403).
	Denied
)

func (p *Policy) access(a Action) Access {
	switch a {
	case Subscribe:
		return p.Subscribe
	case History:
		return p.History
	case ReadPresence:
		return p.Presence
	}
	return p.Publish
}

// tokenAllows asks the credential itself.
func tokenAllows(id auth.Identity, a Action, channel string) bool {
	switch a {
	case Subscribe:
		return id.CanSubscribe(channel)
	case History:
		return id.CanReadHistory(channel)
	case ReadPresence:
		return id.CanSubscribe(channel)
	}
	return id.CanPublish(channel)
}

// Allow decides whether id may take action a on channel (of this policy's
// namespace). Admins may always.
func (p *Policy) Allow(id auth.Identity, a Action, channel string) Verdict {
	if id.IsAdmin() {
		return Allowed
	}
	ok := false
	switch p.access(a) {
	case Anonymous:
		ok = true
	case Authenticated:
		ok = id.Kind() != auth.Anonymous
	case Token:
		ok = tokenAllows(id, a, channel)
	case Services:
		ok = id.Kind() == auth.APIKey && tokenAllows(id, a, channel)
	}
	switch {
	case ok:
		return Allowed
	case id.Kind() == auth.Anonymous:
		return NeedCredential
	}
	return Denied
}

// AllowEdit decides whether id may update or delete an event of channel
// whose Author is author; caller is id's own author string (see the
// services' authorOf). Editing needs publish permission first.
func (p *Policy) AllowEdit(id auth.Identity, channel, author, caller string) Verdict {
	if id.IsAdmin() {
		return Allowed
	}
	if v := p.Allow(id, Publish, channel); v != Allowed {
		return v
	}
	switch p.Edit {
	case Publishers:
		return Allowed
	case Author:
		if id.Kind() == auth.APIKey || author != "" && author == caller {
			return Allowed
		}
	case ServicesOnly:
		if id.Kind() == auth.APIKey {
			return Allowed
		}
	}
	if id.Kind() == auth.Anonymous {
		return NeedCredential
	}
	return Denied
}
