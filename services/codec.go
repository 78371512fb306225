package services

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Wire options of every JSON encoding: protojson field names
// (lowerCamelCase), zero values left out; unknown fields are refused when
// REST and WebSocket decode (a typo must not be silently dropped), and
// skipped by the RPC codec (as connect-go does, so that clients on a newer
// schema keep working).
var (
	jsonOut = protojson.MarshalOptions{}
	jsonIn  = protojson.UnmarshalOptions{}
)

// MarshalJSON encodes msg as every JSON transport does.
func MarshalJSON(msg proto.Message) ([]byte, error) { return jsonOut.Marshal(msg) }

// UnmarshalJSON decodes a JSON request as REST and WebSocket do: unknown
// fields are an error.
func UnmarshalJSON(b []byte, msg proto.Message) error { return jsonIn.Unmarshal(b, msg) }

// The codecs the RPC handlers use: connect-go's protobuf and JSON codecs,
// except that stream frames (Frame, subscribeFrame) are written from the
// events' shared encodings instead of being marshalled again for every
// subscriber. MarshalAppend writes into connect-go's pooled buffer, so a
// delivered event costs a copy of its bytes, not an encoding.

type binaryCodec struct{}

func (binaryCodec) Name() string { return "proto" }

func (c binaryCodec) Marshal(m any) ([]byte, error) { return c.MarshalAppend(nil, m) }

func (binaryCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	switch f := m.(type) {
	case *Frame:
		return f.AppendBinary(dst)
	case subscribeFrame:
		return f.appendBinary(dst)
	case proto.Message:
		return proto.MarshalOptions{}.MarshalAppend(dst, f)
	}
	return nil, fmt.Errorf("proto codec: cannot marshal %T", m)
}

func (binaryCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("proto codec: cannot unmarshal into %T", m)
	}
	if err := proto.Unmarshal(b, pm); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

func (c binaryCodec) MarshalStable(m any) ([]byte, error) {
	if pm, ok := m.(proto.Message); ok {
		return proto.MarshalOptions{Deterministic: true}.Marshal(pm)
	}
	return c.Marshal(m)
}

func (binaryCodec) IsBinary() bool { return true }

// jsonCodec serves both names connect-go registers for JSON.
type jsonCodec struct{ name string }

func (c jsonCodec) Name() string { return c.name }

func (c jsonCodec) Marshal(m any) ([]byte, error) { return c.MarshalAppend(nil, m) }

func (jsonCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	switch f := m.(type) {
	case *Frame:
		return f.AppendJSON(dst)
	case subscribeFrame:
		return f.appendJSON(dst)
	case proto.Message:
		return jsonOut.MarshalAppend(dst, f)
	}
	return nil, fmt.Errorf("json codec: cannot marshal %T", m)
}

func (jsonCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("json codec: cannot unmarshal into %T", m)
	}
	if len(b) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, pm); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

func (c jsonCodec) MarshalStable(m any) ([]byte, error) {
	b, err := c.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (jsonCodec) IsBinary() bool { return false }
