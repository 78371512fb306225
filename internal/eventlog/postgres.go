package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/heraldrt/herald/internal/metrics"
)

// batchSpan starts the span of one batch when any of its publishes is
// traced: a child of the first traced publish (so that a publish shows as
// one trace down to the commit), linked to every traced publish it
// carries. Otherwise it returns ctx and a no-op span.
func batchSpan(ctx context.Context, batch []*appendReq, n int) (context.Context, trace.Span) {
	var (
		first trace.Span
		links []trace.Link
	)
	for _, r := range batch {
		if r.span == nil {
			continue
		}
		if first == nil {
			first = r.span
		}
		links = append(links, trace.Link{SpanContext: r.span.SpanContext()})
	}
	if first == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	ctx = trace.ContextWithSpanContext(ctx, first.SpanContext())
	return first.TracerProvider().Tracer("github.com/heraldrt/herald").Start(ctx, "herald.writer.batch",
		trace.WithLinks(links...), trace.WithAttributes(attribute.Int("herald.batch.events", n), attribute.Int("herald.batch.publishes", len(batch))))
}

// Defaults of PostgresOptions.
const (
	DefaultNotifyChannel = "herald_events"
	DefaultMaxBatch      = 500
	DefaultMaxBatchBytes = 1 << 20
	DefaultQueueSize     = 4096
	DefaultQueueBytes    = 64 << 20
)

// writeTimeout bounds one batch (or edit) statement, so that a hung
// database fails publishes with ErrUnavailable instead of holding them.
const writeTimeout = 30 * time.Second

// PostgresOptions configure a Postgres log. Zero values take the defaults.
type PostgresOptions struct {
	Options
	// NotifyChannel is the LISTEN/NOTIFY channel that carries wake-ups
	// between instances. Default DefaultNotifyChannel; every instance on a
	// database must use the same one (tests use a unique one each).
	NotifyChannel string
	// MaxBatch is the most events one publish statement carries (a single
	// Append larger than this still goes in one statement). Default 500; 1
	// makes one transaction per event (the unbatched baseline).
	MaxBatch int
	// MaxBatchBytes bounds the payload bytes of one statement the same way.
	// Default 1 MiB.
	MaxBatchBytes int
	// QueueSize bounds how many Append calls wait for the writer; when it is
	// full Append blocks until there is room or its ctx ends. Default 4096.
	QueueSize int
	// QueueBytes bounds the bytes of the Append calls waiting for the
	// writer (their events' data and strings), so that large events cannot
	// make QueueSize of them a memory problem; Append waits for room like
	// for a slot. A call larger than QueueBytes waits for the whole of it.
	// Default DefaultQueueBytes.
	QueueBytes int
	// Logger receives the listener's reconnects and failed notifications.
	// Default slog.Default().
	Logger *slog.Logger
	// ListenURL, when set, is where Watch opens its LISTEN connection
	// instead of the pool's database: a direct (session) connection when
	// the pool goes through a pooler in transaction mode (PgBouncer),
	// where LISTEN does not work.
	ListenURL string
	// Metrics receives the writer's batches and the listener's reconnects;
	// nil records nothing.
	Metrics *metrics.Metrics
	// OutboxPoll is the longest an idle writer waits before it looks at
	// the outbox again (see postgres_outbox.go). Default DefaultOutboxPoll.
	OutboxPoll time.Duration
}

