package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// limitArg is a LIMIT parameter: NULL (no limit) for n <= 0.
func limitArg(n int) *int {
	if n <= 0 {
		return nil
	}
	return &n
}

const eventColumns = `id, channel, kind, target, type, data, idempotency_key, created_at, updated_at, deleted, author, format, seq, tags`

// parseTags reads a tags column: NULL (nil) or a JSON object of strings.
func parseTags(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var t map[string]string
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: tags %s: %v", errInternal, b, err)
	}
	return nonEmptyTags(t), nil
}

// nonEmptyTags is t, or nil when it is empty.
func nonEmptyTags(t map[string]string) map[string]string {
	if len(t) == 0 {
		return nil
	}
	return t
}

func scanEvent(row pgx.Row) (Event, error) {
	var (
		ev        Event
		key       *string
		updatedAt *time.Time
		seq       *int64
		tags      []byte
	)
	if err := row.Scan(&ev.Position, &ev.Channel, &ev.Kind, &ev.Target, &ev.Type, &ev.Data,
		&key, &ev.CreatedAt, &updatedAt, &ev.Deleted, &ev.Author, &ev.Format, &seq, &tags); err != nil {
		return Event{}, err
	}
	ev.Seq = deref(seq)
	t, err := parseTags(tags)
	if err != nil {
		return Event{}, err
	}
	ev.Tags = t
	ev.IdempotencyKey = deref(key)
	ev.UpdatedAt = deref(updatedAt)
	ev.Data = nonEmpty(ev.Data)
	return ev, nil
}

func (p *Postgres) queryEvents(ctx context.Context, op, sql string, args ...any) ([]Event, error) {
	return p.queryEventsBounded(ctx, op, 0, sql, args...)
}

// queryEventsBounded is queryEvents that stops after the entry whose data
// brings the total to maxBytes (> 0): rows are streamed, so the rest is
// never held in memory.
func (p *Postgres) queryEventsBounded(ctx context.Context, op string, maxBytes int, sql string, args ...any) ([]Event, error) {
	rows, err := p.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, p.ctxErr(ctx, op, err)
	}
	defer rows.Close()
	var evs []Event
	total := 0
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return nil, p.ctxErr(ctx, op, err)
		}
		evs = append(evs, ev)
		if total += len(ev.Data); maxBytes > 0 && total >= maxBytes {
			rows.Close()
			return evs, nil
		}
	}
	if err := rows.Err(); err != nil {
		return nil, p.ctxErr(ctx, op, err)
	}
	if evs == nil {
		evs = []Event{}
	}
	return evs, nil
}

// Read returns entries with q.After < position <= q.UpTo of q.Channels, in
// position order; Limit <= 0 means no limit.
func (p *Postgres) Read(ctx context.Context, q Query) ([]Event, error) {
	if q.Channels != nil && len(q.Channels) == 0 {
		return []Event{}, nil
	}
	sql, args := readSQL(q)
	return p.queryEventsBounded(ctx, "read", q.MaxBytes, sql, args...)
}

// readSQL is Read's query for q (q.Channels nil or not empty).
func readSQL(q Query) (string, []any) {
	var (
		sql  strings.Builder
		args = []any{q.After, limitArg(q.Limit)}
	)
	upto := ""
	if q.UpTo > 0 {
		args = append(args, q.UpTo)
		upto = " AND id <= $" + strconv.Itoa(len(args))
	}
	if q.Channels == nil {
		sql.WriteString(`SELECT ` + eventColumns + ` FROM herald_events WHERE id > $1` + upto + ` ORDER BY id LIMIT $2`)
	} else {
		// One index range scan per channel on (channel, id), merged: a
		// filter "channel = ANY" on the primary key would walk every
		// channel's entries.
		args = append(args, dedupe(q.Channels))
		sql.WriteString(`SELECT e.* FROM unnest($` + strconv.Itoa(len(args)) + `::text[]) AS c(name)
CROSS JOIN LATERAL (
  SELECT ` + eventColumns + ` FROM herald_events
  WHERE channel = c.name AND id > $1` + upto + `
  ORDER BY id LIMIT $2
) e
ORDER BY e.id LIMIT $2`)
	}
	return sql.String(), args
}

