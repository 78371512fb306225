package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// resumeReport is the outcome of a storm or failover run.
type resumeReport struct {
	Scenario   string           `json:"scenario"` // "storm" or "failover"
	Addrs      []string         `json:"addrs"`
	Channel    string           `json:"channel"`
	Rate       float64          `json:"rate"`
	Before     float64          `json:"before_s"` // publishing before the drop
	After      float64          `json:"after_s"`  // and at least this long after it, until every subscriber is live again (at most --drain more)
	Connect    connectStats     `json:"connect"`
	Publish    publishStats     `json:"publish"`
	Delivered  deliveredStats   `json:"delivered"`
	Transports []transportStats `json:"transports"`
	Loss       Loss             `json:"loss"`
	// From the drop (storm) or the kill (failover), per subscriber: the
	// first event on its new connection, and the first event published
	// after its new subscription was confirmed (all missed ones replayed:
	// it is live again).
	FirstEvent Latency `json:"first_event"`
	LiveAgain  Latency `json:"live_again"`
	Resumed    int     `json:"resumed"`     // subscribers live again
	NotResumed int     `json:"not_resumed"` // subscribers never live again: a failure
	Reconnects int     `json:"reconnects"`  // connections opened after the first, over all subscribers
	Passed     bool    `json:"passed"`
}

// Failed implements Report.
func (r *resumeReport) Failed() bool {
	return r.NotResumed > 0 || deliveryFailed(r.Loss, r.Connect, r.Publish, r.Transports, r.Delivered.DrainTimeout)
}

// Print implements Report.
func (r *resumeReport) Print(w io.Writer) {
	what := "every connection dropped at once by the client, resumed on the same server"
	if r.Scenario == "failover" {
		what = fmt.Sprintf("server %s killed, subscribers resumed on %s", r.Addrs[0], r.Addrs[1])
	}
	fmt.Fprintf(w, "%s on %q: %s; %.0f events/s, %.0fs before and %.0fs after\n", r.Scenario, r.Channel, what, r.Rate, r.Before, r.After)
	printConnect(w, r.Connect)
	p := r.Publish
	fmt.Fprintf(w, "published    %d acked of %d sent (%d errors, %d late); ack p50 %.2f ms p99 %.2f ms\n",
		p.Acked, p.Sent, p.Errors, p.Late, p.Ack.P50, p.Ack.P99)
	fmt.Fprintf(w, "resumed      %d live again, %d never; %d reconnections\n", r.Resumed, r.NotResumed, r.Reconnects)
	fmt.Fprintf(w, "first event  p50 %.1f ms  p99 %.1f ms  max %.1f ms after the %s\n", r.FirstEvent.P50, r.FirstEvent.P99, r.FirstEvent.Max, dropWord(r.Scenario))
	fmt.Fprintf(w, "live again   p50 %.1f ms  p99 %.1f ms  max %.1f ms after the %s\n\n", r.LiveAgain.P50, r.LiveAgain.P99, r.LiveAgain.Max, dropWord(r.Scenario))
	transportTable(w, r.Transports)
	verdict(w, r.Failed(), "events lost, subscribers not resumed, or connections failed")
}

func dropWord(scenario string) string {
	if scenario == "failover" {
		return "kill"
	}
	return "drop"
}

func runStorm(ctx context.Context, e *env) (*resumeReport, error) {
	return runResume(ctx, e, func(subs []*subscriber) error {
		for _, s := range subs {
			s.drop()
		}
		return nil
	})
}

func runFailover(ctx context.Context, e *env) (*resumeReport, error) {
	return runResume(ctx, e, func([]*subscriber) error { return e.cfg.Kill() })
}

