// Package eventlog owns Herald's durable, ordered event log: the one place
// events are appended, edited, read back by position and trimmed by
// retention. Two implementations share one interface and one conformance
// suite (eventlogtest): Postgres (pgx/v5, durable, many instances on one
// database) and Memory (embedded default, one process, not durable).
//
// Positions are global, strictly increasing and visible in order: a reader
// that has seen position p and later reads "position > p" never misses an
// event committed before or after. See docs/architecture.md.
package eventlog

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
)

// Limits and defaults documented in proto/herald/v1.
const (
	// DefaultMaxEventSize is a new channel's max_event_size.
	DefaultMaxEventSize = 64 << 10
	// MaxEventSize is the largest max_event_size a channel may have.
	MaxEventSize = 1 << 20
)

// Kind says what a log entry records.
type Kind int16

const (
	KindPublished Kind = 1 // a published event
	KindUpdated   Kind = 2 // replaced the data of Event.Target
	KindDeleted   Kind = 3 // deleted Event.Target
)

// Format says how an event's data is to be read: the herald.v1.DataFormat
// numbers. The stored bytes are the same whatever it is; the JSON
// encodings write JSON data as a JSON value and text as a string instead of
// base64. The log stores it as given and does not check the data (the
// services do).
type Format int16

const (
	// FormatUnspecified is opaque bytes. Given to Update, it keeps the
	// event's format.
	FormatUnspecified Format = 0
	FormatBytes       Format = 1 // opaque bytes, said explicitly
	FormatJSON        Format = 2 // a JSON value (any: object, array, string, number, ...)
	FormatText        Format = 3 // UTF-8 text
)

// Event is one entry of the log. Events handed out by a Log are shared
// between readers and must not be modified.
type Event struct {
	Position       int64
	Channel        string
	Type           string
	Data           []byte
	Kind           Kind
	Target         int64 // position changed by an Updated/Deleted entry
	IdempotencyKey string
	CreatedAt      time.Time
	UpdatedAt      time.Time // zero unless a published event's data was updated
	// Deleted is set on a published event that was later deleted and on
	// every Updated entry of that event: deletion erases the data of both
	// (Data is then empty). The flag also changes the identity of an erased
	// Updated entry for caches keyed on (Position, UpdatedAt, Deleted), so
	// that none can serve the bytes it had before.
	Deleted bool
	// Author is who wrote the entry, as the caller gave it (Publish.Author,
	// or the author passed to Update/Delete); "" when unknown. A published
	// event keeps its author through edits; Updated and Deleted entries
	// carry the editor's.
	Author string
	// Format is the format of Data. An Updated entry has the format of its
	// data; a Deleted entry, FormatUnspecified.
	Format Format
	// Seq numbers the entries of the channel: 1, 2, 3, ... in position
	// order, gap-free (Published, Updated and Deleted entries alike). A
	// channel deleted and created again goes on counting.
	Seq int64
	// Tags are the tags given at publish (nil when none). Updated and
	// Deleted entries carry the tags of the event they change. Shared:
	// never modify.
	Tags map[string]string
}

// Publish is one event to append.
type Publish struct {
	Channel string
	Type    string
	Data    []byte
	// IdempotencyKey is optional and dedupes per channel: a publish with a
	// key already used on the channel returns the stored event (Duplicate)
	// when its Type and Data are those first published under the key, and
	// fails with an IdempotencyConflictError otherwise. Once the event is
	// deleted its data can no longer be compared: only Type is.
	IdempotencyKey string
	// Author is stored with the event as given ("" for none); the log does
	// not interpret it. A duplicate returns the first event's author.
	Author string
	// Format is stored with the event as given.
	Format Format
	// Tags are stored with the event as given (nil or empty: none). A
	// duplicate returns the first event's tags; tags are not compared.
	Tags map[string]string
}

// Published is the result of an append.
type Published struct {
	Event     Event
	Duplicate bool // the idempotency key matched: Event is the earlier event
}

// Settings of a channel. Zero MaxEvents / MaxAge mean "no limit".
type Settings struct {
	MaxEvents    int64
	MaxAge       time.Duration
	MaxEventSize int32
}

// SettingsPatch changes the fields that are non-nil.
type SettingsPatch struct {
	MaxEvents    *int64
	MaxAge       *time.Duration
	MaxEventSize *int32
}

