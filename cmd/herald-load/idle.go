package main

import (
	"context"
	"fmt"
	"os"
	"time"
)

// idleReport is the outcome of one idle run; its JSON form is the -json
// output.
type idleReport struct {
	Mode        string       `json:"mode"` // "idle"
	Addr        string       `json:"addr"`
	Channel     string       `json:"channel"`
	Transport   string       `json:"transport"`
	Subscribed  bool         `json:"subscribed"` // WebSockets sent a subscribe (SSE always does)
	Connections int          `json:"connections"`
	Settle      float64      `json:"settle_s"`
	Connect     connectStats `json:"connect"`
	Server      memStats     `json:"server"`
	Tool        memStats     `json:"tool"`
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

func (r *idleReport) failed() bool { return r.Connect.Failed > 0 || r.Connect.Ended > 0 }

func runIdle(ctx context.Context, cfg *config, logf func(string, ...any)) (*idleReport, error) {
	transport, n := transportWS, cfg.ws
	if cfg.sse > 0 {
		transport, n = transportSSE, cfg.sse
	}
	r := &idleReport{
		Mode: "idle", Addr: cfg.addr, Channel: cfg.channel, Transport: transport,
		Subscribed: transport == transportSSE || cfg.idleSubscribe, Connections: n,
		Settle: cfg.settle.Seconds(),
		Server: memStats{PID: cfg.serverPID},
		Tool:   memStats{PID: os.Getpid()},
	}
	// Create the channel, so that the subscriptions find it.
	if _, err := publishOne(ctx, newPublisher(cfg.addr), cfg.channel, cfg.size); err != nil {
		return nil, fmt.Errorf("warm-up publish: %w", err)
	}
	time.Sleep(cfg.settle)
	if err := r.Server.read(false); err != nil {
		return nil, fmt.Errorf("server memory: %w", err)
	}
	if err := r.Tool.read(false); err != nil {
		return nil, err
	}

	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	d := newDialer(cfg.addr, cfg.channel, cfg.wsCodec, cfg.connectTimeout)
	d.subscribe = cfg.idleSubscribe
	subs := newSubscribers(cfg.ws, cfg.sse)
	var errs errorSet
	logf("opening %d idle %s connections at %.0f/s (server VmRSS %d kB)", n, transport, cfg.ramp, r.Server.RSSBeforeKB)
	wg, cst, err := openSubscribers(subCtx, cfg, d, subs, &errs)
	r.Connect = cst
	if err != nil {
		return nil, err
	}
	logf("%d open, %d failed in %.1fs; settling %s", cst.Subscribed, cst.Failed, cst.Seconds, cfg.settle)
	time.Sleep(cfg.settle)
	if err := r.Server.read(true); err != nil {
		return nil, fmt.Errorf("server memory: %w", err)
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
	if open > 0 {
		r.Server.PerConnKB = float64(r.Server.RSSAfterKB-r.Server.RSSBeforeKB) / float64(open)
		r.Tool.PerConnKB = float64(r.Tool.RSSAfterKB-r.Tool.RSSBeforeKB) / float64(open)
	}
	if cfg.hold > 0 {
		logf("holding %d connections for %s", open, cfg.hold)
		select {
		case <-time.After(cfg.hold):
		case <-ctx.Done():
		}
	}
	// Connections that ended on their own before now (not the ones the
	// tool is about to close) count as errors.
	for _, s := range subs {
		if s.subscribed.Load() && s.ended.Load() {
			r.Connect.Ended++
		}
	}
	cancelSubs()
	wg.Wait()
	for _, s := range subs {
		if s.err != nil {
			errs.add(s.err)
		}
	}
	r.Connect.Errors = errs.msgs
	return r, nil
}
