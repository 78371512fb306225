package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/coder/websocket"
	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/server"
)

// TestMemoryBoundedForLargeEvents: large events delivered to many
// subscribers, some of which stop reading, keep the heap within the
// documented budget (docs/operations.md, "Memory budget"), and once the
// subscribers leave the heap returns near its baseline: only the hub's
// window of recent entries (bounded in bytes) stays. (Regression: a cache
// of the last 4,096 encodings whatever their size kept hundreds of MB after
// every client had left.)
func TestMemoryBoundedForLargeEvents(t *testing.T) {
	// Not parallel: it reads the process's heap.
	const (
		events    = 120
		eventSize = 512 << 10
		readers   = 16 // 8 WebSocket JSON, 8 SSE
		stalled   = 8  // WebSocket, never read after subscribing
	)
	hub := fanout.Options{WindowBytes: fanout.DefaultWindowBytes, QueueBytes: fanout.DefaultQueueBytes}
	// The default write timeout: a reader starved of CPU (the race
	// detector on a loaded machine) can take over a second to drain a
	// 512 KB event, and must not be dropped for it here.
	gw := gateway.Config{WriteTimeout: gateway.DefaultWriteTimeout, WSWriteBytes: gateway.DefaultWSWriteBytes}
	// On PostgreSQL: the memory log would hold every event in this heap.
	dsn, schema := database(t)
	in := startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}, Hub: hub, Gateway: gw})
	c := grpcClients(in)
	if _, err := c.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{
		Name: "big", Settings: &heraldv1.ChannelSettings{MaxEventSize: ptr(int32(eventlog.MaxEventSize))}})); err != nil {
		t.Fatal(err)
	}
	baseline := heapInUse()

	// Light clients that count events and keep nothing: the heap measured
	// is the server's (client and server are one process).
	counts := make([]atomic.Int64, readers)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var clients sync.WaitGroup
	for i := range readers {
		ready := make(chan struct{})
		clients.Go(func() { countEvents(ctx, t, in.base, i%2 == 1, &counts[i], ready) })
		<-ready
	}
	var stalledConns []*websocket.Conn
	for range stalled {
		ws := dialWS(t, ctx, in.base, gateway.SubprotocolJSON)
		if err := wsWrite(ctx, ws, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
			Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"big"}}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := wsRead(ctx, ws); err != nil { // subscribed; then never read again
			t.Fatal(err)
		}
		stalledConns = append(stalledConns, ws)
	}

	// The heap's peak while publishing and delivering.
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if h := heapInUse(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	data := make([]byte, eventSize)
	caughtUp := func(n int64) func() bool {
		return func() bool {
			for i := range counts {
				if counts[i].Load() < n {
					return false
				}
			}
			return true
		}
	}
	// In bursts of 2 events, each waited for by the readers: an entry of
	// 512 KB counts 2 MB against a subscriber's 8 MB queue bound
	// (wire.Entry.Cost), so a reader starved of CPU on a loaded machine
	// must not fall more than a couple of events behind, or it is ended as
	// a slow consumer (which is right, but not what this test is about).
	// The stalled subscribers still fill their queues.
	for i := range events {
		_, _ = rand.Read(data[:64]) // distinct events, compressible rest
		mustPublish(t, c.events, "big", string(data))
		if (i+1)%2 == 0 {
			for deadline := time.Now().Add(15 * time.Second); !caughtUp(int64(i + 1))(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					got := make([]int64, len(counts))
					for j := range counts {
						got[j] = counts[j].Load()
					}
					t.Fatalf("readers did not receive %d events within 15s: counts %v (odd: SSE)", i+1, got)
				}
			}
		}
	}
	waitFor(t, caughtUp(events))
	close(stop)
	wg.Wait()

	// The budget: the window, and per subscriber its hub queue and (for a
	// WebSocket) its write queue, as docs/operations.md adds them up; the
	// window and queue bounds count each entry at wire.Entry.Cost, an upper
	// bound of what it holds.
	budget := uint64(fanout.DefaultWindowBytes) + uint64(readers+stalled)*uint64(fanout.DefaultQueueBytes+gateway.DefaultWSWriteBytes)
	t.Logf("heap: baseline %d MB, peak %d MB over it (budget %d MB), %d events of %d KB to %d subscribers (%d stalled)",
		baseline>>20, (peak.Load()-baseline)>>20, budget>>20, events, eventSize>>10, readers+stalled, stalled)
	if over := peak.Load() - baseline; over > budget {
		t.Errorf("heap peaked %d MB over its baseline, over the budget of %d MB", over>>20, budget>>20)
	}

	// Everyone leaves: the heap returns to its baseline, plus at most the
	// window of recent entries.
	cancel()
	for _, ws := range stalledConns {
		ws.CloseNow()
	}
	clients.Wait()
	waitFor(t, func() bool {
		subs, conns := in.srv.Hub().Subscribers(), in.srv.App().OpenConnections()
		if subs+conns > 0 && os.Getenv("HERALD_DEBUG_STACKS") != "" {
			buf := make([]byte, 1<<20)
			t.Logf("%d subscriptions, %d connections still open\n%s", subs, conns, buf[:runtime.Stack(buf, true)])
		}
		return subs == 0 && conns == 0
	})
	var after uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		after = heapInUse()
		if after <= baseline+uint64(fanout.DefaultWindowBytes) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("heap after the subscribers left: %d MB over the baseline", (after-min(after, baseline))>>20)
	if after > baseline+uint64(fanout.DefaultWindowBytes) {
		t.Errorf("heap stayed %d MB over its baseline after every subscriber left; want at most the window (%d MB)",
			(after-baseline)>>20, fanout.DefaultWindowBytes>>20)
	}
}

// countEvents subscribes (SSE, or a WebSocket of JSON frames) and counts
// the events it receives, keeping none of them.
func countEvents(ctx context.Context, t *testing.T, base string, sse bool, n *atomic.Int64, ready chan<- struct{}) {
	if sse {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/sse?channel=big", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			close(ready)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		subscribed := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case !subscribed && line == "event: @subscribed":
				subscribed = true
				close(ready)
			case subscribed && strings.HasPrefix(line, "id: "):
				n.Add(1)
			}
		}
		if !subscribed {
			close(ready)
		}
		return
	}
	ws := dialWS(t, ctx, base, gateway.SubprotocolJSON)
	defer ws.CloseNow()
	ws.SetReadLimit(4 << 20)
	if err := wsWrite(ctx, ws, gateway.SubprotocolJSON, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"big"}}}}); err != nil {
		close(ready)
		return
	}
	first := true
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			if first {
				close(ready)
			}
			return
		}
		if first {
			first = false
			close(ready)
			continue
		}
		if bytes.Contains(data[:min(len(data), 64)], []byte(`"event"`)) {
			n.Add(1)
		}
	}
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