// runResume subscribes on the first address, publishes to the last, and
// calls cut after cfg.Before.
func runResume(ctx context.Context, e *env, cut func([]*subscriber) error) (*resumeReport, error) {
	cfg := e.cfg
	r := &resumeReport{
		Scenario: cfg.Scenario, Addrs: cfg.Addrs, Channel: cfg.Channel, Rate: cfg.Rate,
		Before: cfg.Before.Seconds(), After: cfg.After.Seconds(),
	}
	pub := newPublisher(e, cfg.Addrs[len(cfg.Addrs)-1])
	warm, err := pub.publish(ctx, cfg.Channel, cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("warm-up publish: %w", err)
	}
	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	d := newDialer(e)
	d.reconnect = true
	d.preallocate = int(cfg.Rate*(cfg.Before+cfg.After).Seconds()) + 16
	subs := newSubscribers(e, d, cfg.Transports, cfg.Subs)
	var errs errorSet
	e.logf("%s: opening %d subscribers (%v) on %s", cfg.Scenario, cfg.Subs, cfg.Transports, cfg.Addrs[0])
	wg, cst, err := openSubscribers(subCtx, e, d, subs, &errs)
	r.Connect = cst
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	var sent atomic.Int64
	stop := e.progress(func() string {
		return fmt.Sprintf("published %d, delivered %d", sent.Load(), delivered(subs))
	})
	defer stop()
	var (
		acked []int64
		pwg   sync.WaitGroup
	)
	// Publishing goes on after Before+After until every subscriber is live
	// again (it needs an event published after its resubscription to show
	// it), for at most Drain more.
	var cutAt atomic.Int64
	more := func() bool {
		c := cutAt.Load()
		if c == 0 || time.Since(time.Unix(0, c)) > cfg.After+cfg.Drain {
			return false
		}
		for _, s := range subs {
			if s.subscribed.Load() && !s.ended.Load() && s.liveAfter.Load() == 0 {
				return true
			}
		}
		return false
	}
	pwg.Go(func() { acked, r.Publish = publishLoad(ctx, cfg, cfg.Before+cfg.After, pub, &errs, &sent, more) })
	if err := sleepCtx(ctx, cfg.Before); err != nil {
		pwg.Wait()
		return nil, err
	}
	e.logf("%s: cutting %d subscribers", cfg.Scenario, len(subs))
	dropAt := time.Now().UnixNano()
	d.dropAt.Store(dropAt)
	cutAt.Store(dropAt)
	if err := cut(subs); err != nil {
		errs.add(fmt.Errorf("kill: %w", err))
		r.NotResumed = len(subs)
	}
	pwg.Wait()
	e.logf("published %d (%d errors, %d late); draining", r.Publish.Acked, r.Publish.Errors, r.Publish.Late)
	r.Delivered.DrainTimeout = drain(ctx, subs, warm, len(acked), cfg.Drain)
	stop()
	cancelSubs()
	wg.Wait()
	r.Transports, r.Loss, _ = account(subs, warm, acked, &errs, &r.Connect)
	for _, t := range r.Transports {
		r.Delivered.Events += t.Events
	}
	var first, live []int64
	for _, s := range subs {
		r.Reconnects += s.reconnects
		if !s.subscribed.Load() {
			continue
		}
		if s.firstAfter > 0 {
			first = append(first, s.firstAfter-dropAt)
		}
		if l := s.liveAfter.Load(); l > 0 {
			live = append(live, l-dropAt)
			r.Resumed++
		} else if r.NotResumed < len(subs) {
			r.NotResumed++
		}
	}
	r.FirstEvent, r.LiveAgain = summarize(first), summarize(live)
	r.Connect.Errors = errs.msgs
	r.Passed = !r.Failed()
	return r, ctx.Err()
}

// recoveryReport is the outcome of a recovery run.
type recoveryReport struct {
	Scenario   string          `json:"scenario"` // "recovery"
	Addr       string          `json:"addr"`
	Channel    string          `json:"channel"`
	Missed     int             `json:"missed"`
	Rounds     int             `json:"rounds"`
	Transports []recoveryStats `json:"transports"`
	Passed     bool            `json:"passed"`
}

type recoveryStats struct {
	Name   string   `json:"name"`
	Rounds int      `json:"rounds"` // that received every missed event
	Failed int      `json:"failed"` // that did not (error, timeout or loss)
	Time   Latency  `json:"time"`   // dial to the last missed event received
	Loss   Loss     `json:"loss"`
	Errors []string `json:"errors,omitempty"`
}

// Failed implements Report.
func (r *recoveryReport) Failed() bool {
	for _, t := range r.Transports {
		if t.Failed > 0 || t.Loss.Total() > 0 {
			return true
		}
	}
	return false
}