func (o *PostgresOptions) defaults() {
	if o.NotifyChannel == "" {
		o.NotifyChannel = DefaultNotifyChannel
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.OutboxPoll <= 0 {
		o.OutboxPoll = DefaultOutboxPoll
	}
}

// Postgres is the durable event log on PostgreSQL; see doc.go for how it
// works and what runs concurrently. All methods are safe for concurrent use.
// Append needs Run to be running.
type Postgres struct {
	pool *pgxpool.Pool
	opts PostgresOptions

	queue      chan *appendReq
	queueBytes *semaphore.Weighted // bytes of queued appends, bounded by QueueBytes
	started    atomic.Bool
	// closed is closed when Run's writer has stopped: queued and later
	// appends fail with ErrClosed.
	closed chan struct{}
	// outboxWake asks an idle writer to drain the outbox now (a
	// notification arrived); buffered, one pending wake-up is enough.
	outboxWake chan struct{}
	// drainFailing: the last drain failed (owned by the writer).
	drainFailing bool
	// seqs is what the writer remembers of each channel's last seq (owned
	// by the writer; see 0009_seq_cache.sql).
	seqs seqCache
}

// seqCache is the writer's memory of each channel's last seq as of the
// newest entry it wrote (lastID), passed with every batch so that
// herald_publish need not look channels up (0009_seq_cache.sql). The
// database checks that lastID is still the newest entry of the log and
// says whether it used the seqs; when it did not, everything remembered is
// forgotten. Any failure forgets too: a batch whose outcome is unknown
// must not leave stale seqs behind.
type seqCache struct {
	last   map[string]int64
	bytes  int // what last holds, counted as seqCacheEntryBytes per channel
	lastID int64
}

// seqCacheMaxBytes bounds what the writer remembers (about 100,000 channels
// of 20-byte names, 35,000 of the longest): past it, it starts over, and
// those channels are looked up again, once each.
const (
	seqCacheMaxBytes   = 8 << 20
	seqCacheEntryBytes = 64 // map entry, string header and seq, beside the name
)

// args returns, for each of ps, the remembered last seq of its channel
// (nil when unknown), and the newest position the writer wrote.
func (c *seqCache) args(ps []*Publish) ([]*int64, int64) {
	out := make([]*int64, len(ps))
	if c.lastID == 0 {
		return out, 0
	}
	for i, in := range ps {
		if s, ok := c.last[in.Channel]; ok {
			out[i] = &s
		}
	}
	return out, c.lastID
}

// forget drops everything remembered.
func (c *seqCache) forget() {
	c.last = nil // clear would keep the map's buckets at their largest
	c.bytes = 0
	c.lastID = 0
}

// learn records a committed batch: cached says whether the database used
// the remembered seqs, res and errs are the batch's answers, maxID the
// newest position the batch wrote.
func (c *seqCache) learn(cached bool, res []Published, errs []error, maxID int64) {
	if !cached || c.bytes >= seqCacheMaxBytes {
		c.forget()
	}
	if maxID == 0 {
		// Nothing written: if the seqs were used they still hold (the
		// database checked), and if not, they are forgotten.
		return
	}
	if c.last == nil {
		c.last = map[string]int64{}
	}
	for i := range res {
		if errs[i] == nil && !res[i].Duplicate && res[i].Event.Seq > 0 {
			ch := res[i].Event.Channel
			old, ok := c.last[ch]
			if !ok {
				c.bytes += len(ch) + seqCacheEntryBytes
			}
			c.last[ch] = max(old, res[i].Event.Seq)
		}
	}
	c.lastID = maxID
}

var _ Log = (*Postgres)(nil)

// OpenPostgres returns a log on pool, whose schema must be migrated
// (migrations.Up). It starts no goroutines: call Run for the writer.
func OpenPostgres(pool *pgxpool.Pool, opts PostgresOptions) *Postgres {
	opts.defaults()
	return &Postgres{
		pool:       pool,
		opts:       opts,
		queue:      make(chan *appendReq, opts.QueueSize),
		queueBytes: semaphore.NewWeighted(int64(opts.QueueBytes)),
		closed:     make(chan struct{}),
		outboxWake: make(chan struct{}, 1),
	}
}

// Request states: queued until the writer takes it or the caller gives up,
// whichever comes first.
const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

type appendReq struct {
	ps      []Publish
	digests [][]byte // dataSum of each keyed input's data, nil for the others
	bytes   int
	span    trace.Span // the caller's span (for the batch's parent and links); nil when not recording
	state   atomic.Int32
	done    chan appendResult // buffered: the writer never waits for the caller
}

type appendResult struct {
	res  []Published
	errs []error
	err  error
}

func (r *appendReq) take() bool    { return r.state.CompareAndSwap(reqQueued, reqTaken) }
func (r *appendReq) abandon() bool { return r.state.CompareAndSwap(reqQueued, reqAbandoned) }

// Append queues ps for the writer and waits until they are committed. If
// ctx ends before the writer takes them, nothing is written and ctx.Err()
// is returned; once taken they are written even if the caller has left, so
// ps (and their Data) must not be modified after Append returns early with
// ctx.Err(). The Data of returned new events is the caller's slice.
func (p *Postgres) Append(ctx context.Context, ps []Publish) ([]Published, []error, error) {
	if len(ps) == 0 {
		return []Published{}, []error{}, nil
	}
	select {
	case <-p.closed:
		return nil, nil, fmt.Errorf("append: %w", ErrClosed)
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	r := &appendReq{ps: ps, digests: make([][]byte, len(ps)), done: make(chan appendResult, 1)}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		r.span = span
	}
	for i := range ps {
		r.bytes += publishBytes(&ps[i])
		if ps[i].IdempotencyKey != "" {
			// Hashed here, in the caller's goroutine: not by the one writer,
			// nor by the database under the write lock.
			sum := dataSum(ps[i].Data)
			r.digests[i] = sum[:]
		}
	}
	// Room in bytes first (released when Append returns: the writer then
	// holds at most its batch beyond the queue).
	n := int64(min(r.bytes, p.opts.QueueBytes))
	if err := p.queueBytes.Acquire(ctx, n); err != nil {
		return nil, nil, err
	}
	defer p.queueBytes.Release(n)
	select {
	case p.queue <- r:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-p.closed:
		return nil, nil, fmt.Errorf("append: %w", ErrClosed)
	}
	select {
	case out := <-r.done:
		return out.res, out.errs, out.err
	case <-ctx.Done():
		// Taken already: the writer goes on and drops the answer.
		r.abandon()
		return nil, nil, ctx.Err()
	case <-p.closed:
		if r.abandon() {
			return nil, nil, fmt.Errorf("append: %w", ErrClosed)
		}
		// Taken by the writer or by Run's drain: either answers.
		select {
		case out := <-r.done:
			return out.res, out.errs, out.err
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// QueueDepth returns how many appends wait for the writer.
func (p *Postgres) QueueDepth() int { return len(p.queue) }

func publishBytes(p *Publish) int {
	return len(p.Channel) + len(p.Type) + len(p.Data) + len(p.IdempotencyKey) + len(p.Author) + 16
}

// Run runs the batching writer until ctx ends. The batch being written then
// is finished (its callers get their results); appends still queued fail
// with ErrClosed. Run may be called once.
func (p *Postgres) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("eventlog: Postgres.Run called twice")
	}
	var carry *appendReq // taken, did not fit the previous batch
	defer func() {
		close(p.closed)
		if carry != nil {
			carry.done <- appendResult{err: fmt.Errorf("append: %w", ErrClosed)}
		}
		p.drain()
	}()
	batch := make([]*appendReq, 0, 64)
	poll := newOutboxPoll(p.opts.OutboxPoll)
	defer poll.stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		batch = batch[:0]
		if carry != nil {
			batch = append(batch, carry)
			carry = nil
		} else {
			select {
			case <-ctx.Done():
				return nil
			case r := <-p.queue:
				if !r.take() {
					continue
				}
				batch = append(batch, r)
			case <-poll.c():
				poll.after(p.writeBatch(ctx, nil, 0), p.opts.MaxBatch)
				continue
			case <-p.outboxWake:
				poll.after(p.writeBatch(ctx, nil, 0), p.opts.MaxBatch)
				continue
			}
		}
		n, size := len(batch[0].ps), batch[0].bytes
	gather:
		for n < p.opts.MaxBatch && size < p.opts.MaxBatchBytes {
			select {
			case r := <-p.queue:
				if !r.take() {
					continue
				}
				if n+len(r.ps) > p.opts.MaxBatch || size+r.bytes > p.opts.MaxBatchBytes {
					carry = r
					break gather
				}
				batch = append(batch, r)
				n += len(r.ps)
				size += r.bytes
			default:
				break gather
			}
		}
		poll.after(p.writeBatch(ctx, batch, n), p.opts.MaxBatch)
	}
}

// drain fails the appends left in the queue once Run has stopped.
func (p *Postgres) drain() {
	for {
		select {
		case r := <-p.queue:
			if r.take() {
				r.done <- appendResult{err: fmt.Errorf("append: %w", ErrClosed)}
			}
		default:
			return
		}
	}
}

// publishSQL appends one batch: see herald_publish in migrations (the
// overload with tags, 0007_seq_tags.sql, which also numbers the batch's
// events per channel, and with the writer's remembered seqs,
// 0009_seq_cache.sql).
const publishSQL = `SELECT ord, status, id, created_at, type, data, updated_at, deleted, dup_of, size_limit, author, format, seq, tags, seq_cached
FROM herald_publish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`

// Statuses returned by herald_publish.
const (
	pubInserted      = 0
	pubDuplicate     = 1
	pubNoChannel     = 2
	pubTooLarge      = 3
	pubConflict      = 4
	editDone         = 0
	editNotFound     = 1
	editNotEditable  = 2
	editTooLarge     = 3
	trimBatchEntries = 10000
)

// writeBatch drains the outbox and writes the n events of batch after the
// drained ones, in one transaction (a pipelined pgx batch: one round trip),
// and answers every request. With no requests it only drains. It finishes
// even when ctx has ended, so that no taken append is left without an
// answer. It returns how many outbox rows it drained.
func (p *Postgres) writeBatch(ctx context.Context, batch []*appendReq, n int) int {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	wctx, span := batchSpan(wctx, batch, n)
	defer span.End()

	ps := make([]*Publish, 0, n)
	digests := make([][]byte, 0, n)
	for _, r := range batch {
		for i := range r.ps {
			ps = append(ps, &r.ps[i])
		}
		digests = append(digests, r.digests...)
	}
	res := make([]Published, n)
	errs := make([]error, n)
	start := time.Now()
	maxID, drained, err := p.publish(wctx, ps, digests, res, errs)
	if err != nil && pgconn.SafeToRetry(err) {
		// Nothing reached the server (typically a pooled connection that
		// died with a database restart): one more try cannot write twice.
		clear(res)
		clear(errs)
		maxID, drained, err = p.publish(wctx, ps, digests, res, errs)
	}
	if n+drained.rows > 0 {
		// An idle drain that found nothing is not a batch.
		p.opts.Metrics.Batch(n+drained.rows, time.Since(start))
	}
	p.outboxStatus(drained, err)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		err = p.dbErr("append", err)
		for _, r := range batch {
			r.done <- appendResult{err: err}
		}
		return 0
	}
	off := 0
	for _, r := range batch {
		k := len(r.ps)
		r.done <- appendResult{res: res[off : off+k : off+k], errs: errs[off : off+k : off+k]}
		off += k
	}
	if m := max(maxID, drained.maxID); m > 0 {
		p.notify(wctx, m)
	}
	return drained.rows
}

