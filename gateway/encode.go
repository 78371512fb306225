package gateway

import (
	"encoding/json"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// Wire options shared by every JSON endpoint: protojson field names
// (lowerCamelCase), zero values omitted, unknown fields refused with a
// clear error rather than silently dropped.
var (
	jsonOut = protojson.MarshalOptions{}
	jsonIn  = protojson.UnmarshalOptions{}
)

// encodeCache encodes each event once per wire format, however many
// subscribers receive it: the hub hands every subscriber the same entry at
// about the same time, and the first one to ask encodes it while the others
// wait for those bytes.
//
// Slots are indexed by position; an entry's key includes what an edit
// changes, because a replayed event carries its current data.
type encodeCache struct {
	json, bin [cacheSlots]atomic.Pointer[cached]
}

const cacheSlots = 4096 // a power of two

type eventKey struct {
	pos     int64
	updated int64 // update_time in ns, 0 when never edited
	deleted bool
}

type cached struct {
	key  eventKey
	once sync.Once
	b    []byte
}

func newEncodeCache() *encodeCache { return &encodeCache{} }

func keyOf(ev *heraldv1.Event) eventKey {
	k := eventKey{pos: ev.Position, deleted: ev.Deleted}
	if ev.UpdateTime != nil {
		k.updated = ev.UpdateTime.AsTime().UnixNano()
	}
	return k
}

func (c *encodeCache) get(slots *[cacheSlots]atomic.Pointer[cached], ev *heraldv1.Event, encode func(*heraldv1.Event) []byte) []byte {
	k := keyOf(ev)
	slot := &slots[uint64(ev.Position)&(cacheSlots-1)]
	e := slot.Load()
	if e == nil || e.key != k {
		fresh := &cached{key: k}
		if slot.CompareAndSwap(e, fresh) {
			e = fresh
		} else if e = slot.Load(); e == nil || e.key != k {
			e = fresh // lost a race to another position: encode uncached
		}
	}
	e.once.Do(func() { e.b = encode(ev) })
	return e.b
}

// eventJSON returns the protojson encoding of ev.
func (c *encodeCache) eventJSON(ev *heraldv1.Event) []byte {
	return c.get(&c.json, ev, func(ev *heraldv1.Event) []byte {
		b, err := jsonOut.Marshal(ev)
		if err != nil {
			panic(err) // an Event always marshals
		}
		return b
	})
}

// eventBinary returns the protobuf encoding of ev.
func (c *encodeCache) eventBinary(ev *heraldv1.Event) []byte {
	return c.get(&c.bin, ev, func(ev *heraldv1.Event) []byte {
		b, err := proto.Marshal(ev)
		if err != nil {
			panic(err)
		}
		return b
	})
}

// Field numbers of ConnectResponse used when splicing a cached event.
const (
	connectResponseID    = 1
	connectResponseEvent = 3
)

// connectResponseJSON encodes msg for a text frame. An event is spliced
// from the cache: {"id":...,"event":<cached>} is what protojson would write.
func (c *encodeCache) connectResponseJSON(msg *heraldv1.ConnectResponse) ([]byte, error) {
	ev := msg.GetEvent()
	if ev == nil {
		return jsonOut.Marshal(msg)
	}
	evb := c.eventJSON(ev)
	out := make([]byte, 0, len(evb)+len(msg.Id)+24)
	out = append(out, '{')
	if msg.Id != "" {
		id, _ := json.Marshal(msg.Id)
		out = append(out, `"id":`...)
		out = append(out, id...)
		out = append(out, ',')
	}
	out = append(out, `"event":`...)
	out = append(out, evb...)
	return append(out, '}'), nil
}

// connectResponseBinary encodes msg for a binary frame, splicing a cached
// event: protobuf messages concatenate field by field.
func (c *encodeCache) connectResponseBinary(msg *heraldv1.ConnectResponse) ([]byte, error) {
	ev := msg.GetEvent()
	if ev == nil {
		return proto.Marshal(msg)
	}
	evb := c.eventBinary(ev)
	out := make([]byte, 0, len(evb)+len(msg.Id)+16)
	if msg.Id != "" {
		out = protowire.AppendTag(out, connectResponseID, protowire.BytesType)
		out = protowire.AppendString(out, msg.Id)
	}
	out = protowire.AppendTag(out, connectResponseEvent, protowire.BytesType)
	return protowire.AppendBytes(out, evb), nil
}
