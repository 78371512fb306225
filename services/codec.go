package services

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/heraldrt/herald/internal/wire"
	"google.golang.org/protobuf/proto"
)

// Every JSON encoding (REST, SSE, WebSocket text frames, the Connect
// protocol's JSON) uses Herald's JSON mapping (internal/wire): protojson's,
// with the data of events, publishes and edits written and read by their
// format (a JSON value, a string, or base64 for bytes). Unknown fields are
// refused when REST and WebSocket decode (a typo must not be silently
// dropped), and skipped by the RPC codec (as connect-go does, so that
// clients on a newer schema keep working).

// MarshalJSON encodes msg as every JSON transport does.
func MarshalJSON(msg proto.Message) ([]byte, error) { return wire.MarshalJSON(msg) }

// UnmarshalJSON decodes a JSON request as REST and WebSocket do: unknown
// fields are an error, and so is a data member that does not read as its
// format (invalid_argument).
func UnmarshalJSON(b []byte, msg proto.Message) error { return unmarshalJSON(b, msg, false) }

func unmarshalJSON(b []byte, msg proto.Message, discardUnknown bool) error {
	err := wire.UnmarshalJSON(b, msg, discardUnknown)
	if errors.Is(err, wire.ErrData) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid request: %s", strings.TrimPrefix(err.Error(), wire.ErrData.Error()+": ")))
	}
	return err
}

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
		return wire.AppendJSON(dst, f)
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
	if err := unmarshalJSON(b, pm, true); err != nil {
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			return err
		}
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