// publish drains the outbox, then runs herald_publish for ps (with the
// digests of their data, see appendReq) and fills res and errs (in input
// order), all in one implicit transaction. It returns the highest position
// herald_publish wrote (0 if none) and what the drain did. Every result is
// read and the batch closed before returning: the transaction has
// committed only when that succeeded.
func (p *Postgres) publish(ctx context.Context, ps []*Publish, digests [][]byte, res []Published, errs []error) (int64, drainResult, error) {
	b := &pgx.Batch{}
	queueDrain(b, p.opts.MaxBatch, p.opts.AutoCreate)
	if len(ps) > 0 {
		channels := make([]string, len(ps))
		types := make([]string, len(ps))
		data := make([][]byte, len(ps))
		keys := make([]string, len(ps))
		authors := make([]string, len(ps))
		formats := make([]int16, len(ps))
		tags := make([]*string, len(ps))
		for i, in := range ps {
			if len(in.Tags) > 0 {
				t, err := json.Marshal(in.Tags)
				if err != nil {
					return 0, drainResult{}, fmt.Errorf("%w: tags: %v", errInternal, err)
				}
				ts := string(t)
				tags[i] = &ts
			}
			channels[i], types[i], keys[i], authors[i] = in.Channel, in.Type, in.IdempotencyKey, in.Author
			formats[i] = int16(in.Format)
			data[i] = in.Data
			if data[i] == nil {
				data[i] = []byte{} // NULL in a bytea[] is coalesced anyway; send what we store
			}
		}
		lastSeqs, lastID := p.seqs.args(ps)
		b.Queue(publishSQL, channels, types, data, keys, authors, digests, formats, tags, lastSeqs, lastID, p.opts.AutoCreate)
	}
	br := p.pool.SendBatch(ctx, b)
	defer br.Close()
	drained, err := readDrain(br)
	if err != nil {
		p.seqs.forget()
		return 0, drainResult{}, err
	}
	var (
		maxID  int64
		cached bool
	)
	if len(ps) > 0 {
		if maxID, cached, err = p.readPublish(br, ps, res, errs); err != nil {
			p.seqs.forget()
			return 0, drainResult{}, err
		}
	}
	if err := br.Close(); err != nil {
		p.seqs.forget()
		return 0, drainResult{}, err
	}
	if len(ps) > 0 {
		p.seqs.learn(cached, res, errs, maxID)
	}
	return maxID, drained, nil
}