func dedupe(names []string) []string {
	seen := make(map[string]struct{}, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if _, ok := seen[n]; !ok {
			seen[n] = struct{}{}
			out = append(out, n)
		}
	}
	return out
}

// Head returns the highest committed position (0 when the log is empty).
// Entries removed by retention or DeleteChannel still count (through the
// channels' truncated_through), so Head never goes back.
func (p *Postgres) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := p.pool.QueryRow(ctx, `SELECT greatest(
  (SELECT coalesce(max(id), 0) FROM herald_events),
  (SELECT coalesce(max(truncated_through), 0) FROM herald_channels))`).Scan(&head); err != nil {
		return 0, p.ctxErr(ctx, "read head", err)
	}
	return head, nil
}

// History returns a page of one channel's entries: ascending after
// q.Cursor, or descending before it with q.Backward; Limit <= 0 means no
// limit. An unknown channel has no entries.
func (p *Postgres) History(ctx context.Context, q HistoryQuery) (Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = math.MaxInt - 1
	}
	sql, args := historySQL(q)
	evs, err := p.queryEvents(ctx, fmt.Sprintf("history of %q", q.Channel), sql, args...)
	if err != nil {
		return Page{}, err
	}
	page := Page{Events: evs}
	if len(evs) > limit {
		page.Events, page.HasMore = evs[:limit], true
	}
	return page, nil
}

// historySQL is History's query for q: one more entry than q.Limit, which
// tells HasMore.
func historySQL(q HistoryQuery) (string, []any) {
	sql := `SELECT ` + eventColumns + ` FROM herald_events WHERE channel = $1`
	args := []any{q.Channel, limitArg(q.Limit + 1)} // one more tells HasMore
	if q.Limit <= 0 {
		args[1] = nil
	}
	if q.Backward {
		if q.Cursor > 0 {
			args = append(args, q.Cursor)
			sql += ` AND id < $3`
		}
	} else if q.FromSeq > 0 {
		// Within a channel seq grows with id: start at the newest entry
		// whose seq is at most FromSeq and 1 mod 64, found on the sparse
		// index (0009_seq_cache.sql), and go on by id, reading at most 63
		// entries before FromSeq.
		args = append(args, q.FromSeq)
		sql += ` AND seq >= $3 AND id >= coalesce((SELECT s.id FROM herald_events s
			WHERE s.channel = $1 AND s.seq % 64 = 1 AND s.seq <= $3 ORDER BY s.seq DESC LIMIT 1), 0)`
	} else {
		args = append(args, q.Cursor)
		sql += ` AND id > $3`
	}
	if q.CurrentOnly {
		sql += ` AND kind = 1 AND NOT deleted`
	}
	if q.Backward {
		sql += ` ORDER BY id DESC LIMIT $2`
	} else {
		sql += ` ORDER BY id LIMIT $2`
	}
	return sql, args
}

// Get returns the entry at pos of channel.
func (p *Postgres) Get(ctx context.Context, channel string, pos int64) (Event, error) {
	ev, err := scanEvent(p.pool.QueryRow(ctx,
		`SELECT `+eventColumns+` FROM herald_events WHERE id = $1 AND channel = $2`, pos, channel))
	if errors.Is(err, pgx.ErrNoRows) {
		return Event{}, fmt.Errorf("get %d of %q: %w", pos, channel, ErrEventNotFound)
	}
	if err != nil {
		return Event{}, p.ctxErr(ctx, fmt.Sprintf("get %d of %q", pos, channel), err)
	}
	return ev, nil
}

// Update replaces the data of the published event at pos and appends an
// Updated entry by author, in one transaction under the write lock.
func (p *Postgres) Update(ctx context.Context, channel string, pos int64, data []byte, format Format, author string) (Event, Event, error) {
	r, err := p.edit(ctx, channel, pos, false, data, format, author)
	if err != nil {
		return Event{}, Event{}, err
	}
	ev := Event{
		Position:       pos,
		Channel:        channel,
		Type:           r.typ,
		Data:           nonEmpty(data),
		Kind:           KindPublished,
		IdempotencyKey: r.key,
		CreatedAt:      r.evCreatedAt,
		UpdatedAt:      r.evUpdatedAt,
		Author:         r.evAuthor,
		Format:         r.evFormat,
		Seq:            r.evSeq,
		Tags:           r.tags,
	}
	entry := Event{
		Position:  r.entryID,
		Channel:   channel,
		Type:      r.typ,
		Data:      nonEmpty(data),
		Kind:      KindUpdated,
		Target:    pos,
		CreatedAt: r.entryCreatedAt,
		Author:    author,
		Format:    r.evFormat,
		Seq:       r.entrySeq,
		Tags:      r.tags,
	}
	return ev, entry, nil
}

