package services

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/wire"
)

// Item is what a Stream delivers: an event, or a notice that history the
// stream was replaying was removed meanwhile (retention). An event's forms
// are shared with every other subscriber of it: do not modify them.
type Item struct {
	entry      *wire.Entry
	notice     *heraldv1.Subscribed
	checkpoint int64
}

func itemOf(channels []string, m fanout.Message) Item {
	if m.Checkpoint != 0 {
		return Item{checkpoint: m.Checkpoint}
	}
	if m.Truncation != nil {
		return Item{notice: subscribedProto(channels, *m.Truncation)}
	}
	return Item{entry: m.Entry}
}

// IsEvent reports whether the item is an event (else a Notice).
func (it Item) IsEvent() bool { return it.entry != nil }

// Event is the API form of the event; nil for a notice.
func (it Item) Event() *heraldv1.Event {
	if it.entry == nil {
		return nil
	}
	return it.entry.Proto()
}

// Position is the event's position (0 for a notice).
func (it Item) Position() int64 {
	if it.entry == nil {
		return 0
	}
	return it.entry.Position()
}

// Type is the event's type.
func (it Item) Type() string {
	if it.entry == nil {
		return ""
	}
	return it.entry.Event().Type
}

// EventJSON is the JSON encoding of the event, made once for every
// subscriber and transport.
func (it Item) EventJSON() []byte { return it.entry.JSON() }

// Notice is the truncation notice; nil for an event.
func (it Item) Notice() *heraldv1.Subscribed { return it.notice }

// Checkpoint is the position a filtered stream advanced to past events
// its filter dropped (0 unless the item is a checkpoint): resume from it
// as from an event's position.
func (it Item) Checkpoint() int64 { return it.checkpoint }

// Field numbers used when splicing a pre-encoded event into a message:
// protobuf messages concatenate field by field.
const (
	subscribeResponseEvent = 2 // SubscribeResponse.event
	connectResponseID      = 1 // ConnectResponse.id
	connectResponseEvent   = 3 // ConnectResponse.event
)

// subscribeFrame is an Item as a SubscribeResponse; the codecs write it
// from the shared encodings.
type subscribeFrame struct{ Item }

func (f subscribeFrame) proto() *heraldv1.SubscribeResponse {
	if f.checkpoint != 0 {
		return &heraldv1.SubscribeResponse{Message: &heraldv1.SubscribeResponse_Checkpoint{
			Checkpoint: &heraldv1.Checkpoint{Position: f.checkpoint}}}
	}
	if f.entry == nil {
		return &heraldv1.SubscribeResponse{Message: &heraldv1.SubscribeResponse_Subscribed{Subscribed: f.notice}}
	}
	return &heraldv1.SubscribeResponse{Message: &heraldv1.SubscribeResponse_Event{Event: f.entry.Proto()}}
}

func (f subscribeFrame) appendBinary(dst []byte) ([]byte, error) {
	if f.entry == nil {
		return proto.MarshalOptions{}.MarshalAppend(dst, f.proto())
	}
	dst = protowire.AppendTag(dst, subscribeResponseEvent, protowire.BytesType)
	return protowire.AppendBytes(dst, f.entry.Binary()), nil
}

func (f subscribeFrame) appendJSON(dst []byte) ([]byte, error) {
	if f.entry == nil {
		return wire.AppendJSON(dst, f.proto())
	}
	dst = append(dst, `{"event":`...)
	dst = append(dst, f.entry.JSON()...)
	return append(dst, '}'), nil
}

// Frame is one message of a bidirectional session, a
// herald.v1.ConnectResponse: an event frame is written from the event's
// shared encodings, anything else from its message.
type Frame struct {
	id    string
	entry *wire.Entry
	msg   *heraldv1.ConnectResponse
}

func eventFrame(id string, e *wire.Entry) *Frame { return &Frame{id: id, entry: e} }

func msgFrame(msg *heraldv1.ConnectResponse) *Frame { return &Frame{id: msg.GetId(), msg: msg} }

// ID is the command or subscription id the frame answers.
func (f *Frame) ID() string { return f.id }

// Proto returns the frame as a message (built for an event frame).
func (f *Frame) Proto() *heraldv1.ConnectResponse {
	if f.entry == nil {
		return f.msg
	}
	return &heraldv1.ConnectResponse{Id: f.id, Message: &heraldv1.ConnectResponse_Event{Event: f.entry.Proto()}}
}

// AppendBinary appends the protobuf encoding of the frame.
func (f *Frame) AppendBinary(dst []byte) ([]byte, error) {
	if f.entry == nil {
		return proto.MarshalOptions{}.MarshalAppend(dst, f.msg)
	}
	if f.id != "" {
		dst = protowire.AppendTag(dst, connectResponseID, protowire.BytesType)
		dst = protowire.AppendString(dst, f.id)
	}
	dst = protowire.AppendTag(dst, connectResponseEvent, protowire.BytesType)
	return protowire.AppendBytes(dst, f.entry.Binary()), nil
}

// AppendJSON appends the JSON encoding of the frame.
func (f *Frame) AppendJSON(dst []byte) ([]byte, error) {
	if f.entry == nil {
		return wire.AppendJSON(dst, f.msg)
	}
	dst = append(dst, '{')
	if f.id != "" {
		dst = append(dst, `"id":`...)
		dst = wire.AppendJSONString(dst, f.id)
		dst = append(dst, ',')
	}
	dst = append(dst, `"event":`...)
	dst = append(dst, f.entry.JSON()...)
	return append(dst, '}'), nil
}
