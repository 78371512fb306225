// Package metrics owns Herald's Prometheus metrics: their names, labels and
// buckets, the registry they live in, and the small hooks the other
// packages call to move them. A nil *Metrics is valid and records nothing,
// so that a part built without metrics (tests, benchmarks with metrics off)
// pays one nil check per hook.
//
// Labels are low-cardinality by design: transports, protocols, results and
// reasons from fixed sets; never channel names or user ids.
//
// Every method is safe for concurrent use.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Namespace prefixes every metric.
const Namespace = "herald"

// Transports, the value of the transport label (and of the protocol label
// of publish latency). Requests are classified once, by the server's
// middleware (WithTransport).
const (
	TransportGRPC     = "grpc"
	TransportGRPCWeb  = "grpcweb"
	TransportConnect  = "connect"
	TransportWS       = "ws"
	TransportSSE      = "sse"
	TransportLongPoll = "longpoll"
	TransportREST     = "rest"
	TransportOther    = "other"
)

// Transports lists every transport label value, so that each series exists
// (at zero) from the start: rate() and absent() alerts need them.
var Transports = []string{TransportGRPC, TransportGRPCWeb, TransportConnect, TransportWS, TransportSSE, TransportLongPoll, TransportREST, TransportOther}

// Publish results.
const (
	ResultOK        = "ok"
	ResultDuplicate = "duplicate"
	ResultRefused   = "refused"
	ResultFailed    = "failed"
)

// Why a subscription ended.
const (
	EndSlowConsumer = "slow_consumer"
	EndTokenExpired = "token_expired"
	EndShutdown     = "shutdown"
	EndUnavailable  = "unavailable"
	EndStopped      = "stopped"
	EndDisconnected = "disconnected" // by an operator (admin API)
)

// Why the hub read the log.
const (
	WakeNotify  = "notify"  // a NOTIFY from a writer (or the listener's reconnect)
	WakePoll    = "poll"    // the safety poll
	WakeCatchUp = "catchup" // a reader asked to see its own writes (CatchUp)
)

// Latency buckets, in seconds: 0.5 ms to 10 s.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics holds Herald's collectors and the registry they are in.
type Metrics struct {
	reg *prometheus.Registry

	connsOpen      *prometheus.GaugeVec
	connsRefused   *prometheus.CounterVec
	subsOpen       *prometheus.GaugeVec
	subsEnded      *prometheus.CounterVec
	published      *prometheus.CounterVec
	publishSeconds *prometheus.HistogramVec
	deliveryLag    *lagHistogram
	batchSize      prometheus.Histogram
	commitSeconds  prometheus.Histogram
	dispatched     prometheus.Counter
	wakeups        *prometheus.CounterVec
	pollsFound     prometheus.Counter
	listenReconn   prometheus.Counter
	replays        *prometheus.CounterVec
	replayed       prometheus.Counter
	truncated      prometheus.Counter
	trims          prometheus.Counter
	trimmed        prometheus.Counter
	authFailures   *prometheus.CounterVec
	dbHead         prometheus.Gauge
	hubLag         prometheus.Gauge
	ready          prometheus.Gauge
	info           *prometheus.GaugeVec
	start          prometheus.Gauge
}