// Delete erases the data of the published event at pos and of its Updated
// entries (marking them Deleted) and appends a Deleted entry by author, in
// one transaction under the write lock.
func (p *Postgres) Delete(ctx context.Context, channel string, pos int64, author string) (Event, error) {
	r, err := p.edit(ctx, channel, pos, true, nil, FormatUnspecified, author)
	if err != nil {
		return Event{}, err
	}
	return Event{
		Position:  r.entryID,
		Channel:   channel,
		Type:      r.typ,
		Kind:      KindDeleted,
		Target:    pos,
		CreatedAt: r.entryCreatedAt,
		Author:    author,
		Seq:       r.entrySeq,
		Tags:      r.tags,
	}, nil
}

type editResult struct {
	entryID        int64
	entryCreatedAt time.Time
	typ, key       string
	evCreatedAt    time.Time
	evUpdatedAt    time.Time
	evAuthor       string // the edited event's author, which it keeps
	evFormat       Format // the event's format after the edit
	evSeq          int64
	entrySeq       int64
	tags           map[string]string // the event's, which the entry carries
}

func (p *Postgres) edit(ctx context.Context, channel string, pos int64, del bool, data []byte, format Format, author string) (editResult, error) {
	op := fmt.Sprintf("update %d of %q", pos, channel)
	if del {
		op = fmt.Sprintf("delete %d of %q", pos, channel)
	}
	if data == nil {
		data = []byte{}
	}
	if err := ctx.Err(); err != nil {
		return editResult{}, err
	}
	// Like a publish, the edit is not tied to the caller's ctx once sent:
	// a cancelled caller cannot leave it half done, and the timeout fails
	// it when the database hangs.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	var (
		status         int16
		limit          *int32
		entryID        *int64
		entryCreatedAt *time.Time
		typ, key       *string
		created, upd   *time.Time
		evAuthor       *string
		evFormat       *int16
	)
	err := p.pool.QueryRow(wctx,
		`SELECT status, size_limit, entry_id, entry_created_at, ev_type, ev_key, ev_created_at, ev_updated_at, ev_author, ev_format
FROM herald_edit($1, $2, $3, $4, $5, $6)`, channel, pos, del, data, author, int16(format)).
		Scan(&status, &limit, &entryID, &entryCreatedAt, &typ, &key, &created, &upd, &evAuthor, &evFormat)
	if err != nil {
		return editResult{}, p.dbErr(op, err)
	}
	r := editResult{
		entryID:        deref(entryID),
		entryCreatedAt: deref(entryCreatedAt),
		typ:            deref(typ),
		key:            deref(key),
		evCreatedAt:    deref(created),
		evUpdatedAt:    deref(upd),
		evAuthor:       deref(evAuthor),
		evFormat:       Format(deref(evFormat)),
	}
	switch status {
	case editDone:
	case editNotFound:
		return editResult{}, fmt.Errorf("%s: %w", op, ErrEventNotFound)
	case editNotEditable:
		return editResult{}, p.notEditable(ctx, op, channel, pos)
	case editTooLarge:
		return editResult{}, fmt.Errorf("%s: %w", op, &TooLargeError{Size: len(data), Limit: int(deref(limit))})
	default:
		return editResult{}, fmt.Errorf("%s: %w: herald_edit returned status %d", op, errInternal, status)
	}
	// The trigger herald_events_seq numbered the entry and copied the
	// event's tags (0007_seq_tags.sql); both are written and never change.
	rows, err := p.pool.Query(wctx, `SELECT id, seq, tags FROM herald_events WHERE id = ANY($1)`, []int64{pos, r.entryID})
	if err == nil {
		for rows.Next() {
			var (
				id   int64
				seq  *int64
				tags []byte
			)
			if err = rows.Scan(&id, &seq, &tags); err != nil {
				break
			}
			if id == pos {
				r.evSeq = deref(seq)
			} else {
				r.entrySeq = deref(seq)
				r.tags, err = parseTags(tags)
			}
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		// Committed already: say so, do not fail the edit.
		p.opts.Logger.Warn("read the seq of an edit", "op", op, "err", err)
	}
	p.notify(wctx, r.entryID)
	return r, nil
}

