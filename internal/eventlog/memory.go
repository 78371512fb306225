package eventlog

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Memory is the embedded event log: one process, not durable. It keeps the
// semantics of the Postgres log (positions, idempotency, edits, channels,
// retention) so that the same conformance suite passes over both.
//
// All methods are safe for concurrent use. One RWMutex guards everything:
// writes (Append, Update, Delete, channel changes, Trim) hold it
// exclusively, which is what makes positions visible in order. Events
// handed out are copies of immutable stored structs whose Data is never
// written again: an edit stores a new struct (copy-on-write). Memory starts
// no goroutines; Run only waits for its context.
type Memory struct {
	opts Options

	mu   sync.RWMutex
	head int64     // highest position handed out
	last time.Time // CreatedAt of the newest entry: never goes backwards
	// log holds the entries in position order. A removed entry leaves a
	// slot with a nil ev until compact drops it.
	log      []slot
	removed  int // slots in log whose ev is nil
	channels map[string]*memChannel
	// truncated keeps TruncatedThrough of deleted channels, for a channel
	// created again under the same name.
	truncated map[string]int64
	// seqs keeps the last seq of deleted channels: a channel created again
	// goes on counting.
	seqs     map[string]int64
	watchers map[chan struct{}]struct{}
}

var _ Log = (*Memory)(nil)

type slot struct {
	pos int64
	ev  *Event
}

type memChannel struct {
	info Channel
	evs  []*Event          // the channel's entries in position order
	keys map[string]keyRef // idempotency key -> the event that used it
	// keysRemoved counts deletions from keys since it was last rebuilt:
	// Go maps do not shrink.
	keysRemoved int
	seq         int64 // the last seq handed out
}

// keyRef is the event an idempotency key was used for and the digest of
// the data first published under the key (see Publish.IdempotencyKey);
// hasSum is false once the event is deleted.
type keyRef struct {
	pos    int64
	sum    [sha256.Size]byte
	hasSum bool
}

// NewMemory returns an empty in-memory log.
func NewMemory(opts Options) *Memory {
	return &Memory{
		opts:      opts,
		channels:  make(map[string]*memChannel),
		truncated: make(map[string]int64),
		seqs:      make(map[string]int64),
		watchers:  make(map[chan struct{}]struct{}),
	}
}

// Run waits until ctx ends and returns nil: Memory has no background work.
func (m *Memory) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// now returns the time for new entries; m.mu must be held for writing.
func (m *Memory) now() time.Time {
	t := time.Now()
	if t.Before(m.last) {
		t = m.last
	}
	m.last = t
	return t
}