// New returns metrics in a new registry, with the Go runtime and process
// collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg}

	m.connsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "connections_open",
		Help: "Long-lived requests open (streams, WebSockets, SSE streams, long-polls), by transport."}, []string{"transport"})
	m.connsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "connections_refused_total",
		Help: "Long-lived requests refused at admission, by transport and reason (a limit's name, or the refusal's code)."}, []string{"transport", "reason"})
	m.subsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "subscriptions_open",
		Help: "Subscriptions open, by transport."}, []string{"transport"})
	m.subsEnded = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "subscriptions_ended_total",
		Help: "Subscriptions the server ended, by reason (slow_consumer, token_expired, shutdown, unavailable, stopped)."}, []string{"reason"})
	m.published = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "events_published_total",
		Help: "Events submitted for publishing, by result: ok (committed), duplicate (idempotency key seen), refused (the request's fault), failed (the server's)."}, []string{"result"})
	m.publishSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "publish_duration_seconds",
		Help: "Time from a publish request's arrival in the application to its acknowledgement (after commit), by protocol.", Buckets: latencyBuckets}, []string{"protocol"})
	m.deliveryLag = newLagHistogram(prometheus.NewDesc(Namespace+"_delivery_lag_seconds",
		"Time from an event's creation in the log (its commit) to its write to a subscriber, by transport.", []string{"transport"}, nil),
		latencyBuckets, Transports)
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "writer", Name: "batch_events",
		Help: "Events written by one statement of the writer.", Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000}})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "writer", Name: "commit_duration_seconds",
		Help: "Time the writer's publish statement took, commit included.", Buckets: latencyBuckets})
	m.dispatched = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "hub", Name: "events_dispatched_total",
		Help: "Events the hub read from the log and dispatched to its subscriptions."})
	m.wakeups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "hub", Name: "wakeups_total",
		Help: "Reads of the log by the hub, by cause (notify, poll, catchup)."}, []string{"cause"})
	m.pollsFound = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "hub", Name: "poll_found_events_total",
		Help: "Safety polls that found new events: each means notifications were lost or late."})
	m.listenReconn = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "hub", Name: "listen_reconnects_total",
		Help: "Times the LISTEN connection was lost and reconnected."})
	m.replays = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "replays_total",
		Help: "Subscriptions that replayed history after a cursor, by where the replay came from: window (the hub's window of recent entries, no query) or log."},
		[]string{"source"})
	for _, src := range []string{ReplayWindow, ReplayLog} {
		m.replays.WithLabelValues(src)
	}
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "replayed_events_total",
		Help: "Events delivered by replays."})
	m.truncated = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "replays_truncated_total",
		Help: "Replays whose history after the cursor was partly removed (retention, deletion): the subscriber gets a truncation notice and goes on."})
	m.trims = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "retention", Name: "runs_total",
		Help: "Retention runs (trims) that completed."})
	m.trimmed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "retention", Name: "events_removed_total",
		Help: "Events removed by retention."})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "auth_failures_total",
		Help: "Requests refused for their credential, by kind (api_key, jwt, other)."}, []string{"kind"})
	m.dbHead = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "log", Name: "head_position",
		Help: "Highest committed position in the log, as last read by the readiness probe."})
	m.hubLag = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "hub", Name: "lag_events",
		Help: "Positions the hub's head was behind the log's head at the last probe."})
	m.ready = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "ready",
		Help: "1 when the instance can serve (readiness), else 0."})
	m.info = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the labels carry the version and revision."}, []string{"version", "revision"})
	m.start = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "start_time_seconds",
		Help: "When the instance started, in Unix seconds."})
	for _, c := range []prometheus.Collector{m.connsOpen, m.connsRefused, m.subsOpen, m.subsEnded, m.published,
		m.publishSeconds, m.deliveryLag, m.batchSize, m.commitSeconds, m.dispatched, m.wakeups, m.pollsFound,
		m.listenReconn, m.replays, m.replayed, m.truncated, m.trims, m.trimmed, m.authFailures, m.dbHead, m.hubLag, m.ready,
		m.info, m.start} {
		f(c)
	}
	m.start.Set(float64(time.Now().UnixNano()) / 1e9)
	for _, t := range Transports {
		m.connsOpen.WithLabelValues(t)
		m.subsOpen.WithLabelValues(t)
	}
	for _, r := range []string{ResultOK, ResultDuplicate, ResultRefused, ResultFailed} {
		m.published.WithLabelValues(r)
	}
	for _, r := range []string{EndSlowConsumer, EndTokenExpired, EndShutdown, EndUnavailable, EndStopped, EndDisconnected} {
		m.subsEnded.WithLabelValues(r)
	}
	for _, c := range []string{WakeNotify, WakePoll, WakeCatchUp} {
		m.wakeups.WithLabelValues(c)
	}
	return m
}

// Registry returns the registry, to register more collectors (the
// database pool's) or to gather in tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// Func registers a gauge whose value is read at scrape time (a queue's
// depth, the hub's head). name is without the herald_ prefix.
func (m *Metrics) Func(name, help string, f func() float64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, f))
}

