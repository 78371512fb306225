package fanout

import (
	"strings"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
)

// Filter selects the entries a subscription delivers. An entry matches
// when its type matches one of Types (any type when Types is empty) and it
// carries every tag of Tags with the same value. A type is exact
// ("chat.message") or a prefix written with a final ".*" ("chat.*" matches
// "chat.message", not "chat"); "message" also matches the empty type.
// Updated and Deleted entries carry the type and tags of their event, so
// the edits of a matching event match too. A Filter is not modified once
// a subscription holds it.
type Filter struct {
	Types []string
	Tags  map[string]string
}

// Match reports whether ev passes the filter; a nil filter passes all.
func (f *Filter) Match(ev *eventlog.Event) bool {
	if f == nil {
		return true
	}
	if len(f.Types) > 0 && !f.matchType(ev.Type) {
		return false
	}
	for k, v := range f.Tags {
		if got, ok := ev.Tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (f *Filter) matchType(t string) bool {
	if t == "" {
		t = "message"
	}
	for _, want := range f.Types {
		if prefix, ok := strings.CutSuffix(want, "*"); ok {
			if len(t) > len(prefix) && strings.HasPrefix(t, prefix) {
				return true
			}
		} else if t == want {
			return true
		}
	}
	return false
}

// Checkpoints of a filtered subscription: Next returns a Checkpoint after
// CheckpointEvery entries in a row were dropped, or CheckpointAfter after
// the first of a run of dropped entries when no entry was delivered since,
// so that a client resuming after a long run of dropped entries starts near
// the head instead of reading them all again.
const (
	CheckpointEvery = 100
	CheckpointAfter = time.Second
)