// Print implements Report.
func (r *recoveryReport) Print(w io.Writer) {
	fmt.Fprintf(w, "recovery on %q at %s: %d rounds of %d missed events, each resumed by a new connection\n\n", r.Channel, r.Addr, r.Rounds, r.Missed)
	for _, t := range r.Transports {
		fmt.Fprintf(w, "%-4s  %d rounds ok, %d failed; dial to last missed event p50 %.2f ms p99 %.2f ms max %.2f ms; missing %d dup %d out of order %d unexpected %d\n",
			t.Name, t.Rounds, t.Failed, t.Time.P50, t.Time.P99, t.Time.Max, t.Loss.Missing, t.Loss.Duplicate, t.Loss.OutOfOrder, t.Loss.Unexpected)
		for _, e := range t.Errors {
			fmt.Fprintf(w, "  error: %s\n", e)
		}
	}
	verdict(w, r.Failed(), "a resume lost, duplicated or reordered events, or failed")
}

func runRecovery(ctx context.Context, e *env) (*recoveryReport, error) {
	cfg := e.cfg
	addr := cfg.Addrs[0]
	r := &recoveryReport{Scenario: "recovery", Addr: addr, Channel: cfg.Channel, Missed: cfg.Missed, Rounds: cfg.Rounds}
	pub := newPublisher(e, addr)
	d := newDialer(e)
	d.preallocate = cfg.Missed + 16
	var round atomic.Int64
	stop := e.progress(func() string { return fmt.Sprintf("round %d of %d per transport", round.Load(), cfg.Rounds) })
	defer stop()
	for _, tr := range cfg.Transports {
		st := recoveryStats{Name: tr}
		var errs errorSet
		var times []int64
		var seen []bool
		for i := range cfg.Rounds {
			round.Store(int64(i + 1))
			n, l, err := recoverOnce(ctx, e, d, pub, tr, &seen, i == 0)
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			st.Loss.add(l)
			if err != nil || l.Total() > 0 {
				st.Failed++
				if err != nil {
					errs.add(err)
				}
				continue
			}
			st.Rounds++
			times = append(times, n)
		}
		st.Time = summarize(times)
		st.Errors = errs.msgs
		r.Transports = append(r.Transports, st)
	}
	r.Passed = !r.Failed()
	return r, nil
}

// recoverOnce publishes a marker and cfg.Missed events, then resumes after
// the marker on a new connection and returns the time from dial to the last
// missed event received, and the checker's counts.
func recoverOnce(ctx context.Context, e *env, d *dialer, p publisher, transport string, seen *[]bool, first bool) (int64, Loss, error) {
	cfg := e.cfg
	marker, err := p.publish(ctx, cfg.Channel, cfg.Size)
	if err != nil {
		return 0, Loss{}, fmt.Errorf("publish: %w", err)
	}
	acked := make([]int64, 0, cfg.Missed)
	var mu sync.Mutex
	var perr error
	var wg sync.WaitGroup
	next := make(chan struct{}, cfg.Missed)
	for range cfg.Missed {
		next <- struct{}{}
	}
	close(next)
	for range min(16, cfg.Missed) {
		wg.Go(func() {
			for range next {
				pos, err := p.publish(ctx, cfg.Channel, cfg.Size)
				mu.Lock()
				if err != nil {
					perr = cmpErr(perr, err)
				} else {
					acked = append(acked, pos)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if perr != nil {
		return 0, Loss{}, fmt.Errorf("publish: %w", perr)
	}
	slices.Sort(acked)

	s := &subscriber{transport: transport, dropAt: &d.dropAt, cursor: &marker}
	if first {
		s.inject = cfg.Inject
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan error, 1)
	t0 := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(sctx, d, ready)
	}()
	deadline := time.Now().Add(cfg.ConnectTimeout)
	for s.count.Load() < int64(cfg.Missed) && !s.ended.Load() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	// A little longer, for a duplicate or an unexpected event to show.
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-done
	if err := <-ready; err != nil {
		return 0, Loss{}, err
	}
	var l Loss
	l, *seen = checkDelivery(acked, s.positions, *seen)
	if s.err != nil {
		return 0, l, s.err
	}
	return s.lastRecv - t0.UnixNano(), l, nil
}
