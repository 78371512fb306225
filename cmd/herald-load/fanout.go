package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
)

// eventType is the type of every event the tool publishes.
const eventType = "herald-load"

// fanoutReport is the outcome of one fan-out run; its JSON form is the
// -json output.
type fanoutReport struct {
	Mode       string           `json:"mode"` // "fanout"
	Addr       string           `json:"addr"`
	Channel    string           `json:"channel"`
	WSCodec    string           `json:"ws_codec"`
	Rate       float64          `json:"rate"`
	Duration   float64          `json:"duration_s"`
	Size       int              `json:"size"`
	Connect    connectStats     `json:"connect"`
	Publish    publishStats     `json:"publish"`
	Delivered  deliveredStats   `json:"delivered"`
	Transports []transportStats `json:"transports"`
	Loss       Loss             `json:"loss"`
	Server     *serverStats     `json:"server,omitempty"`
	ToolCPU    float64          `json:"tool_cpu_cores"` // this process, while publishing and draining
}

type connectStats struct {
	Attempted  int      `json:"attempted"`
	Subscribed int      `json:"subscribed"`
	Failed     int      `json:"failed"`
	Ended      int      `json:"ended_during_run"` // subscribed, then ended before the tool closed them
	Seconds    float64  `json:"seconds"`          // first dial to last subscribed
	Errors     []string `json:"errors,omitempty"` // first distinct messages
}

type publishStats struct {
	Sent     int     `json:"sent"`
	Acked    int     `json:"acked"`
	Errors   int     `json:"errors"`
	Late     int     `json:"late"` // sent more than 10 ms after its slot: the publishers fell behind
	PerSec   float64 `json:"per_second"`
	Ack      Latency `json:"ack_latency"`
	FirstPos int64   `json:"first_position"`
	LastPos  int64   `json:"last_position"`
}

type deliveredStats struct {
	Events       int64   `json:"events"`
	Seconds      float64 `json:"seconds"` // first publish to last receipt
	PerSec       float64 `json:"per_second"`
	DrainTimeout bool    `json:"drain_timed_out"`
}

type transportStats struct {
	Name           string  `json:"name"`
	Subscribers    int     `json:"subscribers"`
	Events         int64   `json:"events"`
	Latency        Latency `json:"latency"`
	Loss           Loss    `json:"loss"`
	ProtocolErrors int64   `json:"protocol_errors"`
}

type serverStats struct {
	PID             int     `json:"pid"`
	CPU             float64 `json:"cpu_cores"` // while publishing and draining
	RSSBeforeKB     int64   `json:"rss_before_kb"`
	RSSSubscribedKB int64   `json:"rss_subscribed_kb"`
	RSSAfterKB      int64   `json:"rss_after_kb"`
}

func (r *fanoutReport) failed() bool {
	bad := r.Loss.Total() > 0 || r.Connect.Failed > 0 || r.Connect.Ended > 0 || r.Publish.Errors > 0
	for _, t := range r.Transports {
		bad = bad || t.ProtocolErrors > 0
	}
	return bad
}

// errorSet keeps the first few distinct error messages.
type errorSet struct {
	mu   sync.Mutex
	msgs []string
}

func (e *errorSet) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.msgs) < 5 && !slices.Contains(e.msgs, err.Error()) {
		e.msgs = append(e.msgs, err.Error())
	}
}

// openSubscribers starts subs at the ramp rate and waits until each has
// subscribed or failed. It returns the wait group of their goroutines.
func openSubscribers(ctx context.Context, cfg *config, d *dialer, subs []*subscriber, errs *errorSet) (*sync.WaitGroup, connectStats, error) {
	st := connectStats{Attempted: len(subs)}
	ready := make(chan error, len(subs))
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / cfg.ramp)
	for i, s := range subs {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return &wg, st, ctx.Err()
			}
		}
		wg.Go(func() { s.run(ctx, d, ready) })
	}
	for range subs {
		select {
		case err := <-ready:
			if err != nil {
				st.Failed++
				errs.add(err)
			} else {
				st.Subscribed++
			}
		case <-ctx.Done():
			return &wg, st, ctx.Err()
		}
	}
	st.Seconds = time.Since(start).Seconds()
	return &wg, st, nil
}

