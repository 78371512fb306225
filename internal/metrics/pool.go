package metrics

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector exports pgxpool's own statistics, read at scrape time.
type poolCollector struct {
	pool  *pgxpool.Pool
	descs map[string]*prometheus.Desc
}

var poolStats = []struct{ name, help string }{
	{"acquired_connections", "Connections of the pool in use."},
	{"idle_connections", "Idle connections of the pool."},
	{"constructing_connections", "Connections of the pool being opened."},
	{"total_connections", "Connections of the pool (acquired, idle, opening)."},
	{"max_connections", "Most connections the pool may hold."},
	{"acquires_total", "Connections taken from the pool."},
	{"acquire_duration_seconds_total", "Time spent waiting for a connection from the pool."},
	{"empty_acquires_total", "Acquires that had to wait because no connection was idle."},
	{"canceled_acquires_total", "Acquires canceled by their context."},
	{"new_connections_total", "Connections the pool opened."},
	{"max_lifetime_destroys_total", "Connections closed for their age."},
	{"max_idle_destroys_total", "Connections closed for idling."},
}

// Pool registers the statistics of the PostgreSQL pool.
func (m *Metrics) Pool(pool *pgxpool.Pool) {
	if m == nil || pool == nil {
		return
	}
	c := &poolCollector{pool: pool, descs: map[string]*prometheus.Desc{}}
	for _, s := range poolStats {
		c.descs[s.name] = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "db_pool", s.name), s.help, nil, nil)
	}
	m.reg.MustRegister(c)
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	g := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v)
	}
	n := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, v)
	}
	g("acquired_connections", float64(s.AcquiredConns()))
	g("idle_connections", float64(s.IdleConns()))
	g("constructing_connections", float64(s.ConstructingConns()))
	g("total_connections", float64(s.TotalConns()))
	g("max_connections", float64(s.MaxConns()))
	n("acquires_total", float64(s.AcquireCount()))
	n("acquire_duration_seconds_total", s.AcquireDuration().Seconds())
	n("empty_acquires_total", float64(s.EmptyAcquireCount()))
	n("canceled_acquires_total", float64(s.CanceledAcquireCount()))
	n("new_connections_total", float64(s.NewConnsCount()))
	n("max_lifetime_destroys_total", float64(s.MaxLifetimeDestroyCount()))
	n("max_idle_destroys_total", float64(s.MaxIdleDestroyCount()))
}
