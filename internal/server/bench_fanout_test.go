package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/server"
)

// BenchmarkFanoutMixed measures what one published event costs when it is
// delivered to subscribers of every stream transport at once: subs
// subscribers of one channel, split evenly over gRPC (grpc-go Subscribe
// streams), WebSocket JSON, WebSocket protobuf and SSE. It talks to the
// server only over the wire, so it runs unchanged against any version.
//
// One op is one event delivered to every subscriber. Events are appended
// straight to the log in batches of 50, and the next batch waits until
// every subscriber has the previous one (closed loop: no queue overflows,
// nothing is dropped; every subscriber must receive exactly b.N events).
// Reported per delivery (op ÷ subs): wall time, process CPU (user+sys, from
// getrusage: server and clients are one process, and the clients do the same
// work in every version) and heap allocations; and the size of an event in
// the JSON encodings (WebSocket text frame, SSE data line). The payload is a
// ~100-byte JSON document published with the JSON data format.
//
//	go test -c -o /tmp/server.test ./internal/server
//	/tmp/server.test -test.run '^$' -test.bench BenchmarkFanoutMixed -test.benchtime 2000x -test.count 5
func BenchmarkFanoutMixed(b *testing.B) {
	for _, subs := range []int{1000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) { benchFanoutMixed(b, subs) })
	}
}

type mixedSub struct {
	got   atomic.Int64
	bytes atomic.Int64 // of the JSON event frames (WebSocket JSON and SSE)
	err   atomic.Pointer[error]
}

func (s *mixedSub) fail(err error) { s.err.CompareAndSwap(nil, &err) }

func benchFanoutMixed(b *testing.B, subs int) {
	srv, addr := benchInstance(b, server.Config{})
	base := "http://" + addr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const channel = "mixed"
	// The channel must exist before the subscribers' cursors are taken.
	if _, errs, err := srv.Log().Append(ctx, []eventlog.Publish{{Channel: channel, Type: "warmup", Data: []byte(`{}`)}}); err != nil || errs[0] != nil {
		b.Fatal(err, errs)
	}

	all := make([]*mixedSub, subs)
	var wg sync.WaitGroup
	ready := make(chan struct{}, subs)
	grpcConns := make([]heraldv1.EventServiceClient, 4)
	for i := range grpcConns {
		grpcConns[i] = heraldv1.NewEventServiceClient(grpcConn(b, addr))
	}
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: subs}}
	for i := range all {
		s := &mixedSub{}
		all[i] = s
		wg.Add(1)
		switch i % 4 {
		case 0:
			go func() {
				defer wg.Done()
				st, err := grpcConns[i%len(grpcConns)].Subscribe(ctx, &heraldv1.SubscribeRequest{Channels: []string{channel}})
				if err != nil {
					s.fail(err)
					ready <- struct{}{}
					return
				}
				if _, err := st.Recv(); err != nil { // Subscribed
					s.fail(err)
				}
				ready <- struct{}{}
				for {
					m, err := st.Recv()
					if err != nil {
						if ctx.Err() == nil {
							s.fail(err)
						}
						return
					}
					if m.GetEvent() != nil {
						s.got.Add(1)
					}
				}
			}()
		case 1, 2:
			sp := "herald.v1.json"
			if i%4 == 2 {
				sp = "herald.v1.proto"
			}
			go func() {
				defer wg.Done()
				c, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/ws", &websocket.DialOptions{Subprotocols: []string{sp}})
				if err != nil {
					s.fail(err)
					ready <- struct{}{}
					return
				}
				defer c.CloseNow()
				c.SetReadLimit(1 << 20)
				cmd := `{"id":"s","subscribe":{"channels":["` + channel + `"]}}`
				typ := websocket.MessageText
				if sp == "herald.v1.proto" {
					b, _ := proto.Marshal(&heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{channel}}}})
					cmd, typ = string(b), websocket.MessageBinary
				}
				if err := c.Write(ctx, typ, []byte(cmd)); err != nil {
					s.fail(err)
					ready <- struct{}{}
					return
				}
				if _, _, err := c.Read(ctx); err != nil { // subscribed
					s.fail(err)
				}
				ready <- struct{}{}
				for {
					_, data, err := c.Read(ctx)
					if err != nil {
						if ctx.Err() == nil {
							s.fail(err)
						}
						return
					}
					// Count events only: both encodings carry the word "event"
					// (the JSON key, or the field name nowhere in binary, where
					// field 3 is the event): frames other than events are rare.
					if sp == "herald.v1.proto" {
						s.got.Add(1)
					} else if bytes.Contains(data, []byte(`"event"`)) {
						s.got.Add(1)
						s.bytes.Add(int64(len(data)))
					}
				}
			}()
		case 3:
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/sse?channel="+channel, nil)
				resp, err := hc.Do(req)
				if err != nil {
					s.fail(err)
					ready <- struct{}{}
					return
				}
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(make([]byte, 64<<10), 1<<20)
				subscribed := false
				for sc.Scan() {
					line := sc.Text()
					if !subscribed {
						if line == "event: @subscribed" {
							subscribed = true
							ready <- struct{}{}
						}
						continue
					}
					if strings.HasPrefix(line, "id: ") {
						s.got.Add(1)
					}
					if strings.HasPrefix(line, "data: ") {
						s.bytes.Add(int64(len(line) - len("data: ")))
					}
				}
				if !subscribed {
					ready <- struct{}{}
				}
				if ctx.Err() == nil {
					s.fail(errors.Join(errors.New("SSE stream ended"), sc.Err()))
				}
			}()
		}
	}
	for range subs {
		<-ready
	}
	for i, s := range all {
		if p := s.err.Load(); p != nil {
			b.Fatalf("subscriber %d (transport %d): %v", i, i%4, *p)
		}
	}

	data := []byte(`{"text":"a chat message of about a hundred bytes, as a typical realtime payload would be","n":1}`)
	const batch = 50
	waitAll := func(want int64) {
		deadline := time.Now().Add(time.Minute)
		for _, s := range all {
			for s.got.Load() < want {
				if p := s.err.Load(); p != nil {
					b.Fatalf("subscriber failed: %v", *p)
				}
				if time.Now().After(deadline) {
					b.Fatalf("a subscriber has %d of %d events after a minute", s.got.Load(), want)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := processCPU()
	b.ResetTimer()
	for n := 0; n < b.N; n += batch {
		ps := make([]eventlog.Publish, min(batch, b.N-n))
		for i := range ps {
			ps[i] = eventlog.Publish{Channel: channel, Type: "chat", Data: data, Format: eventlog.FormatJSON}
		}
		if _, errs, err := srv.Log().Append(ctx, ps); err != nil || errors.Join(errs...) != nil {
			b.Fatal(err, errs)
		}
		waitAll(int64(n + len(ps)))
	}
	b.StopTimer()
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&ms1)
	deliveries := float64(b.N) * float64(subs)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/deliveries, "B/delivery")
	var jsonBytes, jsonFrames int64
	for i, s := range all {
		if i%4 == 1 || i%4 == 3 {
			jsonBytes += s.bytes.Load()
			jsonFrames += s.got.Load()
		}
	}
	if jsonFrames > 0 {
		b.ReportMetric(float64(jsonBytes)/float64(jsonFrames), "json-bytes/event")
	}
	time.Sleep(50 * time.Millisecond) // let stragglers show duplicates
	for i, s := range all {
		if got := s.got.Load(); got != int64(b.N) {
			b.Fatalf("subscriber %d (transport %d) got %d events, want exactly %d", i, i%4, got, b.N)
		}
	}
	cancel()
	wg.Wait()
}

// processCPU is the user+system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
