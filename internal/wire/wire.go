// Package wire owns the wire forms of one log entry: the API event
// (herald.v1.Event) and its encodings (protobuf and JSON). An Entry makes
// each form at most once, when a transport first asks for it, and every
// subscriber and every transport that delivers the entry shares the result:
// the hub hands one *Entry to all subscriptions of its channel, so an event
// delivered to 10,000 subscribers over gRPC, WebSocket and SSE is converted
// once and encoded once per format.
//
// Entries are immutable once made (the forms are computed from the entry's
// event, which never changes), so they are safe for concurrent use. An edit
// or a deletion of an event is a new log entry, and a replay of the edited
// event reads a new Entry from the log.
package wire

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
)

// Entry is one log entry and its wire forms, made lazily and shared.
type Entry struct {
	ev eventlog.Event

	pbOnce, jsonOnce, binOnce sync.Once
	pb                        *heraldv1.Event
	json, bin                 []byte
}

// New returns the entry of ev. ev is copied; its Data is shared, not copied
// (log events are never modified).
func New(ev eventlog.Event) *Entry { return &Entry{ev: ev} }

// Event returns the log entry. Do not modify it.
func (e *Entry) Event() *eventlog.Event { return &e.ev }

// Position is the entry's position in the log.
func (e *Entry) Position() int64 { return e.ev.Position }

// Proto returns the API form of the entry, shared by every caller: do not
// modify it.
func (e *Entry) Proto() *heraldv1.Event {
	e.pbOnce.Do(func() { e.pb = EventProto(&e.ev) })
	return e.pb
}

// JSON returns the JSON encoding of the API event (as every JSON transport
// writes it), shared: do not modify it.
func (e *Entry) JSON() []byte {
	e.jsonOnce.Do(func() { e.json = AppendEventJSON(nil, e.Proto()) })
	return e.json
}

// Binary returns the protobuf encoding of the API event, shared: do not
// modify it.
func (e *Entry) Binary() []byte {
	e.binOnce.Do(func() {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.Proto())
		if err != nil {
			panic(err) // an Event always marshals
		}
		e.bin = b
	})
	return e.bin
}

// entryOverhead approximates what an Entry costs besides its strings and
// data: the struct, the API event and the encodings' fixed parts.
const entryOverhead = 640

// Cost is an upper estimate of the memory the entry holds once every form
// is made: the data once in the event and once in each encoding (JSON
// escapes or base64 may grow it by a third; the JSON form is counted at
// twice the data to stay an upper bound), plus strings and fixed parts.
// Queues and caches bound their memory by summing it.
func (e *Entry) Cost() int64 {
	n := len(e.ev.Data)
	strs := len(e.ev.Channel) + len(e.ev.Type) + len(e.ev.IdempotencyKey) + len(e.ev.Author)
	for k, v := range e.ev.Tags {
		strs += len(k) + len(v) + 16
	}
	return int64(4*n + 3*strs + entryOverhead)
}

// EventProto converts a log entry to its API form.
func EventProto(ev *eventlog.Event) *heraldv1.Event {
	p := &heraldv1.Event{
		Position:       ev.Position,
		Channel:        ev.Channel,
		Type:           ev.Type,
		Data:           ev.Data,
		Kind:           heraldv1.EventKind(ev.Kind),
		TargetPosition: ev.Target,
		IdempotencyKey: ev.IdempotencyKey,
		Deleted:        ev.Deleted,
		Author:         ev.Author,
		Format:         heraldv1.DataFormat(ev.Format),
		Seq:            ev.Seq,
		Tags:           ev.Tags,
	}
	if !ev.CreatedAt.IsZero() {
		p.CreateTime = timestamppb.New(ev.CreatedAt)
	}
	if !ev.UpdatedAt.IsZero() {
		p.UpdateTime = timestamppb.New(ev.UpdatedAt)
	}
	return p
}
