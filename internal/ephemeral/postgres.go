package ephemeral

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ListenerApplicationName is the application_name of the signal listener's
// connection (pg_stat_activity).
const ListenerApplicationName = "herald-signals"

// ChannelSuffix is appended to the event log's notify channel to name the
// channel signals, joins and leaves travel on.
const ChannelSuffix = "_sig"

// Postgres carries signals and presence between the instances on one
// database. Create it with NewPostgres; Run listens.
type Postgres struct {
	pool     *pgxpool.Pool
	listen   *pgx.ConnConfig
	channel  string
	instance string
	deliver  func(Message)
	logger   *slog.Logger
	relisten func()

	listening atomic.Bool
	signals   chan signalReq // Send -> the sender (Run), which batches them
}

// signalReq is one Send waiting for its notification to be queued.
type signalReq struct {
	payload string
	done    chan error
}

// Signals sent while others are being notified go out together, in one
// statement and transaction (up to signalBatch): NOTIFY takes a
// database-wide lock at commit, so fewer, larger transactions interfere
// less with the event log's own notifications.
const (
	signalBatch = 256
	signalQueue = 4096
)

// PostgresOptions configure a Postgres.
type PostgresOptions struct {
	// NotifyChannel is the channel messages travel on (the event log's +
	// ChannelSuffix).
	NotifyChannel string
	// Instance is this instance's id in herald_instances: the owner of the
	// presence rows it writes.
	Instance string
	// ListenURL, when set, is where the listener connects instead of the
	// pool's database (a direct connection past a transaction pooler).
	ListenURL string
	Logger    *slog.Logger
	// Relistened is called after the listener is back from a lost
	// connection: the joins and leaves sent meanwhile were missed, so
	// whoever holds a view of presence sets must rebuild it.
	Relistened func()
}