// notEditable says why herald_edit refused the entry at pos. Kind and
// target never change once written, so reading them after the refusal
// tells the truth; if retention removed the entry meanwhile, it is gone.
func (p *Postgres) notEditable(ctx context.Context, op, channel string, pos int64) error {
	e := NotEditableError{Position: pos}
	err := p.pool.QueryRow(ctx, `SELECT kind, target FROM herald_events WHERE id = $1 AND channel = $2`,
		pos, channel).Scan(&e.Kind, &e.Target)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s: %w", op, ErrEventNotFound)
	case err != nil:
		return p.ctxErr(ctx, op, err)
	}
	if e.Kind == KindPublished {
		e.Target = 0
	}
	return fmt.Errorf("%s: %w", op, &e)
}

const channelColumns = `name, max_events, max_age, max_event_size, truncated_through, created_at, updated_at`

func scanChannel(row pgx.Row) (Channel, error) {
	var c Channel
	err := row.Scan(&c.Name, &c.Settings.MaxEvents, &c.Settings.MaxAge, &c.Settings.MaxEventSize,
		&c.TruncatedThrough, &c.CreatedAt, &c.UpdatedAt)
	return c, err
}

func (p *Postgres) queryChannels(ctx context.Context, op, sql string, args ...any) ([]Channel, error) {
	rows, err := p.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, p.ctxErr(ctx, op, err)
	}
	chs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Channel, error) { return scanChannel(row) })
	if err != nil {
		return nil, p.ctxErr(ctx, op, err)
	}
	return chs, nil
}

// CreateChannel creates a channel with settings s (start from
// DefaultSettings), or revives a deleted one with them (its
// TruncatedThrough stays).
func (p *Postgres) CreateChannel(ctx context.Context, name string, s Settings) (Channel, error) {
	op := fmt.Sprintf("create channel %q", name)
	c, err := scanChannel(p.pool.QueryRow(ctx, `
INSERT INTO herald_channels AS c (name, max_events, max_age, max_event_size, created_at, updated_at)
VALUES ($1, $2, $3, $4, now(), now())
ON CONFLICT (name) DO UPDATE
SET max_events = EXCLUDED.max_events, max_age = EXCLUDED.max_age,
    max_event_size = EXCLUDED.max_event_size,
    created_at = now(), updated_at = now(), deleted_at = NULL
WHERE c.deleted_at IS NOT NULL
RETURNING `+channelColumns, name, s.MaxEvents, s.MaxAge, s.MaxEventSize))
	if errors.Is(err, pgx.ErrNoRows) {
		return Channel{}, fmt.Errorf("%s: %w", op, ErrChannelExists)
	}
	if err != nil {
		return Channel{}, p.ctxErr(ctx, op, err)
	}
	return c, nil
}

