package bench

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// jsonOut encodes commands for herald.v1.json text frames.
var jsonOut = protojson.MarshalOptions{}

// frameKind says what a server message is.
type frameKind int

const (
	frameOther frameKind = iota
	frameEvent
	frameSubscribed
	frameError
)

// frame is what the load tool needs from one server message.
type frame struct {
	kind   frameKind
	pos    int64 // frameEvent: the event's position
	sent   int64 // frameEvent: publish time carried in the data (unix ns), 0 if none
	cursor int64 // frameSubscribed: the cursor the subscription starts after
	err    string
}

// The event's data starts with the publish time, 8 bytes big-endian unix
// nanoseconds; the rest is padding up to -size.
const stampBytes = 8

// eventData returns size bytes (at least stampBytes) carrying t.
func eventData(t time.Time, size int) []byte {
	b := make([]byte, max(size, stampBytes))
	binary.BigEndian.PutUint64(b, uint64(t.UnixNano()))
	for i := stampBytes; i < len(b); i++ {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// stampOf returns the publish time in data, 0 when data is too short.
func stampOf(data []byte) int64 {
	if len(data) < stampBytes {
		return 0
	}
	return int64(binary.BigEndian.Uint64(data))
}

// stampOfBase64 decodes only the prefix of a base64 data field that holds
// the publish time: 12 characters are 9 bytes.
func stampOfBase64(s []byte) int64 {
	if len(s) < 12 {
		d, err := base64.StdEncoding.DecodeString(string(s))
		if err != nil {
			return 0
		}
		return stampOf(d)
	}
	var d [9]byte
	if _, err := base64.StdEncoding.Decode(d[:], s[:12]); err != nil {
		return 0
	}
	return stampOf(d[:])
}

// parseEventJSON reads position and publish time out of a protojson Event
// (the SSE data line, or the object after "event": in a WebSocket text
// frame) without decoding the whole message: at 100k+ frames/s the load
// tool shares the CPU with the server, and a full protojson decode would
// cost more than the server's send. protojson may put a space after the
// colon; values are escaped, so a key pattern cannot match inside a value.
func parseEventJSON(b []byte) (pos, sent int64, err error) {
	p, ok := stringField(b, `"position":`)
	if !ok {
		return 0, 0, errors.New("event without position")
	}
	pos, err = strconv.ParseInt(string(p), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("event position %q: %w", p, err)
	}
	if d, ok := stringField(b, `"data":`); ok {
		sent = stampOfBase64(d)
	}
	return pos, sent, nil
}

// stringField returns the string value after the first occurrence of key
// (a quoted name with its colon) in b, unescaped characters only.
func stringField(b []byte, key string) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	b = bytes.TrimLeft(b[i+len(key):], " \t\r\n")
	if len(b) == 0 || b[0] != '"' {
		return nil, false
	}
	b = b[1:]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return nil, false
	}
	return b[:j], true
}

// wsMessage is the slow-path shape of a herald.v1.json text frame that is
// not an event.
type wsMessage struct {
	ID         string `json:"id"`
	Subscribed *struct {
		Cursor string `json:"cursor"`
	} `json:"subscribed"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		End     *struct {
			Reason       string `json:"reason"`
			LastPosition string `json:"lastPosition"`
		} `json:"end"`
	} `json:"error"`
}

// parseWSJSON decodes one herald.v1.json text frame.
func parseWSJSON(b []byte) (frame, error) {
	if i := bytes.Index(b, []byte(`"event":`)); i >= 0 {
		pos, sent, err := parseEventJSON(b[i:])
		if err != nil {
			return frame{}, err
		}
		return frame{kind: frameEvent, pos: pos, sent: sent}, nil
	}
	var m wsMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return frame{}, fmt.Errorf("decode frame: %w", err)
	}
	switch {
	case m.Subscribed != nil:
		c, _ := strconv.ParseInt(m.Subscribed.Cursor, 10, 64)
		return frame{kind: frameSubscribed, cursor: c}, nil
	case m.Error != nil:
		msg := m.Error.Code + ": " + m.Error.Message
		if e := m.Error.End; e != nil {
			msg += fmt.Sprintf(" (end %s after %s)", e.Reason, e.LastPosition)
		}
		return frame{kind: frameError, err: msg}, nil
	}
	return frame{kind: frameOther}, nil
}

// frameOfProto reads one herald.v1.proto binary frame, already decoded
// into m.
func frameOfProto(m *heraldv1.ConnectResponse) frame {
	switch msg := m.Message.(type) {
	case *heraldv1.ConnectResponse_Event:
		return frame{kind: frameEvent, pos: msg.Event.GetPosition(), sent: stampOf(msg.Event.GetData())}
	case *heraldv1.ConnectResponse_Subscribed:
		return frame{kind: frameSubscribed, cursor: msg.Subscribed.GetCursor()}
	case *heraldv1.ConnectResponse_Error:
		e := msg.Error
		s := e.GetCode() + ": " + e.GetMessage()
		if end := e.GetEnd(); end != nil {
			s += fmt.Sprintf(" (end %s after %d)", end.GetReason(), end.GetLastPosition())
		}
		return frame{kind: frameError, err: s}
	}
	return frame{kind: frameOther}
}
