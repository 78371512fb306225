package eventlogtest

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/eventlog"
)

var seqTests = []test{
	{"PerChannel", testSeqPerChannel},
	{"Edits", testSeqEdits},
	{"Concurrent", testSeqConcurrent},
	{"FromSeq", testSeqFromSeq},
	{"FromEverySeq", testSeqFromEverySeq},
	{"ChannelRecreated", testSeqChannelRecreated},
	{"Tags", testTags},
}

// wantGapFree fails unless the entries of each channel in evs (in
// position order) carry seq 1, 2, 3, ... with no gap.
func wantGapFree(t testing.TB, what string, evs []eventlog.Event) map[string]int64 {
	t.Helper()
	last := map[string]int64{}
	var prev int64
	for _, ev := range evs {
		if ev.Position <= prev {
			t.Fatalf("%s: position %d after %d", what, ev.Position, prev)
		}
		prev = ev.Position
		if want := last[ev.Channel] + 1; ev.Seq != want {
			t.Fatalf("%s: %s position %d has seq %d, want %d", what, ev.Channel, ev.Position, ev.Seq, want)
		}
		last[ev.Channel] = ev.Seq
	}
	return last
}

// testSeqPerChannel: within one Append and across calls, every channel
// numbers its events 1, 2, 3, ... in position order; what Append returns is
// what Read, History and Get return; refused and duplicate publishes take
// no number.
func testSeqPerChannel(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	big := make([]byte, eventlog.DefaultMaxEventSize+1)
	res, errs := appendSome(t, l,
		pub("a", "1"), pub("b", "1"), pub("a", "2"),
		eventlog.Publish{Channel: "a", Data: big},  // too large: no seq
		keyed("a", "k", "3"), keyed("a", "k", "3"), // the second is a duplicate
		pub("b", "2"))
	if errs[3] == nil {
		t.Fatalf("too-large publish succeeded")
	}
	want := map[int]int64{0: 1, 1: 1, 2: 2, 4: 3, 5: 3, 6: 2}
	for i, s := range want {
		if errs[i] != nil {
			t.Fatalf("publish %d: %v", i, errs[i])
		}
		if res[i].Event.Seq != s {
			t.Errorf("publish %d (%s): seq %d, want %d", i, res[i].Event.Channel, res[i].Event.Seq, s)
		}
	}
	if !res[5].Duplicate {
		t.Errorf("publish 5 is not a duplicate")
	}
	// A later call, and a retry of the keyed publish in another call.
	more := appendAll(t, l, pub("b", "3"), keyed("a", "k", "3"), pub("a", "4"))
	if more[0].Event.Seq != 3 || more[1].Event.Seq != 3 || !more[1].Duplicate || more[2].Event.Seq != 4 {
		t.Errorf("second call: seqs %d %d(dup %v) %d, want 3 3(dup) 4",
			more[0].Event.Seq, more[1].Event.Seq, more[1].Duplicate, more[2].Event.Seq)
	}
	all := readAll(t, l)
	last := wantGapFree(t, "Read", all)
	if last["a"] != 4 || last["b"] != 3 {
		t.Errorf("last seqs %v, want a:4 b:3", last)
	}
	for _, ev := range all {
		got, err := l.Get(t.Context(), ev.Channel, ev.Position)
		if err != nil {
			t.Fatal(err)
		}
		equalEvent(t, "Get", got, ev)
	}
	page, err := l.History(t.Context(), eventlog.HistoryQuery{Channel: "a"})
	if err != nil {
		t.Fatal(err)
	}
	wantGapFree(t, "History", page.Events)
	equalEvent(t, "Append's event vs Read", res[0].Event, all[0])
}

