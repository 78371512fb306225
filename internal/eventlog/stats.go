package eventlog

import (
	"context"
	"time"
)

// ChannelStats are a channel's figures for operators.
type ChannelStats struct {
	// Events is how many published events the channel holds (not deleted).
	Events int64
	// Head is the position of its newest entry (0: none).
	Head int64
	// LastActivity is when its newest entry was written.
	LastActivity time.Time
}

// ChannelStats returns the figures of the named channels that have
// entries; channels without any are left out. It counts the channels'
// entries: meant for an admin page, not for every request.
func (p *Postgres) ChannelStats(ctx context.Context, names []string) (map[string]ChannelStats, error) {
	rows, err := p.pool.Query(ctx, `
SELECT channel, count(*) FILTER (WHERE kind = 1 AND NOT deleted), max(id), max(created_at)
FROM herald_events WHERE channel = ANY($1) GROUP BY channel`, names)
	if err != nil {
		return nil, p.ctxErr(ctx, "channel stats", err)
	}
	defer rows.Close()
	out := make(map[string]ChannelStats, len(names))
	for rows.Next() {
		var (
			name string
			s    ChannelStats
		)
		if err := rows.Scan(&name, &s.Events, &s.Head, &s.LastActivity); err != nil {
			return nil, p.ctxErr(ctx, "channel stats", err)
		}
		out[name] = s
	}
	if err := rows.Err(); err != nil {
		return nil, p.ctxErr(ctx, "channel stats", err)
	}
	return out, nil
}

// ChannelStats is Postgres.ChannelStats for the memory log.
func (m *Memory) ChannelStats(_ context.Context, names []string) (map[string]ChannelStats, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]ChannelStats, len(names))
	for _, sl := range m.log {
		if sl.ev == nil || !want[sl.ev.Channel] {
			continue
		}
		s := out[sl.ev.Channel]
		if sl.ev.Kind == KindPublished && !sl.ev.Deleted {
			s.Events++
		}
		s.Head = max(s.Head, sl.pos)
		if sl.ev.CreatedAt.After(s.LastActivity) {
			s.LastActivity = sl.ev.CreatedAt
		}
		out[sl.ev.Channel] = s
	}
	return out, nil
}
