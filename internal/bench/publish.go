package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// publishReport is the outcome of one publish run.
type publishReport struct {
	Scenario   string           `json:"scenario"` // "publish"
	Addr       string           `json:"addr"`
	Channel    string           `json:"channel"`
	Mode       string           `json:"mode"` // closed: REST, one request per event; pipelined: WebSocket
	Publishers int              `json:"publishers"`
	InFlight   int              `json:"in_flight,omitempty"`
	Duration   float64          `json:"duration_s"`
	Size       int              `json:"size"`
	Connect    connectStats     `json:"connect"`
	Publish    publishStats     `json:"publish"`
	Delivered  deliveredStats   `json:"delivered"`
	Transports []transportStats `json:"transports"`
	Loss       Loss             `json:"loss"`
	Server     *serverStats     `json:"server,omitempty"`
	Passed     bool             `json:"passed"`
}

// Failed implements Report.
func (r *publishReport) Failed() bool {
	return deliveryFailed(r.Loss, r.Connect, r.Publish, r.Transports, r.Delivered.DrainTimeout)
}

// Print implements Report.
func (r *publishReport) Print(w io.Writer) {
	how := fmt.Sprintf("%d publishers each waiting for its ack, one REST request per event", r.Publishers)
	if r.Mode == "pipelined" {
		how = fmt.Sprintf("%d WebSocket connection(s), %d publishes in flight on each", r.Publishers, r.InFlight)
	}
	fmt.Fprintf(w, "publish on %q at %s: %s, %.0fs, %d B\n", r.Channel, r.Addr, how, r.Duration, r.Size)
	printConnect(w, r.Connect)
	p := r.Publish
	fmt.Fprintf(w, "published    %d acked of %d sent (%d errors) = %.0f/s; ack p50 %.2f ms p99 %.2f ms max %.2f ms\n",
		p.Acked, p.Sent, p.Errors, p.PerSec, p.Ack.P50, p.Ack.P99, p.Ack.Max)
	fmt.Fprintf(w, "delivered    %d events", r.Delivered.Events)
	if r.Delivered.DrainTimeout {
		fmt.Fprint(w, " (drain timed out: some subscribers never caught up)")
	}
	fmt.Fprintln(w)
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server       pid %d: %.2f cores; VmRSS %d kB after\n", s.PID, s.CPU, s.RSSAfterKB)
	}
	fmt.Fprintln(w)
	transportTable(w, r.Transports)
	verdict(w, r.Failed(), "events lost, publishes failed or connections failed")
}

// publisherResult is what one publisher goroutine recorded.
type publisherResult struct {
	pos, ack []int64
	sent     int
}

func runPublish(ctx context.Context, e *env) (*publishReport, error) {
	cfg := e.cfg
	addr := cfg.Addrs[0]
	r := &publishReport{
		Scenario: "publish", Addr: addr, Channel: cfg.Channel, Mode: cfg.Mode,
		Publishers: cfg.Publishers, Duration: cfg.Duration.Seconds(), Size: cfg.Size,
	}
	if cfg.Mode == "pipelined" {
		r.InFlight = cfg.InFlight
	}
	warm, err := newPublisher(e, addr).publish(ctx, cfg.Channel, cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("warm-up publish: %w", err)
	}
	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	d := newDialer(e)
	d.preallocate = 1024
	subs := newSubscribers(e, d, cfg.Transports, cfg.Subs)
	var errs errorSet
	wg, cst, err := openSubscribers(subCtx, e, d, subs, &errs)
	r.Connect = cst
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	var srvCPU0 time.Duration
	if cfg.ServerPID > 0 {
		srvCPU0, _ = procCPU(cfg.ServerPID)
	}
	e.logf("publish (%s): %d publishers for %s", cfg.Mode, cfg.Publishers, cfg.Duration)
	var sent atomic.Int64
	stop := e.progress(func() string {
		return fmt.Sprintf("acked %d, delivered %d", sent.Load(), delivered(subs))
	})
	pctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	results := make([]publisherResult, cfg.Publishers)
	var pwg sync.WaitGroup
	start := time.Now()
	for i := range results {
		pwg.Go(func() {
			var err error
			if cfg.Mode == "pipelined" {
				err = publishPipelined(pctx, cfg, d, addr, &results[i], &sent)
			} else {
				err = publishClosed(pctx, e, addr, &results[i], &sent)
			}
			if err != nil {
				errs.add(err)
			}
		})
	}
	pwg.Wait()
	elapsed := time.Since(start)
	cancel()

	var acked, acks []int64
	st := &r.Publish
	for _, pr := range results {
		st.Sent += pr.sent
		acked = append(acked, pr.pos...)
		acks = append(acks, pr.ack...)
	}
	slices.Sort(acked)
	st.Acked = len(acked)
	st.Errors = st.Sent - st.Acked
	st.PerSec = float64(st.Acked) / elapsed.Seconds()
	st.Ack = summarize(acks)
	if len(acked) > 0 {
		st.FirstPos, st.LastPos = acked[0], acked[len(acked)-1]
	}
	e.logf("acked %d = %.0f/s; draining", st.Acked, st.PerSec)
	r.Delivered.DrainTimeout = drain(ctx, subs, warm, len(acked), cfg.Drain)
	stop()
	if cfg.ServerPID > 0 {
		s := &serverStats{PID: cfg.ServerPID}
		if c, err := procCPU(cfg.ServerPID); err == nil {
			s.CPU = (c - srvCPU0).Seconds() / time.Since(start).Seconds()
		}
		s.RSSAfterKB, _ = rssKB(cfg.ServerPID)
		r.Server = s
	}
	cancelSubs()
	wg.Wait()
	r.Transports, r.Loss, _ = account(subs, warm, acked, &errs, &r.Connect)
	for _, t := range r.Transports {
		r.Delivered.Events += t.Events
	}
	r.Connect.Errors = errs.msgs
	r.Passed = !r.Failed()
	return r, ctx.Err()
}