// Append appends ps in order. All events of one call share CreatedAt.
// Classification follows herald_publish: an unknown channel fails first,
// then a key already used by a stored event makes a duplicate of it (or a
// conflict), then the size limit applies, then a key used earlier in the
// same call makes a duplicate of that input (or a conflict).
func (m *Memory) Append(ctx context.Context, ps []Publish) ([]Published, []error, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	res := make([]Published, len(ps))
	errs := make([]error, len(ps))
	if len(ps) == 0 {
		return res, errs, nil
	}
	// Hashed before taking the lock: only keyed publishes need it.
	sums := make([][sha256.Size]byte, len(ps))
	for i := range ps {
		if ps[i].IdempotencyKey != "" {
			sums[i] = dataSum(ps[i].Data)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	before := m.head
	now := m.now()
	for i := range ps {
		p := &ps[i]
		c := m.channels[p.Channel]
		if c == nil && m.opts.AutoCreate {
			if len(p.Data) > DefaultMaxEventSize {
				// Not created for an event it could not hold.
				errs[i] = fmt.Errorf("append to %q: %w", p.Channel, &TooLargeError{Size: len(p.Data), Limit: DefaultMaxEventSize})
				continue
			}
			c = m.createChannel(p.Channel, DefaultSettings(), now)
		}
		if c == nil {
			errs[i] = fmt.Errorf("append to %q: %w", p.Channel, ErrChannelNotFound)
			continue
		}
		ref, hasKey := keyRef{}, false
		if p.IdempotencyKey != "" {
			ref, hasKey = c.keys[p.IdempotencyKey]
		}
		if hasKey && ref.pos <= before {
			res[i], errs[i] = m.duplicate(ref, p, sums[i])
			continue
		}
		if limit := int(c.info.Settings.MaxEventSize); len(p.Data) > limit {
			errs[i] = fmt.Errorf("append to %q: %w", p.Channel, &TooLargeError{Size: len(p.Data), Limit: limit})
			continue
		}
		if hasKey {
			res[i], errs[i] = m.duplicate(ref, p, sums[i])
			continue
		}
		ev := m.add(c, Event{
			Channel:        p.Channel,
			Type:           p.Type,
			Data:           cloneData(p.Data),
			Kind:           KindPublished,
			IdempotencyKey: p.IdempotencyKey,
			CreatedAt:      now,
			Author:         p.Author,
			Format:         p.Format,
			Tags:           cloneTags(p.Tags),
		})
		if p.IdempotencyKey != "" {
			c.keys[p.IdempotencyKey] = keyRef{pos: ev.Position, sum: sums[i], hasSum: true}
		}
		res[i] = Published{Event: *ev}
	}
	if m.head > before {
		m.notify()
	}
	return res, errs, nil
}

// duplicate answers p, whose key was used for the event ref names: that
// event when p carries the same type and data, else a conflict.
func (m *Memory) duplicate(ref keyRef, p *Publish, sum [sha256.Size]byte) (Published, error) {
	ev := m.lookup(ref.pos)
	if ev.Type != p.Type || ref.hasSum && ref.sum != sum {
		return Published{}, fmt.Errorf("append to %q: %w", p.Channel,
			&IdempotencyConflictError{Key: p.IdempotencyKey, Channel: p.Channel, Position: ref.pos})
	}
	return Published{Event: *ev, Duplicate: true}, nil
}

func cloneData(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return slices.Clone(b)
}

func cloneTags(t map[string]string) map[string]string {
	if len(t) == 0 {
		return nil
	}
	return maps.Clone(t)
}

// add stores ev at the next position and seq; m.mu must be held for
// writing.
func (m *Memory) add(c *memChannel, ev Event) *Event {
	m.head++
	ev.Position = m.head
	c.seq++
	ev.Seq = c.seq
	p := &ev
	m.log = append(m.log, slot{pos: ev.Position, ev: p})
	c.evs = append(c.evs, p)
	return p
}

// index returns the index of pos in m.log, or -1.
func (m *Memory) index(pos int64) int {
	i, ok := slices.BinarySearchFunc(m.log, pos, func(s slot, p int64) int { return cmp.Compare(s.pos, p) })
	if !ok || m.log[i].ev == nil {
		return -1
	}
	return i
}

// lookup returns the entry at pos, or nil.
func (m *Memory) lookup(pos int64) *Event {
	if i := m.index(pos); i >= 0 {
		return m.log[i].ev
	}
	return nil
}

// replace stores ev in place of the entry at its position, leaving the old
// struct untouched for whoever holds it.
func (m *Memory) replace(c *memChannel, ev *Event) {
	m.log[m.index(ev.Position)].ev = ev
	j, _ := slices.BinarySearchFunc(c.evs, ev.Position, func(e *Event, p int64) int { return cmp.Compare(e.Position, p) })
	c.evs[j] = ev
}

// notify wakes every Watch; m.mu must be held.
func (m *Memory) notify() {
	for w := range m.watchers {
		select {
		case w <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// editable returns the channel and published event at pos, or an error.
func (m *Memory) editable(op, channel string, pos int64) (*memChannel, *Event, error) {
	ev := m.lookup(pos)
	c := m.channels[channel]
	if ev == nil || c == nil || ev.Channel != channel {
		return nil, nil, fmt.Errorf("%s %d of %q: %w", op, pos, channel, ErrEventNotFound)
	}
	if ev.Kind != KindPublished || ev.Deleted {
		return nil, nil, fmt.Errorf("%s %d of %q: %w", op, pos, channel,
			&NotEditableError{Position: pos, Kind: ev.Kind, Target: ev.Target})
	}
	return c, ev, nil
}

// Update replaces the data (and format, unless FormatUnspecified) of the
// published event at pos and appends an Updated entry by author.
func (m *Memory) Update(ctx context.Context, channel string, pos int64, data []byte, format Format, author string) (Event, Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, Event{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, old, err := m.editable("update", channel, pos)
	if err != nil {
		return Event{}, Event{}, err
	}
	if limit := int(c.info.Settings.MaxEventSize); len(data) > limit {
		return Event{}, Event{}, fmt.Errorf("update %d of %q: %w", pos, channel, &TooLargeError{Size: len(data), Limit: limit})
	}
	now := m.now()
	ev := *old
	ev.Data = cloneData(data)
	ev.UpdatedAt = now
	if format != FormatUnspecified {
		ev.Format = format
	}
	m.replace(c, &ev)
	entry := m.add(c, Event{
		Channel:   channel,
		Type:      ev.Type,
		Data:      ev.Data, // shared: neither is ever written
		Kind:      KindUpdated,
		Target:    pos,
		CreatedAt: now,
		Author:    author,
		Format:    ev.Format,
		Tags:      ev.Tags,
	})
	m.notify()
	return ev, *entry, nil
}

// Delete erases the data of the published event at pos and of its Updated
// entries (marking them Deleted), forgets the digest its idempotency key
// was compared with, and appends a Deleted entry by author.
func (m *Memory) Delete(ctx context.Context, channel string, pos int64, author string) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, old, err := m.editable("delete", channel, pos)
	if err != nil {
		return Event{}, err
	}
	ev := *old
	ev.Data = nil
	ev.Deleted = true
	m.replace(c, &ev)
	// The Updated entries follow the event in the channel. Deletes are
	// rare: a scan of the channel's later entries is cheap enough.
	for _, e := range c.evs[firstAfter(c.evs, pos):] {
		if e.Kind == KindUpdated && e.Target == pos {
			erased := *e
			erased.Data = nil
			erased.Deleted = true
			m.replace(c, &erased)
		}
	}
	if k := ev.IdempotencyKey; k != "" {
		if ref := c.keys[k]; ref.pos == pos {
			c.keys[k] = keyRef{pos: pos}
		}
	}
	entry := m.add(c, Event{
		Channel:   channel,
		Type:      ev.Type,
		Kind:      KindDeleted,
		Target:    pos,
		CreatedAt: m.now(),
		Author:    author,
		Tags:      ev.Tags,
	})
	m.notify()
	return *entry, nil
}

// Read returns entries with q.After < Position <= q.UpTo of q.Channels in
// position order. A nil Channels means every channel, an empty one none;
// Limit <= 0 means no limit.
func (m *Memory) Read(ctx context.Context, q Query) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = int(^uint(0) >> 1)
	}
	in := func(pos int64) bool { return pos > q.After && (q.UpTo <= 0 || pos <= q.UpTo) }
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Event
	if q.Channels == nil {
		i, _ := slices.BinarySearchFunc(m.log, q.After+1, func(s slot, p int64) int { return cmp.Compare(s.pos, p) })
		for ; i < len(m.log) && len(out) < limit && in(m.log[i].pos); i++ {
			if ev := m.log[i].ev; ev != nil {
				out = append(out, *ev)
			}
		}
		return capBytes(out, q.MaxBytes), nil
	}
	// Merge the channels' entries: each contributes at most limit.
	names := slices.Clone(q.Channels)
	slices.Sort(names)
	names = slices.Compact(names)
	var evs []*Event
	for _, name := range names {
		c := m.channels[name]
		if c == nil {
			continue
		}
		for n, ev := range c.evs[firstAfter(c.evs, q.After):] {
			if n == limit || !in(ev.Position) {
				break
			}
			evs = append(evs, ev)
		}
	}
	if len(names) > 1 {
		slices.SortFunc(evs, func(a, b *Event) int { return cmp.Compare(a.Position, b.Position) })
	}
	evs = evs[:min(len(evs), limit)]
	out = make([]Event, len(evs))
	for i, ev := range evs {
		out[i] = *ev
	}
	return capBytes(out, q.MaxBytes), nil
}

// capBytes keeps evs up to the entry whose data brings the total to
// maxBytes (> 0), as Query.MaxBytes says.
func capBytes(evs []Event, maxBytes int) []Event {
	if maxBytes <= 0 {
		return evs
	}
	total := 0
	for i := range evs {
		if total += len(evs[i].Data); total >= maxBytes {
			return evs[:i+1]
		}
	}
	return evs
}

// firstAfter returns the index of the first entry of evs with a position > pos.
func firstAfter(evs []*Event, pos int64) int {
	i, _ := slices.BinarySearchFunc(evs, pos+1, func(e *Event, p int64) int { return cmp.Compare(e.Position, p) })
	return i
}

// Head returns the highest position handed out (0 when none).
func (m *Memory) Head(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.head, nil
}

// Watch calls wake once, then after every change that appended entries,
// until ctx ends. Wake-ups that arrive while wake runs are coalesced.
func (m *Memory) Watch(ctx context.Context, wake func()) error {
	w := make(chan struct{}, 1)
	m.mu.Lock()
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.watchers, w)
		m.mu.Unlock()
	}()
	if ctx.Err() == nil {
		wake()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w:
			wake()
		}
	}
}