// newSubscribers returns ws WebSocket then sse SSE subscribers, interleaved
// so that both kinds ramp up together.
func newSubscribers(ws, sse int) []*subscriber {
	subs := make([]*subscriber, 0, ws+sse)
	for i := 0; i < max(ws, sse); i++ {
		if i < ws {
			subs = append(subs, &subscriber{transport: transportWS})
		}
		if i < sse {
			subs = append(subs, &subscriber{transport: transportSSE})
		}
	}
	return subs
}

func newPublisher(addr string) heraldv1connect.EventServiceClient {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // gRPC over h2c: one connection, multiplexed
	hc := &http.Client{Transport: &http.Transport{Protocols: &p}}
	return heraldv1connect.NewEventServiceClient(hc, "http://"+addr, connect.WithGRPC())
}

func publishOne(ctx context.Context, c heraldv1connect.EventServiceClient, channel string, size int) (int64, error) {
	resp, err := c.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{
		Channel: channel,
		Type:    eventType,
		Data:    eventData(time.Now(), size),
	}))
	if err != nil {
		return 0, err
	}
	return resp.Msg.GetEvent().GetPosition(), nil
}

// publishLoad publishes rate events/s for duration with up to
// cfg.publishers calls in flight; each event's slot is fixed in advance (open loop), so a slow
// server shows as late slots and latency, not as a lower offered rate.
func publishLoad(ctx context.Context, cfg *config, c heraldv1connect.EventServiceClient, errs *errorSet) (acked []int64, st publishStats) {
	total := int(cfg.rate * cfg.duration.Seconds())
	interval := time.Duration(float64(time.Second) / cfg.rate)
	slots := make(chan struct{}, cfg.publishers)
	type result struct {
		pos []int64
		ack []int64
		n   int
	}
	results := make([]result, cfg.publishers)
	var wg sync.WaitGroup
	for w := range cfg.publishers {
		wg.Go(func() {
			r := &results[w]
			for range slots {
				t := time.Now()
				pos, err := publishOne(ctx, c, cfg.channel, cfg.size)
				r.n++
				if err != nil {
					errs.add(fmt.Errorf("publish: %w", err))
					continue
				}
				r.ack = append(r.ack, int64(time.Since(t)))
				r.pos = append(r.pos, pos)
			}
		})
	}
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		} else if wait < -10*time.Millisecond {
			st.Late++
		}
		if ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
	}
	close(slots)
	wg.Wait()
	elapsed := time.Since(start)

	var acks []int64
	for _, r := range results {
		st.Sent += r.n
		acked = append(acked, r.pos...)
		acks = append(acks, r.ack...)
	}
	slices.Sort(acked)
	st.Acked = len(acked)
	st.Errors = st.Sent - st.Acked
	st.PerSec = float64(st.Acked) / elapsed.Seconds()
	st.Ack = summarize(acks)
	if len(acked) > 0 {
		st.FirstPos, st.LastPos = acked[0], acked[len(acked)-1]
	}
	return acked, st
}