// SetBuildInfo records the version and revision.
func (m *Metrics) SetBuildInfo(version, revision string) {
	if m == nil {
		return
	}
	m.info.WithLabelValues(version, revision).Set(1)
}

type transportKey struct{}

// WithTransport returns ctx carrying the transport a request came by; the
// application's hooks read it (ConnOpened, Published, Delivered...).
func WithTransport(ctx context.Context, transport string) context.Context {
	return context.WithValue(ctx, transportKey{}, transport)
}

// TransportOf returns the transport in ctx, TransportOther when none.
func TransportOf(ctx context.Context) string {
	if t, ok := ctx.Value(transportKey{}).(string); ok {
		return t
	}
	return TransportOther
}

// ConnOpened counts a long-lived request of ctx's transport as open and
// returns the function that counts it closed (call it once).
func (m *Metrics) ConnOpened(ctx context.Context) (closed func()) {
	if m == nil {
		return func() {}
	}
	g := m.connsOpen.WithLabelValues(TransportOf(ctx))
	g.Inc()
	return g.Dec
}

// ConnRefused counts a long-lived request refused at admission.
func (m *Metrics) ConnRefused(ctx context.Context, reason string) {
	if m == nil {
		return
	}
	m.connsRefused.WithLabelValues(TransportOf(ctx), reason).Inc()
}

// SubOpened counts a subscription of ctx's transport as open and returns
// the function that counts it closed (call it once).
func (m *Metrics) SubOpened(ctx context.Context) (closed func()) {
	if m == nil {
		return func() {}
	}
	g := m.subsOpen.WithLabelValues(TransportOf(ctx))
	g.Inc()
	return g.Dec
}

// SubEnded counts a subscription the server ended, by reason.
func (m *Metrics) SubEnded(reason string) {
	if m == nil {
		return
	}
	m.subsEnded.WithLabelValues(reason).Inc()
}

// Published counts n events with result.
func (m *Metrics) Published(result string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.published.WithLabelValues(result).Add(float64(n))
}

// PublishDone observes a publish acknowledged after d, by ctx's transport.
func (m *Metrics) PublishDone(ctx context.Context, d time.Duration) {
	if m == nil {
		return
	}
	m.publishSeconds.WithLabelValues(TransportOf(ctx)).Observe(d.Seconds())
}

// Lag returns the delivery lag observer of one transport, so that a stream
// looks the label up once.
func (m *Metrics) Lag(transport string) Observer {
	if m == nil {
		return Observer{}
	}
	return Observer{m.deliveryLag, m.deliveryLag.shard(transport)}
}

// Observer observes the delivery lag of events on one transport. The zero
// Observer records nothing.
type Observer struct {
	h *lagHistogram
	s *lagShard
}

// Delivered observes an event created at created and written now.
func (o Observer) Delivered(created time.Time) {
	if o.s == nil || created.IsZero() {
		return
	}
	o.s.observe(o.h.bounds, time.Since(created))
}

// DeliveredAt is Delivered for an event written at now, so that a batch of
// writes reads the clock once.
func (o Observer) DeliveredAt(created, now time.Time) {
	if o.s == nil || created.IsZero() {
		return
	}
	o.s.observe(o.h.bounds, now.Sub(created))
}

// Enabled reports whether the observer records.
func (o Observer) Enabled() bool { return o.s != nil }

// Batch observes one writer statement of n events that took d.
func (m *Metrics) Batch(n int, d time.Duration) {
	if m == nil {
		return
	}
	m.batchSize.Observe(float64(n))
	m.commitSeconds.Observe(d.Seconds())
}

// Wakeup counts a read of the log by the hub, and how many events it found.
func (m *Metrics) Wakeup(cause string, found int) {
	if m == nil {
		return
	}
	m.wakeups.WithLabelValues(cause).Inc()
	if found > 0 {
		m.dispatched.Add(float64(found))
		if cause == WakePoll {
			m.pollsFound.Inc()
		}
	}
}

// ListenReconnect counts a lost LISTEN connection.
func (m *Metrics) ListenReconnect() {
	if m == nil {
		return
	}
	m.listenReconn.Inc()
}

