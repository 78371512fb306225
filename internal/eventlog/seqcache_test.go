package eventlog

import (
	"fmt"
	"testing"
)

// TestSeqCacheBounded: what the writer remembers of channels' seqs stays
// within seqCacheMaxBytes, counting the names, and a failed check forgets
// it all.
func TestSeqCacheBounded(t *testing.T) {
	var c seqCache
	name := fmt.Sprintf("%0128d", 0) // the longest channel name
	const batch = 64
	res := make([]Published, batch)
	errs := make([]error, batch)
	for b := range 2000 {
		for i := range res {
			res[i] = Published{Event: Event{Channel: fmt.Sprintf("%s-%d-%d", name[:120], b, i), Seq: 1}}
		}
		c.learn(true, res, errs, int64(b+1))
		if limit := seqCacheMaxBytes + batch*(len(res[0].Event.Channel)+seqCacheEntryBytes); c.bytes > limit {
			t.Fatalf("batch %d: %d bytes remembered, over %d", b, c.bytes, limit)
		}
		if c.bytes < len(c.last)*(120+seqCacheEntryBytes) {
			t.Fatalf("batch %d: %d bytes counted for %d channels", b, c.bytes, len(c.last))
		}
	}
	if c.lastID != 2000 {
		t.Fatalf("lastID %d, want 2000", c.lastID)
	}
	c.learn(false, res[:1], errs[:1], 2001)
	if len(c.last) != 1 || c.lastID != 2001 {
		t.Fatalf("after a failed check: %d channels, lastID %d; want only this batch's", len(c.last), c.lastID)
	}
}