func rssKB(pid int) (int64, error) {
	m, err := procStatus(pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return m["VmRSS"], nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runFanout(ctx context.Context, cfg *config, logf func(string, ...any)) (*fanoutReport, error) {
	r := &fanoutReport{
		Mode: "fanout", Addr: cfg.addr, Channel: cfg.channel, WSCodec: cfg.wsCodec,
		Rate: cfg.rate, Duration: cfg.duration.Seconds(), Size: cfg.size,
	}
	pub := newPublisher(cfg.addr)
	// The warm-up publish creates the channel (subscribing to an unknown
	// channel may fail) and checks that the server answers; subscribers
	// start live, after it.
	if _, err := publishOne(ctx, pub, cfg.channel, cfg.size); err != nil {
		return nil, fmt.Errorf("warm-up publish: %w", err)
	}
	var srv *serverStats
	if cfg.serverPID > 0 {
		srv = &serverStats{PID: cfg.serverPID}
		var err error
		if srv.RSSBeforeKB, err = rssKB(cfg.serverPID); err != nil {
			return nil, fmt.Errorf("server memory: %w", err)
		}
	}

	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	d := newDialer(cfg.addr, cfg.channel, cfg.wsCodec, cfg.connectTimeout)
	d.preallocate = int(cfg.rate*cfg.duration.Seconds()) + 16
	subs := newSubscribers(cfg.ws, cfg.sse)
	var errs errorSet
	logf("opening %d WebSocket + %d SSE subscribers at %.0f/s", cfg.ws, cfg.sse, cfg.ramp)
	wg, cst, err := openSubscribers(subCtx, cfg, d, subs, &errs)
	r.Connect = cst
	if err != nil {
		return nil, err
	}
	logf("%d subscribed, %d failed in %.1fs; settling %s", cst.Subscribed, cst.Failed, cst.Seconds, cfg.settle)
	time.Sleep(cfg.settle)
	if srv != nil {
		srv.RSSSubscribedKB, _ = rssKB(cfg.serverPID)
	}

	var srvCPU0 time.Duration
	if srv != nil {
		srvCPU0, _ = procCPU(cfg.serverPID)
	}
	toolCPU0 := selfCPU()
	t0 := time.Now()
	logf("publishing %.0f events/s for %s", cfg.rate, cfg.duration)
	acked, pst := publishLoad(ctx, cfg, pub, &errs)
	r.Publish = pst
	logf("published %d (%d errors, %d late); draining", pst.Acked, pst.Errors, pst.Late)

	// Drain: wait until every live subscriber has as many events as were
	// acknowledged (ended ones never will).
	deadline := time.Now().Add(cfg.drain)
	for {
		behind := 0
		for _, s := range subs {
			if s.subscribed.Load() && !s.ended.Load() && s.count.Load() < int64(len(acked)) {
				behind++
			}
		}
		if behind == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			r.Delivered.DrainTimeout = behind > 0
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	r.ToolCPU = (selfCPU() - toolCPU0).Seconds() / elapsed.Seconds()
	if srv != nil {
		if c, err := procCPU(cfg.serverPID); err == nil {
			srv.CPU = (c - srvCPU0).Seconds() / elapsed.Seconds()
		}
		srv.RSSAfterKB, _ = rssKB(cfg.serverPID)
		r.Server = srv
	}
	cancelSubs()
	wg.Wait()

	// Account: every subscriber that subscribed must have every acked
	// position once, in order.
	byName := map[string]*transportStats{}
	lat := map[string][]int64{}
	var seen []bool
	var lastRecv int64
	for _, name := range []string{transportWS, transportSSE} {
		byName[name] = &transportStats{Name: name}
	}
	for _, s := range subs {
		ts := byName[s.transport]
		ts.Subscribers++
		if !s.subscribed.Load() {
			continue // counted in Connect.Failed, not as missing events
		}
		if s.err != nil {
			errs.add(s.err)
			r.Connect.Ended++
		}
		ts.Events += int64(len(s.positions))
		ts.ProtocolErrors += s.protoErrs
		lat[s.transport] = append(lat[s.transport], s.latency...)
		lastRecv = max(lastRecv, s.lastRecv)
		var l Loss
		l, seen = checkDelivery(acked, s.positions, seen)
		ts.Loss.add(l)
	}
	for _, name := range []string{transportWS, transportSSE} {
		ts := byName[name]
		if ts.Subscribers == 0 {
			continue
		}
		ts.Latency = summarize(lat[name])
		r.Loss.add(ts.Loss)
		r.Delivered.Events += ts.Events
		r.Transports = append(r.Transports, *ts)
	}
	if lastRecv > 0 {
		r.Delivered.Seconds = time.Unix(0, lastRecv).Sub(t0).Seconds()
		r.Delivered.PerSec = float64(r.Delivered.Events) / r.Delivered.Seconds
	}
	r.Connect.Errors = errs.msgs
	return r, nil
}