// Sources of a replay (the source label of replays_total).
const (
	ReplayWindow = "window" // served from the hub's window of recent entries
	ReplayLog    = "log"    // read from the event log
)

// Replay counts a replay from source (ReplayWindow or ReplayLog) that
// delivered n events so far (call it once per page: first reports the
// replay itself).
func (m *Metrics) Replay(source string, first bool, n int) {
	if m == nil {
		return
	}
	if first {
		m.replays.WithLabelValues(source).Inc()
	}
	m.replayed.Add(float64(n))
}

// Truncated counts a replay that found part of its history removed
// (retention or deletion): the subscriber is told, not ended.
func (m *Metrics) Truncated() {
	if m == nil {
		return
	}
	m.truncated.Inc()
}

// Trim counts a retention run that removed n events.
func (m *Metrics) Trim(n int64) {
	if m == nil {
		return
	}
	m.trims.Inc()
	m.trimmed.Add(float64(n))
}

// AuthFailure counts a refused credential of kind.
func (m *Metrics) AuthFailure(kind string) {
	if m == nil {
		return
	}
	m.authFailures.WithLabelValues(kind).Inc()
}

// Probe records what the readiness probe saw: the log's head, how far
// behind it the hub was, and whether the instance is ready.
func (m *Metrics) Probe(logHead, lag int64, ready bool) {
	if m == nil {
		return
	}
	if logHead >= 0 {
		m.dbHead.Set(float64(logHead))
		m.hubLag.Set(float64(max(lag, 0)))
	}
	if ready {
		m.ready.Set(1)
	} else {
		m.ready.Set(0)
	}
}

// Hist is a cumulative histogram read from the registry.
type Hist struct {
	Bounds []float64
	Counts []uint64 // Counts[i] observations <= Bounds[i]
	Count  uint64
	Sum    float64
}

// Snapshot is what the admin API shows of the metrics.
type Snapshot struct {
	Connections   map[string]int64 // open, by transport
	Subscriptions map[string]int64
	Published     uint64 // events committed (ok)
	Delivered     uint64 // events written to subscribers, every transport
	Lag           Hist   // delivery lag, every transport
	Batch         Hist   // writer batch sizes
	QueueDepth    int64
}

// Snapshot reads the current values.
func (m *Metrics) Snapshot() (Snapshot, error) {
	s := Snapshot{Connections: map[string]int64{}, Subscriptions: map[string]int64{}}
	if m == nil {
		return s, nil
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		return s, err
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			label := ""
			for _, lp := range mt.GetLabel() {
				label = lp.GetValue()
			}
			switch mf.GetName() {
			case Namespace + "_connections_open":
				s.Connections[label] = int64(mt.GetGauge().GetValue())
			case Namespace + "_subscriptions_open":
				s.Subscriptions[label] = int64(mt.GetGauge().GetValue())
			case Namespace + "_events_published_total":
				if label == ResultOK {
					s.Published = uint64(mt.GetCounter().GetValue())
				}
			case Namespace + "_writer_queue_depth":
				s.QueueDepth = int64(mt.GetGauge().GetValue())
			case Namespace + "_delivery_lag_seconds":
				s.Lag.add(mt.GetHistogram())
				s.Delivered = s.Lag.Count
			case Namespace + "_writer_batch_events":
				s.Batch.add(mt.GetHistogram())
			}
		}
	}
	return s, nil
}

// add sums h into the histogram (every label set has the same buckets).
func (h *Hist) add(p interface {
	GetSampleCount() uint64
	GetSampleSum() float64
	GetBucket() []*dto.Bucket
}) {
	bs := p.GetBucket()
	if h.Bounds == nil {
		h.Bounds = make([]float64, len(bs))
		h.Counts = make([]uint64, len(bs))
		for i, b := range bs {
			h.Bounds[i] = b.GetUpperBound()
		}
	}
	for i, b := range bs {
		if i < len(h.Counts) {
			h.Counts[i] += b.GetCumulativeCount()
		}
	}
	h.Count += p.GetSampleCount()
	h.Sum += p.GetSampleSum()
}