// testSeqEdits: UPDATED and DELETED entries take the next seq of their
// channel, and carry the tags of their event; the edited event keeps its
// seq.
func testSeqEdits(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	tags := map[string]string{"room": "1"}
	evs := appendNew(t, l, eventlog.Publish{Channel: "e", Data: []byte("x"), Tags: tags}, pub("e", "y"), pub("f", "z"))
	ev, entry, err := l.Update(t.Context(), "e", evs[0].Position, []byte("x2"), eventlog.FormatUnspecified, "")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 1 || entry.Seq != 3 {
		t.Errorf("update: event seq %d, entry seq %d; want 1, 3", ev.Seq, entry.Seq)
	}
	if !maps.Equal(ev.Tags, tags) || !maps.Equal(entry.Tags, tags) {
		t.Errorf("update: event tags %v, entry tags %v; want %v", ev.Tags, entry.Tags, tags)
	}
	del, err := l.Delete(t.Context(), "e", evs[0].Position, "")
	if err != nil {
		t.Fatal(err)
	}
	if del.Seq != 4 || !maps.Equal(del.Tags, tags) {
		t.Errorf("delete: entry seq %d tags %v; want 4 %v", del.Seq, del.Tags, tags)
	}
	next := appendNew(t, l, pub("e", "w"), pub("f", "v"))
	if next[0].Seq != 5 || next[1].Seq != 2 {
		t.Errorf("after edits: seqs %d %d, want 5 2", next[0].Seq, next[1].Seq)
	}
	all := readAll(t, l)
	wantGapFree(t, "Read", all)
	for _, e := range all {
		if e.Position == entry.Position {
			// Erased by the delete since.
			e.Deleted, e.Data = false, entry.Data
			equalEvent(t, "the UPDATED entry as read", e, entry)
		}
		if e.Position == del.Position {
			equalEvent(t, "the DELETED entry as read", e, del)
		}
	}
}

