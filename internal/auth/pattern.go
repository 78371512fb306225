package auth

import (
	"errors"
	"fmt"
	"strings"
)

const (
	// MaxChannelLen is the longest valid channel name, in bytes.
	MaxChannelLen = 128
	// MaxPatternLen is the longest pattern ParsePattern accepts, in bytes.
	MaxPatternLen = 256

	placeholderSub = "{sub}"
)

// ErrInvalidPattern is wrapped by every error ParsePattern returns.
var ErrInvalidPattern = errors.New("invalid channel pattern")

// ValidChannel reports whether name is a valid channel name: 1 to 128
// characters from [A-Za-z0-9_.:@/=-], starting with a letter or digit.
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen || !isAlnum(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if name[i] != ':' && !isSegmentChar(name[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isSegmentChar reports whether c may appear in a channel segment: every
// channel character except ':'. It excludes '*', '>', '{', '}' and '?', which
// is what makes a substituted literal unable to act as a wildcard.
func isSegmentChar(c byte) bool {
	switch c {
	case '_', '.', '@', '/', '=', '-':
		return true
	}
	return isAlnum(c)
}

// validSubject reports whether s can replace a placeholder as a literal.
func validSubject(s string) bool {
	if len(s) == 0 || len(s) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isSegmentChar(s[i]) {
			return false
		}
	}
	return true
}

// A Pattern selects channel names; see the package documentation for the
// syntax and semantics. The zero Pattern matches nothing. Patterns are
// immutable and safe for concurrent use.
type Pattern struct {
	src   []string // segments in source syntax, without a final '>'
	glob  []string // the same with each '*' compiled to "?*" ('?' = any one byte)
	tail  bool     // last segment is '>'
	valid bool     // false for the zero Pattern and failed expansions
	subs  bool     // contains unexpanded placeholders
}

// ParsePattern parses and validates a channel pattern. Errors wrap
// ErrInvalidPattern and say what is wrong and where.
func ParsePattern(s string) (Pattern, error) {
	fail := func(format string, args ...any) (Pattern, error) {
		return Pattern{}, fmt.Errorf("%w %q: %s", ErrInvalidPattern, truncate(s), fmt.Sprintf(format, args...))
	}
	if s == "" {
		return fail("empty")
	}
	if len(s) > MaxPatternLen {
		return fail("longer than %d characters", MaxPatternLen)
	}
	p := Pattern{valid: true}
	raw := strings.Split(s, ":")
	for i, seg := range raw {
		if seg == "" {
			return fail("segment %d is empty", i+1)
		}
		if seg == ">" {
			if i != len(raw)-1 {
				return fail("'>' is only allowed as the last segment")
			}
			p.tail = true
			break
		}
		for j := 0; j < len(seg); {
			switch c := seg[j]; {
			case c == '*':
				if j > 0 && seg[j-1] == '*' {
					return fail("'**' in segment %d: '*' matches within one segment; end the pattern with ':>' to match any depth", i+1)
				}
				j++
			case c == '{':
				if !strings.HasPrefix(seg[j:], placeholderSub) {
					return fail("unknown placeholder in segment %d: only {sub} is supported", i+1)
				}
				p.subs = true
				j += len(placeholderSub)
			case c == '>':
				return fail("'>' must be the whole last segment")
			case isSegmentChar(c):
				j++
			default:
				return fail("character %q in segment %d is not allowed", c, i+1)
			}
		}
		if i == 0 && isSegmentChar(seg[0]) && !isAlnum(seg[0]) {
			return fail("channel names start with a letter or digit")
		}
		p.src = append(p.src, seg)
		p.glob = append(p.glob, strings.ReplaceAll(seg, "*", "?*"))
	}
	return p, nil
}

func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// String returns the pattern in its source syntax. The zero Pattern and a
// failed expansion render as "!invalid", which does not parse.
func (p Pattern) String() string {
	if !p.valid {
		return "!invalid"
	}
	s := strings.Join(p.src, ":")
	if p.tail {
		if s != "" {
			s += ":"
		}
		s += ">"
	}
	return s
}

// HasPlaceholders reports whether p contains placeholders that still need
// Expand before p can match anything.
func (p Pattern) HasPlaceholders() bool { return p.subs }

// Expand returns p with every "{sub}" replaced by the literal sub. If p has
// placeholders and sub is not 1 to 128 characters from [A-Za-z0-9_.@/=-], the
// result matches nothing: a subject such as "*", ">" or "a:b" never widens
// access. Patterns without placeholders are returned unchanged.
func (p Pattern) Expand(sub string) Pattern {
	if !p.subs || !p.valid {
		return p
	}
	if !validSubject(sub) {
		return Pattern{}
	}
	q := Pattern{tail: p.tail, valid: true, src: make([]string, len(p.src)), glob: make([]string, len(p.glob))}
	for i := range p.src {
		// sub holds no '*', '?', '{' or ':', so it can only ever be a literal.
		q.src[i] = strings.ReplaceAll(p.src[i], placeholderSub, sub)
		q.glob[i] = strings.ReplaceAll(p.glob[i], placeholderSub, sub)
	}
	return q
}

// Channel returns the single channel name p matches, if p contains no
// wildcards or placeholders and names a valid channel.
func (p Pattern) Channel() (string, bool) {
	if !p.valid || p.subs || p.tail {
		return "", false
	}
	for _, seg := range p.src {
		if strings.IndexByte(seg, '*') >= 0 {
			return "", false
		}
	}
	s := p.String()
	return s, ValidChannel(s)
}

// Match reports whether channel is a valid channel name selected by p.
func (p Pattern) Match(channel string) bool {
	if !p.valid || p.subs || !ValidChannel(channel) {
		return false
	}
	rest := channel
	for i, glob := range p.glob {
		seg, after, found := strings.Cut(rest, ":")
		if !globMatch(glob, seg) {
			return false
		}
		last := i == len(p.glob)-1
		switch {
		case !found && (!last || p.tail):
			return false // channel has fewer segments than p needs
		case found && last && !p.tail:
			return false // channel has more segments than p
		}
		rest = after
	}
	if p.tail {
		return rest != "" // '>' needs at least one character
	}
	return true
}

// globMatch matches s against a compiled segment glob in which '?' matches
// any one byte and '*' any run of bytes. It backtracks only to the most
// recent star, which is correct for these two wildcards and keeps the cost
// at O(len(glob)*len(s)) in the worst case.
func globMatch(glob, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := 0, 0
	for px < len(glob) || sx < len(s) {
		if px < len(glob) {
			switch c := glob[px]; c {
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			case '*':
				nextPx, nextSx = px, sx+1
				px++
				continue
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if 0 < nextSx && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}
