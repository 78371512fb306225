package ephemeral_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/ephemeral"
	"github.com/heraldrt/herald/internal/pgtest"
)

// recorder collects delivered messages.
type recorder struct {
	mu  sync.Mutex
	got []ephemeral.Message
}

func (r *recorder) deliver(m ephemeral.Message) {
	r.mu.Lock()
	r.got = append(r.got, m)
	r.mu.Unlock()
}

func (r *recorder) kinds(k ephemeral.Kind) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.got {
		if m.Kind == k {
			out = append(out, m.Member.ClientID+m.Type)
		}
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPostgres: two instances on one schema. Signals and joins reach both
// listeners; paging; a leave is announced once even when two instances
// remove the same member; a dead instance's members are reaped once, by
// whichever of three concurrent reapers gets there, each with its leave.
func TestPostgres(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var recs [2]recorder
	var insts [2]*ephemeral.Postgres
	for i := range insts {
		p, err := ephemeral.NewPostgres(pool, ephemeral.PostgresOptions{NotifyChannel: schema + ephemeral.ChannelSuffix, Instance: fmt.Sprint("i", i)}, recs[i].deliver)
		if err != nil {
			t.Fatal(err)
		}
		insts[i] = p
		wg.Go(func() { _ = p.Run(ctx) })
	}
	waitFor(t, func() bool { return insts[0].Listening() && insts[1].Listening() })
	// Only instance i0 heartbeats: i1 is dead from the start.
	if _, err := pool.Exec(ctx, `INSERT INTO herald_instances (id, hostname, addr, started_at, heartbeat_at) VALUES ('i0', 'h', 'a', now(), now())`); err != nil {
		t.Fatal(err)
	}

	if err := insts[0].Send(ctx, ephemeral.Message{Kind: ephemeral.Signal, Channel: "c", Type: "typing"}); err != nil {
		t.Fatal(err)
	}
	if err := insts[0].Send(ctx, ephemeral.Message{Kind: ephemeral.Signal, Channel: "c", Data: make([]byte, 6000)}); err == nil {
		t.Fatal("a signal larger than a notification was sent")
	}
	for i := range 5 {
		in := insts[i%2]
		if err := in.Join(ctx, "c", ephemeral.Member{ClientID: fmt.Sprint("m", i), User: "u", JoinMicros: time.Now().UnixMicro()}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"m0", "m1", "m2", "m3", "m4"}
	for i := range recs {
		waitFor(t, func() bool {
			return slices.Equal(recs[i].kinds(ephemeral.Join), want) && len(recs[i].kinds(ephemeral.Signal)) == 1
		})
	}
	var paged []string
	after := ""
	for {
		pg, err := insts[1].Members(ctx, "c", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if pg.Count != 5 {
			t.Fatalf("count %d", pg.Count)
		}
		for _, m := range pg.Members {
			paged = append(paged, m.ClientID)
		}
		if !pg.More {
			break
		}
		after = pg.Members[len(pg.Members)-1].ClientID
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("paged %v", paged)
	}

	// m0 leaves twice, from both instances: one leave.
	for _, in := range insts {
		if err := in.Leave(ctx, "c", "m0"); err != nil {
			t.Fatal(err)
		}
	}
	// i1 is dead: three concurrent reapers remove m1 and m3, once each.
	// (Rows younger than the stale age are kept: reap with a tiny age.)
	time.Sleep(10 * time.Millisecond)
	var reaped [3]int64
	var rg sync.WaitGroup
	for i := range reaped {
		rg.Go(func() {
			n, err := insts[i%2].Reap(ctx, 5*time.Millisecond)
			if err != nil {
				t.Error(err)
			}
			reaped[i] = n
		})
	}
	rg.Wait()
	// i0's heartbeat is older than 5ms too by now: its members m2 and m4
	// may have been reaped as well. With a fresh heartbeat and a long age,
	// nothing more is.
	if _, err := pool.Exec(ctx, `UPDATE herald_instances SET heartbeat_at = now()`); err != nil {
		t.Fatal(err)
	}
	n, err := insts[0].Reap(ctx, time.Minute)
	if err != nil || n != 0 {
		t.Fatalf("reap of live instances removed %d: %v", n, err)
	}
	total := reaped[0] + reaped[1] + reaped[2]
	if total < 2 {
		t.Fatalf("reapers removed %v members, want at least the dead instance's 2", reaped)
	}
	pg, err := insts[0].Members(ctx, "c", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		waitFor(t, func() bool { return len(recs[i].kinds(ephemeral.Leave)) == 1+int(total) })
		leaves := recs[i].kinds(ephemeral.Leave)
		if len(slices.Compact(slices.Clone(leaves))) != len(leaves) {
			t.Fatalf("a member left twice: %v", leaves)
		}
		for _, m := range pg.Members {
			if slices.Contains(leaves, m.ClientID) {
				t.Fatalf("%s left but is still a member", m.ClientID)
			}
		}
	}
	if int(pg.Count)+len(recs[0].kinds(ephemeral.Leave)) != 5 {
		t.Fatalf("members %d + leaves %d != joins 5", pg.Count, len(recs[0].kinds(ephemeral.Leave)))
	}
}

// TestMemory: the same contract in process.
func TestMemory(t *testing.T) {
	t.Parallel()
	var rec recorder
	m := ephemeral.NewMemory(rec.deliver)
	ctx := t.Context()
	for i := range 3 {
		if err := m.Join(ctx, "c", ephemeral.Member{ClientID: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_ = m.Leave(ctx, "c", "m1")
	_ = m.Leave(ctx, "c", "m1")
	if err := m.Send(ctx, ephemeral.Message{Kind: ephemeral.Signal, Channel: "c", Data: make([]byte, 6000)}); err == nil {
		t.Fatal("a signal larger than a notification was sent")
	}
	pg, _ := m.Members(ctx, "c", "m0", 1)
	if pg.Count != 2 || len(pg.Members) != 1 || pg.Members[0].ClientID != "m2" || pg.More {
		t.Fatalf("page %+v", pg)
	}
	if got := rec.kinds(ephemeral.Leave); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("leaves %v", got)
	}
}