// Apply returns s with the patch applied.
func (p SettingsPatch) Apply(s Settings) Settings {
	if p.MaxEvents != nil {
		s.MaxEvents = *p.MaxEvents
	}
	if p.MaxAge != nil {
		s.MaxAge = *p.MaxAge
	}
	if p.MaxEventSize != nil {
		s.MaxEventSize = *p.MaxEventSize
	}
	return s
}

// DefaultSettings are a new channel's settings.
func DefaultSettings() Settings { return Settings{MaxEventSize: DefaultMaxEventSize} }

// Channel is a channel and its settings.
type Channel struct {
	Name      string
	Settings  Settings
	CreatedAt time.Time
	UpdatedAt time.Time
	// TruncatedThrough is the highest position removed from this channel by
	// retention or deletion (0 when none): a cursor below it has a gap.
	TruncatedThrough int64
}

// Query selects log entries by position for subscribers: entries with
// After < Position <= UpTo (UpTo 0: no upper bound), of Channels (nil: all
// channels; empty non-nil: none), ascending, at most Limit (<= 0: no limit).
// With MaxBytes > 0 the result stops after the entry whose data brings the
// total to MaxBytes or more (it holds at least one entry), so that a page
// of large events stays bounded in memory; the caller reads on after the
// last position it got.
type Query struct {
	Channels []string
	After    int64
	UpTo     int64
	Limit    int
	MaxBytes int
}

// HistoryQuery selects a page of one channel's entries.
type HistoryQuery struct {
	Channel string
	// Cursor is exclusive; 0 starts at the oldest (forward) or newest (backward).
	Cursor   int64
	Backward bool
	Limit    int
	// CurrentOnly keeps published, undeleted events only.
	CurrentOnly bool
	// FromSeq > 0 starts a forward page at the channel's entry with that
	// seq (or the first after it that is left), instead of after Cursor;
	// Cursor must then be 0.
	FromSeq int64
}

// Page is a page of history. A page with HasMore set is full (Limit
// entries); Limit <= 0 means no limit.
type Page struct {
	Events  []Event
	HasMore bool
}

// ChannelPage is a page of channels.
type ChannelPage struct {
	Channels []Channel
	Next     string // name to pass as After for the next page; "" on the last page
}

// Sentinel errors. Implementations wrap them with context; test with
// errors.Is. Both implementations word every error the same way (the
// conformance suite compares the texts), and the texts are written for the
// API's clients: services send them on as they are.
var (
	ErrChannelNotFound = errors.New("channel not found")
	ErrChannelExists   = errors.New("channel already exists")
	ErrEventNotFound   = errors.New("event not found")
	// ErrTooLarge: the data exceeds the channel's max_event_size.
	ErrTooLarge = errors.New("event data exceeds the channel's max_event_size")
	// ErrNotEditable: the target was deleted or is itself an edit entry;
	// the error is a *NotEditableError saying which.
	ErrNotEditable = errors.New("event cannot be edited")
	// ErrIdempotencyConflict: the idempotency key was already used on the
	// channel for an event of another type or data; the error is an
	// *IdempotencyConflictError.
	ErrIdempotencyConflict = errors.New("idempotency key already used for a different event")
	// ErrUnavailable: the log could not be reached; the operation may be
	// retried (publishes with their idempotency key).
	ErrUnavailable = errors.New("event log unavailable")
	// ErrClosed: the log was stopped.
	ErrClosed = errors.New("event log closed")
)