// readPublish reads herald_publish's rows for ps into res and errs and
// returns the highest position written and whether the remembered seqs
// were used.
func (p *Postgres) readPublish(br pgx.BatchResults, ps []*Publish, res []Published, errs []error) (int64, bool, error) {
	rows, err := br.Query()
	if err != nil {
		return 0, false, err
	}
	defer rows.Close()
	var (
		maxID  int64
		seen   int
		cached bool
	)
	for rows.Next() {
		var (
			ord       int64
			status    int16
			id        *int64
			createdAt *time.Time
			typ       *string
			d         []byte
			updatedAt *time.Time
			deleted   *bool
			dupOf     *int64
			limit     *int32
			author    *string
			format    *int16
			seq       *int64
			tags      []byte
		)
		if err := rows.Scan(&ord, &status, &id, &createdAt, &typ, &d, &updatedAt, &deleted, &dupOf, &limit, &author, &format, &seq, &tags, &cached); err != nil {
			return 0, false, err
		}
		i := int(ord - 1)
		if i < 0 || i >= len(ps) {
			return 0, false, fmt.Errorf("%w: herald_publish returned ord %d for %d inputs", errInternal, ord, len(ps))
		}
		seen++
		in := ps[i]
		switch status {
		case pubInserted:
			res[i] = Published{Event: Event{
				Position:       deref(id),
				Channel:        in.Channel,
				Type:           in.Type,
				Data:           nonEmpty(in.Data),
				Kind:           KindPublished,
				IdempotencyKey: in.IdempotencyKey,
				CreatedAt:      deref(createdAt),
				Author:         in.Author,
				Format:         in.Format,
				Seq:            deref(seq),
				Tags:           nonEmptyTags(in.Tags),
			}}
			maxID = max(maxID, deref(id))
		case pubDuplicate:
			if dupOf != nil {
				j := int(*dupOf - 1)
				if j < 0 || j >= i {
					return 0, false, fmt.Errorf("%w: herald_publish returned dup_of %d for ord %d", errInternal, *dupOf, ord)
				}
				res[i] = Published{Event: res[j].Event, Duplicate: true}
				break
			}
			res[i] = Published{Event: Event{
				Position:       deref(id),
				Channel:        in.Channel,
				Type:           deref(typ),
				Data:           nonEmpty(d),
				Kind:           KindPublished,
				IdempotencyKey: in.IdempotencyKey,
				CreatedAt:      deref(createdAt),
				UpdatedAt:      deref(updatedAt),
				Deleted:        deref(deleted),
				Author:         deref(author),
				Format:         Format(deref(format)),
				Seq:            deref(seq),
			}, Duplicate: true}
			if res[i].Event.Tags, err = parseTags(tags); err != nil {
				return 0, false, err
			}
		case pubConflict:
			pos := deref(id)
			if dupOf != nil {
				j := int(*dupOf - 1)
				if j < 0 || j >= i {
					return 0, false, fmt.Errorf("%w: herald_publish returned dup_of %d for ord %d", errInternal, *dupOf, ord)
				}
				pos = res[j].Event.Position
			}
			errs[i] = fmt.Errorf("append to %q: %w", in.Channel,
				&IdempotencyConflictError{Key: in.IdempotencyKey, Channel: in.Channel, Position: pos})
		case pubNoChannel:
			if p.opts.AutoCreate && len(in.Data) > DefaultMaxEventSize {
				// Not created for an event it could not hold.
				errs[i] = fmt.Errorf("append to %q: %w", in.Channel,
					&TooLargeError{Size: len(in.Data), Limit: DefaultMaxEventSize})
				break
			}
			errs[i] = fmt.Errorf("append to %q: %w", in.Channel, ErrChannelNotFound)
		case pubTooLarge:
			errs[i] = fmt.Errorf("append to %q: %w", in.Channel,
				&TooLargeError{Size: len(in.Data), Limit: int(deref(limit))})
		default:
			return 0, false, fmt.Errorf("%w: herald_publish returned status %d", errInternal, status)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	if seen != len(ps) {
		return 0, false, fmt.Errorf("%w: herald_publish returned %d rows for %d inputs", errInternal, seen, len(ps))
	}
	return maxID, cached, nil
}

// notify wakes every instance's listener. It is a hint sent after the
// commit, outside the insert: a lost one only delays readers until their
// safety poll. Its own commit does not wait for the WAL
// (synchronous_commit off: a hint needs no durability), so the writer is
// not held by an fsync while it holds NOTIFY's database-wide commit lock,
// which signals (internal/ephemeral) take too.
func (p *Postgres) notify(ctx context.Context, pos int64) {
	if _, err := p.pool.Exec(ctx, "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)", p.opts.NotifyChannel, strconv.FormatInt(pos, 10)); err != nil {
		p.opts.Logger.Warn("eventlog: notify failed; readers catch up on their next poll",
			"channel", p.opts.NotifyChannel, "err", err)
	}
}

// dbErr wraps an error of the database for callers: connection-level
// failures (anything that is not an error reported by the server, including
// our own timeouts, or a server error saying it cannot serve now) wrap
// ErrUnavailable.
func (p *Postgres) dbErr(op string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// ctxErr is dbErr for calls made with the caller's ctx: when that ctx has
// ended, the failure is the caller's.
func (p *Postgres) ctxErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	return p.dbErr(op, err)
}

// errInternal marks a broken promise between this code and the SQL
// functions: never a reason to retry.
var errInternal = errors.New("eventlog internal error")

func unavailable(err error) bool {
	var scanErr pgx.ScanArgError
	if errors.Is(err, errInternal) || errors.As(err, &scanErr) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources
			"57": // operator intervention: shutdown, cannot connect now, canceled
			return true
		}
		switch pgErr.Code {
		case "40001", "40P01", "55P03": // serialization failure, deadlock, lock not available
			return true
		}
		return false
	}
	return true
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// nonEmpty returns nil for empty data, so that every event with no data
// looks the same whichever way it was read.
func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