// GetChannel returns a channel.
func (p *Postgres) GetChannel(ctx context.Context, name string) (Channel, error) {
	op := fmt.Sprintf("get channel %q", name)
	c, err := scanChannel(p.pool.QueryRow(ctx,
		`SELECT `+channelColumns+` FROM herald_channels WHERE name = $1 AND deleted_at IS NULL`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Channel{}, fmt.Errorf("%s: %w", op, ErrChannelNotFound)
	}
	if err != nil {
		return Channel{}, p.ctxErr(ctx, op, err)
	}
	return c, nil
}

// GetChannels returns the existing channels among names, by name.
func (p *Postgres) GetChannels(ctx context.Context, names []string) ([]Channel, error) {
	if len(names) == 0 {
		return []Channel{}, nil
	}
	return p.queryChannels(ctx, "get channels",
		`SELECT `+channelColumns+` FROM herald_channels WHERE name = ANY($1) AND deleted_at IS NULL ORDER BY name`,
		names)
}

// TruncatedThrough returns the highest position removed from the named
// channels; deleted channels keep their row (deleted_at set), so they count.
func (p *Postgres) TruncatedThrough(ctx context.Context, names []string) (int64, error) {
	if len(names) == 0 {
		return 0, nil
	}
	var t int64
	if err := p.pool.QueryRow(ctx,
		`SELECT coalesce(max(truncated_through), 0) FROM herald_channels WHERE name = ANY($1)`, names).Scan(&t); err != nil {
		return 0, p.ctxErr(ctx, "read truncated_through", err)
	}
	return t, nil
}

// ReplayState is TruncatedThrough and the last committed position in one
// statement: a backward step on the primary key and the channels' rows.
func (p *Postgres) ReplayState(ctx context.Context, names []string) (truncatedThrough, last int64, err error) {
	if err := p.pool.QueryRow(ctx, `SELECT
  (SELECT coalesce(max(truncated_through), 0) FROM herald_channels WHERE name = ANY($1)),
  (SELECT coalesce(max(id), 0) FROM herald_events)`, names).Scan(&truncatedThrough, &last); err != nil {
		return 0, 0, p.ctxErr(ctx, "read replay state", err)
	}
	return truncatedThrough, last, nil
}

// ListChannels lists channels named after `after` that start with prefix,
// in byte order, at most limit (limit <= 0: no limit).
func (p *Postgres) ListChannels(ctx context.Context, after, prefix string, limit int) (ChannelPage, error) {
	lim := limitArg(limit + 1) // one more tells whether there is a next page
	if limit <= 0 {
		lim = nil
	}
	chs, err := p.queryChannels(ctx, "list channels", `SELECT `+channelColumns+` FROM herald_channels
WHERE deleted_at IS NULL AND name > $1 AND name >= $2 AND starts_with(name, $2)
ORDER BY name LIMIT $3`, after, prefix, lim)
	if err != nil {
		return ChannelPage{}, err
	}
	page := ChannelPage{Channels: chs}
	if limit > 0 && len(chs) > limit {
		page.Channels = chs[:limit]
		page.Next = chs[limit-1].Name
	}
	return page, nil
}

// UpdateChannel changes the settings set in patch.
func (p *Postgres) UpdateChannel(ctx context.Context, name string, patch SettingsPatch) (Channel, error) {
	op := fmt.Sprintf("update channel %q", name)
	c, err := scanChannel(p.pool.QueryRow(ctx, `
UPDATE herald_channels
SET max_events = coalesce($2, max_events), max_age = coalesce($3, max_age),
    max_event_size = coalesce($4, max_event_size), updated_at = now()
WHERE name = $1 AND deleted_at IS NULL
RETURNING `+channelColumns, name, patch.MaxEvents, patch.MaxAge, patch.MaxEventSize))
	if errors.Is(err, pgx.ErrNoRows) {
		return Channel{}, fmt.Errorf("%s: %w", op, ErrChannelNotFound)
	}
	if err != nil {
		return Channel{}, p.ctxErr(ctx, op, err)
	}
	return c, nil
}

// DeleteChannel deletes a channel and its entries under the write lock;
// the channel's TruncatedThrough covers them if it is created again.
func (p *Postgres) DeleteChannel(ctx context.Context, name string) error {
	op := fmt.Sprintf("delete channel %q", name)
	var found bool
	if err := p.pool.QueryRow(ctx, `SELECT herald_delete_channel($1)`, name).Scan(&found); err != nil {
		return p.ctxErr(ctx, op, err)
	}
	if !found {
		return fmt.Errorf("%s: %w", op, ErrChannelNotFound)
	}
	return nil
}

// Trim applies retention at now, in transactions of at most 10,000
// deleted entries, each raising the channels' TruncatedThrough over what it
// deleted. It returns 0, nil when another session is trimming.
func (p *Postgres) Trim(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	from := ""
	for {
		var (
			locked bool
			n      int64
			next   *string
		)
		err := p.pool.QueryRow(ctx, `SELECT locked, deleted, resume_from FROM herald_trim($1, $2, $3)`,
			now, trimBatchEntries, from).Scan(&locked, &n, &next)
		if err != nil {
			return total, p.ctxErr(ctx, "trim", err)
		}
		total += n
		if !locked || next == nil {
			return total, nil
		}
		from = *next
	}
}
