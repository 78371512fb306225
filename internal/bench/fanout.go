package bench

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
)

// eventType is the type of every event the tool publishes.
const eventType = "herald-bench"

// fanoutReport is the outcome of one fan-out run; its JSON form is the
// --json output.
type fanoutReport struct {
	Scenario   string           `json:"scenario"` // "fanout"
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
	Passed     bool             `json:"passed"`
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

// Failed implements Report.
func (r *fanoutReport) Failed() bool {
	return deliveryFailed(r.Loss, r.Connect, r.Publish, r.Transports, r.Delivered.DrainTimeout)
}

func deliveryFailed(l Loss, c connectStats, p publishStats, ts []transportStats, drainTimeout bool) bool {
	bad := l.Total() > 0 || c.Failed > 0 || c.Ended > 0 || p.Errors > 0 || drainTimeout
	for _, t := range ts {
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
func openSubscribers(ctx context.Context, e *env, d *dialer, subs []*subscriber, errs *errorSet) (*sync.WaitGroup, connectStats, error) {
	st := connectStats{Attempted: len(subs)}
	ready := make(chan error, len(subs))
	var wg sync.WaitGroup
	var done atomic.Int64
	stop := e.progress(func() string {
		return fmt.Sprintf("connecting: %d of %d answered", done.Load(), len(subs))
	})
	defer stop()
	start := time.Now()
	interval := time.Duration(float64(time.Second) / e.cfg.Ramp)
	for i, s := range subs {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			if err := sleepCtx(ctx, wait); err != nil {
				return &wg, st, err
			}
		}
		wg.Go(func() { s.run(ctx, d, ready) })
	}
	for range subs {
		select {
		case err := <-ready:
			done.Add(1)
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

// newSubscribers returns n subscribers spread over the transports in turn.
// The first carries the configured injection.
func newSubscribers(e *env, d *dialer, transports []string, n int) []*subscriber {
	subs := make([]*subscriber, n)
	for i := range subs {
		subs[i] = &subscriber{transport: transports[i%len(transports)], dropAt: &d.dropAt}
	}
	if n > 0 {
		subs[0].inject = e.cfg.Inject
	}
	return subs
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token == "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// publisher publishes one event of size bytes (its publish time first) and
// returns its position: the Herald position, or the Centrifugo offset.
type publisher interface {
	publish(ctx context.Context, channel string, size int) (int64, error)
}

// newPublisher returns the publisher of the run's target at addr.
func newPublisher(e *env, addr string) publisher {
	if e.cfg.Target == TargetCentrifugo {
		return newCentrifugoPublisher(e, addr, max(e.cfg.Publishers, 1))
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // gRPC over h2c: one connection, multiplexed
	hc := &http.Client{Transport: bearer{e.cfg.Token, &http.Transport{Protocols: &p}}}
	return heraldPublisher{heraldv1connect.NewEventServiceClient(hc, "http://"+addr, connect.WithGRPC())}
}

// heraldPublisher publishes over gRPC (EventService.Publish).
type heraldPublisher struct {
	c heraldv1connect.EventServiceClient
}

func (h heraldPublisher) publish(ctx context.Context, channel string, size int) (int64, error) {
	resp, err := h.c.Publish(ctx, connect.NewRequest(&heraldv1.PublishRequest{
		Channel: channel,
		Type:    eventType,
		Data:    eventData(time.Now(), size),
	}))
	if err != nil {
		return 0, err
	}
	return resp.Msg.GetEvent().GetPosition(), nil
}

// publishLoad publishes cfg.Rate events/s for d with up to cfg.Publishers
// calls in flight; each event's slot is fixed in advance (open loop), so a
// slow server shows as late slots and latency, not as a lower offered
// rate. sent counts publishes as they are acknowledged, for the progress
// line. After d, publishing goes on at the same rate while more (if not
// nil) says so.
func publishLoad(ctx context.Context, cfg *Config, d time.Duration, c publisher, errs *errorSet, sent *atomic.Int64, more func() bool) (acked []int64, st publishStats) {
	total := int(cfg.Rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	slots := make(chan struct{}, cfg.Publishers)
	type result struct {
		pos []int64
		ack []int64
		n   int
	}
	results := make([]result, cfg.Publishers)
	var wg sync.WaitGroup
	for w := range cfg.Publishers {
		wg.Go(func() {
			r := &results[w]
			for range slots {
				t := time.Now()
				pos, err := c.publish(ctx, cfg.Channel, cfg.Size)
				r.n++
				if err != nil {
					errs.add(fmt.Errorf("publish: %w", err))
					continue
				}
				r.ack = append(r.ack, int64(time.Since(t)))
				r.pos = append(r.pos, pos)
				sent.Add(1)
			}
		})
	}
	start := time.Now()
	for i := 0; i < total || more != nil && more(); i++ {
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

// drain waits until every live subscriber has the n acknowledged events,
// and the warm-up one when its subscription started before it (ended
// subscribers never will), or d has passed; it reports whether some were
// still behind. A subscriber's startCursor was written before it reported
// on ready, which openSubscribers received.
func drain(ctx context.Context, subs []*subscriber, warm int64, n int, d time.Duration) (timedOut bool) {
	deadline := time.Now().Add(d)
	for {
		behind := 0
		for _, s := range subs {
			want := int64(n)
			if s.startCursor < warm {
				want++
			}
			if s.subscribed.Load() && !s.ended.Load() && s.count.Load() < want {
				behind++
			}
		}
		if behind == 0 {
			return false
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// delivered sums the events the subscribers received.
func delivered(subs []*subscriber) (n int64) {
	for _, s := range subs {
		n += s.count.Load()
	}
	return n
}

// account checks every subscriber that subscribed against acked (every
// position after the cursor its subscription started from, once, in order)
// and sums per transport; it runs after every subscriber's goroutine
// returned. warm is the warm-up publish, made before the subscribers
// connected: a subscription whose start cursor is below it (its server had
// not seen it yet) must receive it too. Subscribers that ended on their
// own are counted in c.Ended.
func account(subs []*subscriber, warm int64, acked []int64, errs *errorSet, c *connectStats) (ts []transportStats, loss Loss, lastRecv int64) {
	all := append([]int64{warm}, acked...)
	slices.Sort(all)
	byName := map[string]*transportStats{}
	lat := map[string][]int64{}
	var order []string
	var seen []bool
	for _, s := range subs {
		t := byName[s.transport]
		if t == nil {
			t = &transportStats{Name: s.transport}
			byName[s.transport] = t
			order = append(order, s.transport)
		}
		t.Subscribers++
		if !s.subscribed.Load() {
			continue // counted in c.Failed, not as missing events
		}
		if s.err != nil {
			errs.add(s.err)
			c.Ended++
		}
		t.Events += int64(len(s.positions))
		t.ProtocolErrors += s.protoErrs
		lat[s.transport] = append(lat[s.transport], s.latency...)
		lastRecv = max(lastRecv, s.lastRecv)
		i, _ := slices.BinarySearch(all, s.startCursor+1)
		var l Loss
		l, seen = checkDelivery(all[i:], s.positions, seen)
		t.Loss.add(l)
	}
	for _, name := range order {
		t := byName[name]
		t.Latency = summarize(lat[name])
		loss.add(t.Loss)
		ts = append(ts, *t)
	}
	return ts, loss, lastRecv
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

func runFanout(ctx context.Context, e *env) (*fanoutReport, error) {
	cfg := e.cfg
	addr := cfg.Addrs[0]
	r := &fanoutReport{
		Scenario: "fanout", Addr: addr, Channel: cfg.Channel, WSCodec: cfg.WSCodec,
		Rate: cfg.Rate, Duration: cfg.Duration.Seconds(), Size: cfg.Size,
	}
	pub := newPublisher(e, addr)
	// The warm-up publish creates the channel (subscribing to an unknown
	// channel may fail) and checks that the server answers; subscribers
	// start live, after it.
	warm, err := pub.publish(ctx, cfg.Channel, cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("warm-up publish: %w", err)
	}
	var srv *serverStats
	if cfg.ServerPID > 0 {
		srv = &serverStats{PID: cfg.ServerPID}
		var err error
		if srv.RSSBeforeKB, err = rssKB(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("server memory: %w", err)
		}
	}

	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	d := newDialer(e)
	d.preallocate = int(cfg.Rate*cfg.Duration.Seconds()) + 16
	subs := newSubscribers(e, d, cfg.Transports, cfg.Subs)
	var errs errorSet
	e.logf("fanout: opening %d subscribers (%v) at %.0f/s", cfg.Subs, cfg.Transports, cfg.Ramp)
	wg, cst, err := openSubscribers(subCtx, e, d, subs, &errs)
	r.Connect = cst
	if err != nil {
		return nil, err
	}
	e.logf("%d subscribed, %d failed in %.1fs; settling %s", cst.Subscribed, cst.Failed, cst.Seconds, cfg.Settle)
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	if srv != nil {
		srv.RSSSubscribedKB, _ = rssKB(cfg.ServerPID)
	}

	var srvCPU0 time.Duration
	if srv != nil {
		srvCPU0, _ = procCPU(cfg.ServerPID)
	}
	toolCPU0 := selfCPU()
	t0 := time.Now()
	e.logf("publishing %.0f events/s for %s", cfg.Rate, cfg.Duration)
	var sent atomic.Int64
	stop := e.progress(func() string {
		return fmt.Sprintf("published %d, delivered %d (of %d subscribers)", sent.Load(), delivered(subs), cst.Subscribed)
	})
	acked, pst := publishLoad(ctx, cfg, cfg.Duration, pub, &errs, &sent, nil)
	r.Publish = pst
	e.logf("published %d (%d errors, %d late); draining", pst.Acked, pst.Errors, pst.Late)
	r.Delivered.DrainTimeout = drain(ctx, subs, warm, len(acked), cfg.Drain)
	stop()
	elapsed := time.Since(t0)
	r.ToolCPU = (selfCPU() - toolCPU0).Seconds() / elapsed.Seconds()
	if srv != nil {
		if c, err := procCPU(cfg.ServerPID); err == nil {
			srv.CPU = (c - srvCPU0).Seconds() / elapsed.Seconds()
		}
		srv.RSSAfterKB, _ = rssKB(cfg.ServerPID)
		r.Server = srv
	}
	cancelSubs()
	wg.Wait()

	var lastRecv int64
	r.Transports, r.Loss, lastRecv = account(subs, warm, acked, &errs, &r.Connect)
	for _, t := range r.Transports {
		r.Delivered.Events += t.Events
	}
	if lastRecv > 0 {
		r.Delivered.Seconds = time.Unix(0, lastRecv).Sub(t0).Seconds()
		r.Delivered.PerSec = float64(r.Delivered.Events) / r.Delivered.Seconds
	}
	r.Connect.Errors = errs.msgs
	r.Passed = !r.Failed()
	return r, ctx.Err()
}