// TooLargeError carries the limit that was exceeded. errors.Is(err, ErrTooLarge).
type TooLargeError struct {
	Size, Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("event data is %d bytes, the channel's max_event_size is %d", e.Size, e.Limit)
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// NotEditableError says why the entry at Position cannot be updated or
// deleted. errors.Is(err, ErrNotEditable).
type NotEditableError struct {
	Position int64
	// Kind is KindPublished for an event that was deleted, otherwise the
	// kind of the edit entry at Position.
	Kind Kind
	// Target is the event an edit entry changed (0 for a published event).
	Target int64
}

func (e *NotEditableError) Error() string {
	switch e.Kind {
	case KindUpdated:
		return fmt.Sprintf("entry %d is an UPDATED entry: edit the published event at position %d", e.Position, e.Target)
	case KindDeleted:
		return fmt.Sprintf("entry %d is a DELETED entry: the event at position %d was deleted and cannot be edited", e.Position, e.Target)
	}
	return fmt.Sprintf("event %d was already deleted", e.Position)
}

func (e *NotEditableError) Unwrap() error { return ErrNotEditable }

// IdempotencyConflictError: Key was used on Channel for the event at
// Position, whose type or data differ from the publish that reused it.
// errors.Is(err, ErrIdempotencyConflict).
type IdempotencyConflictError struct {
	Key      string
	Channel  string
	Position int64
}

func (e *IdempotencyConflictError) Error() string {
	return fmt.Sprintf("idempotency key %q was already used on channel %q for a different event (position %d); "+
		"use a new key for a new event, or resend exactly the same type and data to retry", e.Key, e.Channel, e.Position)
}

func (e *IdempotencyConflictError) Unwrap() error { return ErrIdempotencyConflict }

// dataSum is what an idempotent retry's data is compared with: the stored
// event keeps the digest of the data first published under its key (an
// update replaces the data, not the digest; a delete erases both).
func dataSum(data []byte) [sha256.Size]byte { return sha256.Sum256(data) }

// Options are shared by every implementation.
type Options struct {
	// AutoCreate makes Append create unknown channels with DefaultSettings;
	// without it, appending to an unknown channel fails with
	// ErrChannelNotFound.
	AutoCreate bool
}

// Log is the event log. All methods are safe for concurrent use.
//
// Implementations that batch (Postgres) need Run to be running for Append to
// complete; Append then blocks until the event is committed or ctx ends.
type Log interface {
	// Run runs the log's background work (the batching writer) until ctx
	// ends, then fails queued appends with ErrClosed and returns nil.
	// Memory's Run only waits for ctx.
	Run(ctx context.Context) error
	// Append appends events, in order, and returns one result per input once
	// all are committed. errs[i] is the error of input i (nil on success);
	// an input's failure (too large, unknown channel) does not affect the
	// others. A non-nil err means nothing is known to be written (retry with
	// idempotency keys). A key reused for another type or data fails that
	// input with an IdempotencyConflictError, also within one call.
	Append(ctx context.Context, ps []Publish) (res []Published, errs []error, err error)
	// Update replaces the data of the published event at pos in channel
	// (and its format, unless format is FormatUnspecified) and appends an
	// Updated entry whose Author is author. It returns the
	// updated event (its Author unchanged) and the entry.
	Update(ctx context.Context, channel string, pos int64, data []byte, format Format, author string) (ev, entry Event, err error)
	// Delete erases the data of the published event at pos and of each of
	// its Updated entries (which are then marked Deleted too), and appends
	// a Deleted entry whose Author is author, all at once.
	Delete(ctx context.Context, channel string, pos int64, author string) (entry Event, err error)

	// Read returns entries for subscribers (see Query).
	Read(ctx context.Context, q Query) ([]Event, error)
	// Head returns the highest committed position (0 when empty).
	Head(ctx context.Context) (int64, error)
	// Watch blocks until ctx ends, calling wake (never concurrently, never
	// blocking for long) whenever entries may have been appended, and once
	// after every (re)connection to its source. It returns ctx.Err() or a
	// fatal error; transient failures are retried inside.
	Watch(ctx context.Context, wake func()) error

	// History returns a page of one channel's entries.
	History(ctx context.Context, q HistoryQuery) (Page, error)
	// Get returns one entry of a channel.
	Get(ctx context.Context, channel string, pos int64) (Event, error)

	CreateChannel(ctx context.Context, name string, s Settings) (Channel, error)
	GetChannel(ctx context.Context, name string) (Channel, error)
	// GetChannels returns the channels that exist among names (missing ones
	// are left out).
	GetChannels(ctx context.Context, names []string) ([]Channel, error)
	// TruncatedThrough returns the highest position removed by retention or
	// deletion from any of the named channels, including deleted channels
	// (0 when none): a cursor below it has a gap.
	TruncatedThrough(ctx context.Context, names []string) (int64, error)
	// ReplayState returns TruncatedThrough(names) and the position of the
	// last committed entry, read together (one round trip): a subscriber
	// about to be served a replay from memory checks with it that nothing
	// it would serve was removed, and that memory has seen every entry.
	ReplayState(ctx context.Context, names []string) (truncatedThrough, last int64, err error)
	// ListChannels lists channels by name after `after`, with prefix.
	ListChannels(ctx context.Context, after, prefix string, limit int) (ChannelPage, error)
	UpdateChannel(ctx context.Context, name string, p SettingsPatch) (Channel, error)
	// DeleteChannel removes a channel and its entries; TruncatedThrough of a
	// later channel with the same name covers them.
	DeleteChannel(ctx context.Context, name string) error

	// Trim applies retention at time now to every channel and returns how
	// many entries it removed. Safe to call from many instances: only one
	// trims at a time.
	Trim(ctx context.Context, now time.Time) (int64, error)
}