// History returns a page of one channel's entries. An unknown channel has
// no entries. Limit <= 0 means no limit.
func (m *Memory) History(ctx context.Context, q HistoryQuery) (Page, error) {
	if err := ctx.Err(); err != nil {
		return Page{}, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = int(^uint(0) >> 1)
	}
	keep := func(ev *Event) bool { return !q.CurrentOnly || (ev.Kind == KindPublished && !ev.Deleted) }
	m.mu.RLock()
	defer m.mu.RUnlock()
	var page Page
	c := m.channels[q.Channel]
	if c == nil {
		return page, nil
	}
	visit := func(ev *Event) bool {
		if !keep(ev) {
			return true
		}
		if len(page.Events) == limit {
			page.HasMore = true
			return false
		}
		page.Events = append(page.Events, *ev)
		return true
	}
	if q.Backward {
		end := len(c.evs)
		if q.Cursor > 0 {
			end = firstAfter(c.evs, q.Cursor-1)
		}
		for i := end - 1; i >= 0 && visit(c.evs[i]); i-- {
		}
	} else {
		i := firstAfter(c.evs, q.Cursor)
		if q.FromSeq > 0 {
			i, _ = slices.BinarySearchFunc(c.evs, q.FromSeq, func(e *Event, s int64) int { return cmp.Compare(e.Seq, s) })
		}
		for ; i < len(c.evs) && visit(c.evs[i]); i++ {
		}
	}
	return page, nil
}