// testSeqConcurrent: 16 publishers append 100 events each, in calls of
// one to three, over 3 channels: every channel is numbered gap-free in
// position order, and each event's seq is the one Append returned.
func testSeqConcurrent(t *testing.T, open Open) {
	const publishers, perPub = 16, 100
	l := open(t, eventlog.Options{AutoCreate: true})
	channels := []string{"s0", "s1", "s2"}
	var (
		mu  sync.Mutex
		got = map[int64]int64{} // position -> seq Append returned
		wg  sync.WaitGroup
	)
	errc := make(chan error, publishers)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perPub; {
				n := min(1+(p+i)%3, perPub-i)
				var ps []eventlog.Publish
				for j := range n {
					ps = append(ps, pub(channels[(p+i+j)%len(channels)], fmt.Sprint(p, i+j)))
				}
				res, errs, err := l.Append(context.Background(), ps)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				for j := range res {
					if errs[j] != nil {
						mu.Unlock()
						errc <- errs[j]
						return
					}
					got[res[j].Event.Position] = res[j].Event.Seq
				}
				mu.Unlock()
				i += n
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	all := readAll(t, l)
	if len(all) != publishers*perPub {
		t.Fatalf("read %d events, want %d", len(all), publishers*perPub)
	}
	last := wantGapFree(t, "Read", all)
	var sum int64
	for _, v := range last {
		sum += v
	}
	if sum != publishers*perPub {
		t.Errorf("last seqs %v sum to %d, want %d", last, sum, publishers*perPub)
	}
	for _, ev := range all {
		if got[ev.Position] != ev.Seq {
			t.Fatalf("position %d: Append returned seq %d, Read has %d", ev.Position, got[ev.Position], ev.Seq)
		}
	}
}

// testSeqFromSeq: History with FromSeq starts at that seq and pages on by
// cursor; past the last seq it is empty; retention leaves a FromSeq that
// points before the oldest entry starting at the oldest.
func testSeqFromSeq(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	for i := range 25 {
		appendNew(t, l, pub("h", fmt.Sprint(i)), pub("other", fmt.Sprint(i)))
	}
	ctx := t.Context()
	var seqs []int64
	q := eventlog.HistoryQuery{Channel: "h", FromSeq: 7, Limit: 5}
	for {
		page, err := l.History(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			seqs = append(seqs, ev.Seq)
		}
		if !page.HasMore {
			break
		}
		q = eventlog.HistoryQuery{Channel: "h", Cursor: page.Events[len(page.Events)-1].Position, Limit: 5}
	}
	if len(seqs) != 19 || seqs[0] != 7 || seqs[18] != 25 {
		t.Errorf("from seq 7: %v, want 7..25", seqs)
	}
	page, err := l.History(ctx, eventlog.HistoryQuery{Channel: "h", FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	wantGapFree(t, "from seq 1", page.Events)
	page, err = l.History(ctx, eventlog.HistoryQuery{Channel: "h", FromSeq: 26})
	if err != nil || len(page.Events) != 0 {
		t.Errorf("from seq 26: %d events, %v; want none", len(page.Events), err)
	}
	ten := int64(10)
	if _, err := l.UpdateChannel(ctx, "h", eventlog.SettingsPatch{MaxEvents: &ten}); err != nil {
		t.Fatal(err)
	}
	trim(t, l, time.Now())
	page, err = l.History(ctx, eventlog.HistoryQuery{Channel: "h", FromSeq: 3, Limit: 1})
	if err != nil || len(page.Events) != 1 || page.Events[0].Seq != 16 {
		t.Errorf("from seq 3 after trimming to 10: %v, %v; want seq 16", page.Events, err)
	}
}

// testSeqFromEverySeq: History from every seq of a channel longer than the
// PostgreSQL log's sparse seq index step (64, 0009_seq_cache.sql), with
// other channels' entries interleaved, starts exactly there; and so it does
// after retention removed the entries that index would start from.
func testSeqFromEverySeq(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	const n = 200
	for i := 0; i < n; i += 10 {
		var ps []eventlog.Publish
		for j := range 10 {
			ps = append(ps, pub("long", fmt.Sprint(i+j)), pub(fmt.Sprint("other", j%3), "x"))
		}
		appendNew(t, l, ps...)
	}
	ctx := t.Context()
	from := func(seq, want int64) {
		t.Helper()
		page, err := l.History(ctx, eventlog.HistoryQuery{Channel: "long", FromSeq: seq, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if want > n {
			if len(page.Events) != 0 {
				t.Fatalf("from seq %d: %d events, want none", seq, len(page.Events))
			}
			return
		}
		if len(page.Events) == 0 || page.Events[0].Seq != want || page.Events[0].Channel != "long" {
			t.Fatalf("from seq %d: %v, want seq %d first", seq, page.Events, want)
		}
	}
	for seq := int64(1); seq <= n+1; seq++ {
		from(seq, seq)
	}
	keep := int64(100) // seqs 101..200 stay: the index's 65 and 1 are gone
	if _, err := l.UpdateChannel(ctx, "long", eventlog.SettingsPatch{MaxEvents: &keep}); err != nil {
		t.Fatal(err)
	}
	trim(t, l, time.Now())
	for seq := int64(1); seq <= n+1; seq++ {
		from(seq, max(seq, n-keep+1))
	}
}

// testSeqChannelRecreated: a deleted channel created again, and a channel
// retention emptied, go on counting where they stopped.
func testSeqChannelRecreated(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	appendNew(t, l, pub("r", "1"), pub("r", "2"))
	if err := l.DeleteChannel(t.Context(), "r"); err != nil {
		t.Fatal(err)
	}
	evs := appendNew(t, l, pub("r", "3"))
	if evs[0].Seq != 3 {
		t.Errorf("first event after re-creation: seq %d, want 3", evs[0].Seq)
	}
	// Retention removing every entry of a channel does not restart it.
	second := time.Second
	if _, err := l.UpdateChannel(t.Context(), "r", eventlog.SettingsPatch{MaxAge: &second}); err != nil {
		t.Fatal(err)
	}
	if n := trim(t, l, time.Now().Add(time.Hour)); n != 1 {
		t.Fatalf("trim removed %d entries, want 1", n)
	}
	if evs := appendNew(t, l, pub("r", "4"), pub("r", "5")); evs[0].Seq != 4 || evs[1].Seq != 5 {
		t.Errorf("after trimming the channel to nothing: seqs %d %d, want 4 5", evs[0].Seq, evs[1].Seq)
	}
}

// testTags: tags round-trip through Append, Read, History and Get; none
// reads as nil; a duplicate returns the first event's tags.
func testTags(t *testing.T, open Open) {
	l := open(t, eventlog.Options{AutoCreate: true})
	tags := map[string]string{"room": "42", "lang": "en"}
	res := appendAll(t, l,
		eventlog.Publish{Channel: "t", Data: []byte("a"), Tags: tags},
		eventlog.Publish{Channel: "t", Data: []byte("b"), Tags: map[string]string{}},
		eventlog.Publish{Channel: "t", Data: []byte("c"), Tags: tags, IdempotencyKey: "k"})
	dup := appendAll(t, l, eventlog.Publish{Channel: "t", Data: []byte("c"), Tags: map[string]string{"x": "y"}, IdempotencyKey: "k"})
	if !dup[0].Duplicate || !maps.Equal(dup[0].Event.Tags, tags) {
		t.Errorf("duplicate: %v tags %v, want a duplicate with %v", dup[0].Duplicate, dup[0].Event.Tags, tags)
	}
	if !maps.Equal(res[0].Event.Tags, tags) || res[1].Event.Tags != nil {
		t.Errorf("Append returned tags %v and %v, want %v and nil", res[0].Event.Tags, res[1].Event.Tags, tags)
	}
	all := readAll(t, l)
	for i := range all {
		equalEvent(t, fmt.Sprint("Read ", i), all[i], res[i].Event)
	}
}