// NewPostgres returns a Postgres over pool that hands every message it
// hears to deliver. It starts nothing.
func NewPostgres(pool *pgxpool.Pool, opts PostgresOptions, deliver func(Message)) (*Postgres, error) {
	cfg := pool.Config().ConnConfig.Copy()
	if opts.ListenURL != "" {
		var err error
		if cfg, err = pgx.ParseConfig(opts.ListenURL); err != nil {
			return nil, fmt.Errorf("listen database URL: %w", err)
		}
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Postgres{pool: pool, listen: cfg, channel: opts.NotifyChannel, instance: opts.Instance, deliver: deliver, logger: opts.Logger, relisten: opts.Relistened,
		signals: make(chan signalReq, signalQueue)}, nil
}

// Send notifies every instance of a signal, and returns once PostgreSQL
// has queued the notification. It takes no lock of the event log and
// writes nothing but the notification; the commit does not wait for the
// WAL. Signals sent concurrently share a statement. Run must be running.
func (p *Postgres) Send(ctx context.Context, m Message) error {
	payload, err := encode(m)
	if err != nil {
		return err
	}
	r := signalReq{payload: payload, done: make(chan error, 1)}
	select {
	case p.signals <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send notifies batches of queued signals until ctx ends.
func (p *Postgres) send(ctx context.Context) {
	batch := make([]signalReq, 0, signalBatch)
	payloads := make([]string, 0, signalBatch)
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case r := <-p.signals:
					r.done <- ctx.Err()
				default:
					return
				}
			}
		case r := <-p.signals:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < signalBatch {
			select {
			case r := <-p.signals:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		payloads = payloads[:0]
		for _, r := range batch {
			payloads = append(payloads, r.payload)
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := p.pool.Exec(sctx, `SELECT set_config('synchronous_commit', 'off', true), count(pg_notify($1, x)) FROM unnest($2::text[]) AS x`, p.channel, payloads)
		cancel()
		if err != nil {
			err = fmt.Errorf("send signal: %w", err)
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// Join adds mem to channel's presence set and announces it, in one
// statement.
func (p *Postgres) Join(ctx context.Context, channel string, mem Member) error {
	payload, err := encode(Message{Kind: Join, Channel: channel, Member: mem})
	if err != nil {
		return err
	}
	_, err = p.pool.Exec(ctx, `
WITH ins AS (
  INSERT INTO herald_presence (channel, client_id, user_name, info, instance, joined_at)
  VALUES ($1, $2, $3, $4, $5, to_timestamp($6::float8 / 1e6))
  ON CONFLICT DO NOTHING RETURNING 1)
SELECT pg_notify($7, $8) FROM ins`,
		channel, mem.ClientID, mem.User, mem.Info, p.instance, mem.JoinMicros, p.channel, payload)
	if err != nil {
		return fmt.Errorf("join presence of %q: %w", channel, err)
	}
	return nil
}

// leaveJSON builds a leave's payload from a deleted row (del), in SQL, as
// encode would.
const leaveJSON = `json_build_object('k', 3, 'c', del.channel, 'm', json_build_object(
  'id', del.client_id, 'u', del.user_name, 'i', del.info,
  'j', (extract(epoch FROM del.joined_at) * 1000000)::bigint))::text`

// Leave removes a member and announces it when this call removed it.
func (p *Postgres) Leave(ctx context.Context, channel, clientID string) error {
	_, err := p.pool.Exec(ctx, `
WITH del AS (DELETE FROM herald_presence WHERE channel = $1 AND client_id = $2 RETURNING *)
SELECT pg_notify($3, `+leaveJSON+`) FROM del`, channel, clientID, p.channel)
	if err != nil {
		return fmt.Errorf("leave presence of %q: %w", channel, err)
	}
	return nil
}

// Reap removes the members of instances whose last heartbeat is older than
// stale (dead instances), announcing each leave, and returns how many it
// removed. Rows younger than stale are kept: their instance may not have
// sent its first heartbeat yet. Safe to run on every instance at once: a
// row is deleted, and its leave sent, once.
func (p *Postgres) Reap(ctx context.Context, stale time.Duration) (int64, error) {
	var n int64
	err := p.pool.QueryRow(ctx, `
WITH del AS (
  DELETE FROM herald_presence p
  WHERE p.joined_at < now() - $1::interval
    AND NOT EXISTS (SELECT 1 FROM herald_instances i WHERE i.id = p.instance AND i.heartbeat_at > now() - $1::interval)
  RETURNING p.*)
SELECT count(pg_notify($2, `+leaveJSON+`)) FROM del`, stale, p.channel).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("reap presence: %w", err)
	}
	return n, nil
}

// LeaveInstance removes every member of this instance, announcing each
// leave (a graceful stop whose subscriptions did not all leave).
func (p *Postgres) LeaveInstance(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, `
WITH del AS (DELETE FROM herald_presence WHERE instance = $1 RETURNING *)
SELECT count(pg_notify($2, `+leaveJSON+`)) FROM del`, p.instance, p.channel)
	return err
}

// Members returns up to limit members of channel with a client id after
// after, in client id order, and the size of the set.
func (p *Postgres) Members(ctx context.Context, channel, after string, limit int) (Page, error) {
	var pg Page
	if err := p.pool.QueryRow(ctx, `SELECT count(*) FROM herald_presence WHERE channel = $1`, channel).Scan(&pg.Count); err != nil {
		return pg, fmt.Errorf("read presence of %q: %w", channel, err)
	}
	rows, err := p.pool.Query(ctx, `
SELECT client_id, user_name, info, (extract(epoch FROM joined_at) * 1000000)::bigint
FROM herald_presence WHERE channel = $1 AND client_id > $2 ORDER BY client_id LIMIT $3`, channel, after, limit+1)
	if err != nil {
		return pg, fmt.Errorf("read presence of %q: %w", channel, err)
	}
	defer rows.Close()
	for rows.Next() {
		var m Member
		if err := rows.Scan(&m.ClientID, &m.User, &m.Info, &m.JoinMicros); err != nil {
			return pg, fmt.Errorf("read presence of %q: %w", channel, err)
		}
		pg.Members = append(pg.Members, m)
	}
	if err := rows.Err(); err != nil {
		return pg, fmt.Errorf("read presence of %q: %w", channel, err)
	}
	if len(pg.Members) > limit {
		pg.Members, pg.More = pg.Members[:limit], true
	}
	return pg, nil
}

// Listening reports whether the listener is connected and listening: an
// instance whose listener is not misses other instances' signals, joins
// and leaves (readiness says so).
func (p *Postgres) Listening() bool { return p.listening.Load() }

// Run sends the queued signals and listens for messages on a dedicated
// connection and delivers them until ctx ends, reconnecting with backoff. Messages sent while it is
// disconnected are lost (signals are ephemeral; see the README for what
// that means for presence).
func (p *Postgres) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { defer close(done); p.send(ctx) }()
	defer func() { <-done }()
	listen := "LISTEN " + pgx.Identifier{p.channel}.Sanitize()
	backoff := 50 * time.Millisecond
	first := true
	for {
		err := p.listenOnce(ctx, listen, func() {
			backoff = 50 * time.Millisecond
			p.listening.Store(true)
			if !first && p.relisten != nil {
				p.relisten()
			}
			first = false
		})
		p.listening.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		d := backoff/2 + rand.N(backoff/2+1)
		p.logger.Warn("ephemeral: signal listener lost its connection; reconnecting", "channel", p.channel, "retry_in", d, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (p *Postgres) listenOnce(ctx context.Context, listen string, listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, p.listen)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, listen); err != nil {
		return err
	}
	listening()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		m, err := decode(n.Payload)
		if err != nil {
			p.logger.Warn("ephemeral: undecodable notification dropped", "err", err)
			continue
		}
		p.deliver(m)
	}
}
