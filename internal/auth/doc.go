// Package auth owns identity: who a connection is and which channels it may
// subscribe to, publish to and read history from. It turns the raw credential
// a transport receives (an "Authorization: Bearer …" header, or a bare token
// from a query parameter or cookie) into an [Identity], and knows nothing about
// transports, namespaces or limits; those layers call it.
//
// Two kinds of credential are accepted by an [Authenticator]:
//
//   - API keys for internal services: "hk_" followed by the unpadded base64url
//     encoding of 32 random bytes (see [GenerateKey]). Only their SHA-256
//     hashes are configured ([KeyConfig], [NewKeys]).
//   - JWTs for browsers and end users, signed with HS256, RS256 or ES256
//     ([JWTConfig], [NewVerifier]). Keys come from a shared secret, PEM public
//     keys ([ParsePublicKeyPEM]), a JWKS document ([ParseJWKS], [ReadJWKS]) or
//     a key set that is reloaded from a file or URL while running ([JWKS]).
//
// A missing credential yields the zero [Identity] (anonymous, allowed nothing)
// together with an error wrapping [ErrMissingCredential]; whether anonymous
// access is acceptable for a channel is the namespace layer's decision.
//
// # Channel names
//
// A channel name is 1 to 128 characters from [A-Za-z0-9_.:@/=-] and starts
// with a letter or digit ([ValidChannel]). A ':' separates segments.
//
// # Channel patterns
//
// A [Pattern] is a ':'-separated list of non-empty segments, at most 256
// characters long. Each segment is built from:
//
//   - literal characters from [A-Za-z0-9_.@/=-] (every channel character
//     except ':'), matched exactly and case-sensitively;
//   - '*', which matches one or more characters within one segment, never a
//     ':'. It may stand alone ("chat:*") or share a segment with literals
//     ("room-*", "*.log"). Two adjacent stars are rejected as ambiguous;
//   - "{sub}", a placeholder for the identity's subject (see below).
//
// The last segment may instead be '>', which matches one or more characters
// of any kind, ':' included: the rest of the name, at any depth. So
//
//	chat:room-1   matches only "chat:room-1"
//	chat:*        matches "chat:room-1", not "chat:a:b" and not "chat"
//	chat:>        matches "chat:room-1" and "chat:a:b", not "chat"
//	>             matches every valid channel
//	user:{sub}    expanded for subject "alice", matches only "user:alice"
//
// A pattern only ever matches valid channel names.
//
// # Placeholders
//
// [Pattern.Expand] replaces "{sub}" with the subject as a literal. A subject
// that is not 1 to 128 segment characters (for instance "*", "a:b", ">" or
// "") cannot be substituted safely; the expansion then matches nothing, so a
// crafted subject can never widen access. A pattern whose placeholders were
// not expanded also matches nothing.
//
// # Permissions
//
// An [Identity] carries scopes (publish, subscribe, history, admin) and
// channel patterns. The admin scope allows every action on every channel.
// Otherwise an action needs its scope and a matching pattern; history is
// readable wherever the identity may subscribe. API keys without configured
// patterns apply their scopes to every channel. A JWT without a "scopes"
// claim has the publish, subscribe and history scopes, limited by its
// "publish" and "subscribe" patterns; the channels in its "channels" claim
// are subscribable as well. Unknown scopes in a token are ignored (they may
// be meant for other services); "admin" in a token is refused unless
// JWTConfig.AllowAdmin is set. A "channels" item must expand to exactly one
// valid channel, otherwise the whole token is refused.
//
// # Concurrency and key reload
//
// Everything in this package is safe for concurrent use once constructed.
// Nothing here starts goroutines; I/O happens only in [ReadJWKS],
// [OpenJWKS], [LoadConfig] and the reload loop of a [JWKS].
//
// A [JWKS] owns one key set. [OpenJWKS] loads it once (failing if it
// cannot, so misconfiguration is loud); [JWKS.Run], started by the caller
// (the server does so through [Authenticator.Run]), reloads it every
// refresh interval and when a Verifier met an unknown "kid" (at most once
// per 30s), and returns when its context ends. Run is the only writer: it
// swaps in each good set through an atomic pointer, and verification reads
// that pointer without locks and never waits for a fetch. A failed reload
// keeps the previous set.
//
// # Cache of verified tokens
//
// A [Verifier] remembers the tokens it accepted (see JWTConfig.CacheSize),
// keyed by the whole token string, with the immutable [Identity] it
// returned, the token's exp, nbf and iat, and the key set current when it
// was verified. A token seen again is accepted from the cache only while
// that key set is still current and its time claims hold at Now with the
// configured leeway, the same comparisons the first verification made;
// otherwise it is verified in full, so a refused token gets the error a
// new one would. Refused tokens are never remembered. The cache is bounded
// in entries (default 10,000) and in bytes per entry (tokens of at most
// 4 KiB, entries of at most 8 KiB), so in memory too (at most about
// CacheSize × 8.5 KB). One mutex guards it, held for one map operation and
// never while verifying; it is the package's only lock.
package auth
