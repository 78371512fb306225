package bench

import (
	"context"
	"fmt"
	"os"
)

// idleReport is the outcome of one idle run; its JSON form is the -json
// output.
type idleReport struct {
	Scenario    string       `json:"scenario"` // "idle"
	Addr        string       `json:"addr"`
	Channel     string       `json:"channel"`
	Transport   string       `json:"transport"`
	Subscribed  bool         `json:"subscribed"` // WebSockets sent a subscribe (SSE always does)
	Connections int          `json:"connections"`
	Settle      float64      `json:"settle_s"`
	Connect     connectStats `json:"connect"`
	Server      *memStats    `json:"server,omitempty"` // with --server-pid
	Tool        memStats     `json:"tool"`
	Drops       int          `json:"drops"` // connections that ended on their own while held
	Passed      bool         `json:"passed"`
}

// memStats is one process's memory before and after the connections were
// opened; PerConn divides the VmRSS difference by the connections open.
type memStats struct {
	PID           int     `json:"pid"`
	RSSBeforeKB   int64   `json:"rss_before_kb"`
	RSSAfterKB    int64   `json:"rss_after_kb"`
	AnonBeforeKB  int64   `json:"rss_anon_before_kb"`
	AnonAfterKB   int64   `json:"rss_anon_after_kb"`
	ThreadsBefore int64   `json:"threads_before"`
	ThreadsAfter  int64   `json:"threads_after"`
	PerConnKB     float64 `json:"per_connection_kb"`
}

func (m *memStats) read(after bool) error {
	v, err := procStatus(m.PID, "VmRSS", "RssAnon", "Threads")
	if err != nil {
		return err
	}
	if after {
		m.RSSAfterKB, m.AnonAfterKB, m.ThreadsAfter = v["VmRSS"], v["RssAnon"], v["Threads"]
	} else {
		m.RSSBeforeKB, m.AnonBeforeKB, m.ThreadsBefore = v["VmRSS"], v["RssAnon"], v["Threads"]
	}
	return nil
}

// Failed implements Report.
func (r *idleReport) Failed() bool { return r.Connect.Failed > 0 || r.Connect.Ended > 0 }

func runIdle(ctx context.Context, e *env) (*idleReport, error) {
	cfg := e.cfg
	transport, n := cfg.Transports[0], cfg.Subs
	r := &idleReport{
		Scenario: "idle", Addr: cfg.Addrs[0], Channel: cfg.Channel, Transport: transport,
		Subscribed: transport == transportSSE || !cfg.IdleNoSub, Connections: n,
		Settle: cfg.Settle.Seconds(),
		Tool:   memStats{PID: os.Getpid()},
	}
	if cfg.ServerPID > 0 {
		r.Server = &memStats{PID: cfg.ServerPID}
	}
	// Create the channel, so that the subscriptions find it.
	if _, err := newPublisher(e, cfg.Addrs[0]).publish(ctx, cfg.Channel, cfg.Size); err != nil {
		return nil, fmt.Errorf("warm-up publish: %w", err)
	}
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	if r.Server != nil {
		if err := r.Server.read(false); err != nil {
			return nil, fmt.Errorf("server memory: %w", err)
		}
	}
	if err := r.Tool.read(false); err != nil {
		return nil, err
	}

	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	d := newDialer(e)
	d.subscribe = !cfg.IdleNoSub
	subs := newSubscribers(e, d, cfg.Transports, n)
	var errs errorSet
	e.logf("idle: opening %d %s connections at %.0f/s", n, transport, cfg.Ramp)
	wg, cst, err := openSubscribers(subCtx, e, d, subs, &errs)
	r.Connect = cst
	if err != nil {
		return nil, err
	}
	e.logf("%d open, %d failed in %.1fs; settling %s", cst.Subscribed, cst.Failed, cst.Seconds, cfg.Settle)
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	if r.Server != nil {
		if err := r.Server.read(true); err != nil {
			return nil, fmt.Errorf("server memory: %w", err)
		}
	}
	if err := r.Tool.read(true); err != nil {
		return nil, err
	}
	open := 0
	for _, s := range subs {
		if s.subscribed.Load() && !s.ended.Load() {
			open++
		}
	}
	if open > 0 && r.Server != nil {
		r.Server.PerConnKB = float64(r.Server.RSSAfterKB-r.Server.RSSBeforeKB) / float64(open)
	}
	if open > 0 {
		r.Tool.PerConnKB = float64(r.Tool.RSSAfterKB-r.Tool.RSSBeforeKB) / float64(open)
	}
	if cfg.Hold > 0 {
		e.logf("holding %d connections for %s", open, cfg.Hold)
		stop := e.progress(func() string {
			n := 0
			for _, s := range subs {
				if s.subscribed.Load() && s.ended.Load() {
					n++
				}
			}
			return fmt.Sprintf("holding %d connections, %d dropped", open, n)
		})
		_ = sleepCtx(ctx, cfg.Hold)
		stop()
	}
	// Connections that ended on their own before now (not the ones the
	// tool is about to close) count as errors.
	for _, s := range subs {
		if s.subscribed.Load() && s.ended.Load() {
			r.Connect.Ended++
		}
	}
	r.Drops = r.Connect.Ended
	cancelSubs()
	wg.Wait()
	for _, s := range subs {
		if s.err != nil {
			errs.add(s.err)
		}
	}
	r.Connect.Errors = errs.msgs
	r.Passed = !r.Failed()
	return r, ctx.Err()
}