// publishClosed publishes one event at a time until ctx ends, each after
// the previous one's acknowledgement: over Herald's REST API, or
// Centrifugo's server API.
func publishClosed(ctx context.Context, e *env, addr string, res *publisherResult, sent *atomic.Int64) error {
	var p publisher
	if e.cfg.Target == TargetCentrifugo {
		cp := newCentrifugoPublisher(e, addr, 1)
		defer cp.hc.CloseIdleConnections()
		p = cp
	} else {
		rp := newRESTPublisher(e.cfg, addr)
		defer rp.hc.CloseIdleConnections()
		p = rp
	}
	var firstErr error
	for ctx.Err() == nil {
		t := time.Now()
		res.sent++
		pos, err := p.publish(context.WithoutCancel(ctx), e.cfg.Channel, e.cfg.Size)
		if err != nil {
			firstErr = cmpErr(firstErr, fmt.Errorf("publish: %w", err))
			continue
		}
		res.ack = append(res.ack, int64(time.Since(t)))
		res.pos = append(res.pos, pos)
		sent.Add(1)
	}
	return firstErr
}

// restPublisher POSTs one event per request to Herald's REST API, over one
// kept-alive connection.
type restPublisher struct {
	url, token string
	hc         *http.Client
}

func newRESTPublisher(cfg *Config, addr string) *restPublisher {
	return &restPublisher{
		url:   "http://" + addr + "/v1/channels/" + url.PathEscape(cfg.Channel) + "/events?type=" + eventType,
		token: cfg.Token,
		hc:    &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}},
	}
}

// publish ignores channel: the URL names it.
func (p *restPublisher) publish(ctx context.Context, _ string, size int) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(eventData(time.Now(), size)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	s, ok := stringField(body, `"position":`)
	pos, perr := strconv.ParseInt(string(s), 10, 64)
	if !ok || perr != nil {
		return 0, fmt.Errorf("no position in %s", body)
	}
	return pos, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// publishPipelined publishes over one WebSocket (herald.v1.proto) with up
// to cfg.InFlight publishes unacknowledged, until ctx ends; then it waits
// for the outstanding acknowledgements (up to cfg.Drain).
func publishPipelined(ctx context.Context, cfg *Config, d *dialer, addr string, res *publisherResult, sent *atomic.Int64) error {
	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	conn, _, err := websocket.Dial(dctx, "ws://"+addr+"/v1/ws", &websocket.DialOptions{
		HTTPClient: d.wsClient, HTTPHeader: d.header(), Subprotocols: []string{"herald.v1.proto"},
	})
	cancel()
	if err != nil {
		return fmt.Errorf("publisher: ws dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(8 << 20)
	slots := make(chan struct{}, cfg.InFlight)
	var (
		mu     sync.Mutex
		sentAt = map[string]time.Time{}
	)
	readErr := make(chan error, 1)
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	// The reader alone appends to res; it has returned when this does.
	defer func() {
		rcancel()
		conn.CloseNow()
		<-done
	}()
	go func() {
		defer close(done)
		var m heraldv1.ConnectResponse
		for {
			_, b, err := conn.Read(rctx)
			if err != nil {
				readErr <- err
				return
			}
			m.Reset()
			if err := proto.Unmarshal(b, &m); err != nil {
				readErr <- fmt.Errorf("publisher: bad frame: %w", err)
				return
			}
			mu.Lock()
			t, ok := sentAt[m.GetId()]
			delete(sentAt, m.GetId())
			mu.Unlock()
			if !ok {
				continue
			}
			switch msg := m.GetMessage().(type) {
			case *heraldv1.ConnectResponse_Published:
				res.ack = append(res.ack, int64(time.Since(t)))
				res.pos = append(res.pos, msg.Published.GetEvent().GetPosition())
				sent.Add(1)
			case *heraldv1.ConnectResponse_Error:
				readErr <- fmt.Errorf("publisher: %s: %s", msg.Error.GetCode(), msg.Error.GetMessage())
				return
			}
			<-slots
		}
	}()
	var werr error
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		case err := <-readErr:
			return fmt.Errorf("publisher: read: %w", err)
		}
		id := strconv.Itoa(i)
		t := time.Now()
		b, err := proto.Marshal(&heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Publish{
			Publish: &heraldv1.PublishRequest{Channel: cfg.Channel, Type: eventType, Data: eventData(t, cfg.Size)},
		}})
		if err != nil {
			return err
		}
		mu.Lock()
		sentAt[id] = t
		mu.Unlock()
		res.sent++
		if err := conn.Write(context.WithoutCancel(ctx), websocket.MessageBinary, b); err != nil {
			werr = fmt.Errorf("publisher: write: %w", err)
			break
		}
	}
	// Wait for the acknowledgements still outstanding.
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(sentAt)
		mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case err := <-readErr:
			return cmpErr(werr, fmt.Errorf("publisher: read: %w", err))
		case <-time.After(5 * time.Millisecond):
		}
	}
	if errors.Is(werr, context.Canceled) {
		werr = nil
	}
	return werr
}