// Get returns the entry at pos of channel.
func (m *Memory) Get(ctx context.Context, channel string, pos int64) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	ev := m.lookup(pos)
	if ev == nil || ev.Channel != channel {
		return Event{}, fmt.Errorf("get %d of %q: %w", pos, channel, ErrEventNotFound)
	}
	return *ev, nil
}

// createChannel adds a channel; m.mu must be held for writing. It keeps
// the TruncatedThrough of an earlier channel of that name.
func (m *Memory) createChannel(name string, s Settings, now time.Time) *memChannel {
	c := &memChannel{
		info: Channel{
			Name:             name,
			Settings:         s,
			CreatedAt:        now,
			UpdatedAt:        now,
			TruncatedThrough: m.truncated[name],
		},
		keys: make(map[string]keyRef),
		seq:  m.seqs[name],
	}
	delete(m.truncated, name)
	delete(m.seqs, name)
	m.channels[name] = c
	return c
}

// CreateChannel creates a channel with settings s.
func (m *Memory) CreateChannel(ctx context.Context, name string, s Settings) (Channel, error) {
	if err := ctx.Err(); err != nil {
		return Channel{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.channels[name] != nil {
		return Channel{}, fmt.Errorf("create channel %q: %w", name, ErrChannelExists)
	}
	return m.createChannel(name, s, m.now()).info, nil
}

// GetChannel returns a channel.
func (m *Memory) GetChannel(ctx context.Context, name string) (Channel, error) {
	if err := ctx.Err(); err != nil {
		return Channel{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := m.channels[name]
	if c == nil {
		return Channel{}, fmt.Errorf("get channel %q: %w", name, ErrChannelNotFound)
	}
	return c.info, nil
}

// GetChannels returns the channels that exist among names, by name.
func (m *Memory) GetChannels(ctx context.Context, names []string) ([]Channel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Channel
	for _, name := range names {
		if c := m.channels[name]; c != nil {
			out = append(out, c.info)
		}
	}
	return out, nil
}

// TruncatedThrough returns the highest position removed from the named
// channels, deleted ones included.
func (m *Memory) TruncatedThrough(ctx context.Context, names []string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.truncatedThroughLocked(names), nil
}

// ReplayState is TruncatedThrough and Head read at one instant.
func (m *Memory) ReplayState(ctx context.Context, names []string) (truncatedThrough, last int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.truncatedThroughLocked(names), m.head, nil
}

func (m *Memory) truncatedThroughLocked(names []string) int64 {
	var t int64
	for _, name := range names {
		if c := m.channels[name]; c != nil {
			t = max(t, c.info.TruncatedThrough)
		}
		t = max(t, m.truncated[name])
	}
	return t
}

// ListChannels lists channels named after `after` that start with prefix,
// by name (byte order), at most limit (limit <= 0: no limit).
func (m *Memory) ListChannels(ctx context.Context, after, prefix string, limit int) (ChannelPage, error) {
	if err := ctx.Err(); err != nil {
		return ChannelPage{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var names []string
	for name := range m.channels {
		if name > after && strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var page ChannelPage
	if limit > 0 && len(names) > limit {
		names = names[:limit]
		page.Next = names[limit-1]
	}
	page.Channels = make([]Channel, len(names))
	for i, name := range names {
		page.Channels[i] = m.channels[name].info
	}
	return page, nil
}

// UpdateChannel applies p to a channel's settings.
func (m *Memory) UpdateChannel(ctx context.Context, name string, p SettingsPatch) (Channel, error) {
	if err := ctx.Err(); err != nil {
		return Channel{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.channels[name]
	if c == nil {
		return Channel{}, fmt.Errorf("update channel %q: %w", name, ErrChannelNotFound)
	}
	c.info.Settings = p.Apply(c.info.Settings)
	c.info.UpdatedAt = m.now()
	return c.info, nil
}

// DeleteChannel removes a channel and its entries, remembering the highest
// removed position for a later channel of the same name.
func (m *Memory) DeleteChannel(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.channels[name]
	if c == nil {
		return fmt.Errorf("delete channel %q: %w", name, ErrChannelNotFound)
	}
	tt := c.info.TruncatedThrough
	if n := len(c.evs); n > 0 {
		tt = max(tt, c.evs[n-1].Position)
	}
	m.drop(c.evs)
	delete(m.channels, name)
	m.truncated[name] = tt
	if c.seq > 0 {
		m.seqs[name] = c.seq
	}
	m.compact()
	return nil
}

// drop frees the slots of evs, which must be in position order.
func (m *Memory) drop(evs []*Event) {
	if len(evs) == 0 {
		return
	}
	// Positions ascend in both: search only the rest of the log each time.
	lo := 0
	for _, ev := range evs {
		j, _ := slices.BinarySearchFunc(m.log[lo:], ev.Position, func(s slot, p int64) int { return cmp.Compare(s.pos, p) })
		lo += j
		m.log[lo].ev = nil
		m.removed++
	}
}

// compact drops removed slots once they are at least half the log.
func (m *Memory) compact() {
	if m.removed == 0 || m.removed < len(m.log)/2 {
		return
	}
	live := make([]slot, 0, len(m.log)-m.removed)
	for _, s := range m.log {
		if s.ev != nil {
			live = append(live, s)
		}
	}
	m.log, m.removed = live, 0
}

// Trim removes, in each channel with limits, the entries created before
// now minus MaxAge and those beyond the newest MaxEvents, and raises the
// channel's TruncatedThrough over them. It returns how many it removed.
func (m *Memory) Trim(ctx context.Context, now time.Time) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var total int64
	for _, c := range m.channels {
		s := c.info.Settings
		if s.MaxAge <= 0 && s.MaxEvents <= 0 {
			continue
		}
		k := 0 // entries to remove: always a prefix
		if s.MaxAge > 0 {
			// CreatedAt grows with position.
			cutoff := now.Add(-s.MaxAge)
			k, _ = slices.BinarySearchFunc(c.evs, cutoff, func(e *Event, t time.Time) int {
				if e.CreatedAt.Before(t) {
					return -1
				}
				return 1
			})
		}
		if s.MaxEvents > 0 && int64(len(c.evs)-k) > s.MaxEvents {
			k = len(c.evs) - int(s.MaxEvents)
		}
		if k == 0 {
			continue
		}
		gone := c.evs[:k]
		m.drop(gone)
		for _, ev := range gone {
			if ev.IdempotencyKey != "" && c.keys[ev.IdempotencyKey].pos == ev.Position {
				delete(c.keys, ev.IdempotencyKey)
				c.keysRemoved++
			}
		}
		c.info.TruncatedThrough = max(c.info.TruncatedThrough, gone[k-1].Position)
		c.evs = dropPrefix(c.evs, k)
		if c.keysRemoved > 1024 && c.keysRemoved > len(c.keys) {
			keys := make(map[string]keyRef, len(c.keys))
			for key, pos := range c.keys {
				keys[key] = pos
			}
			c.keys, c.keysRemoved = keys, 0
		}
		total += int64(k)
	}
	m.compact()
	return total, nil
}

// dropPrefix removes the first k elements of s, letting the removed ones
// and, when it is mostly empty, the backing array be collected.
func dropPrefix(s []*Event, k int) []*Event {
	clear(s[:k])
	rest := s[k:]
	if len(rest) < cap(s)/4 {
		return slices.Clip(slices.Clone(rest))
	}
	return rest
}
