package ephemeral

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Kind says what a Message is.
type Kind uint8

// The kinds of message.
const (
	Signal Kind = iota + 1
	Join
	Leave
)

// Message is a signal, a join or a leave, as it travels between instances.
type Message struct {
	Kind    Kind   `json:"k"`
	Channel string `json:"c"`
	// Signals.
	Type   string `json:"t,omitempty"`
	Data   []byte `json:"d,omitempty"`
	Format int32  `json:"f,omitempty"`
	Author string `json:"a,omitempty"`
	// TimeMicros: when the signal was sent, or the member joined (Unix
	// microseconds).
	TimeMicros int64 `json:"ts,omitempty"`
	// Joins and leaves.
	Member Member `json:"m"`
}

// Member is one subscription in a channel's presence set.
type Member struct {
	ClientID   string `json:"id,omitempty"`
	User       string `json:"u,omitempty"`
	Info       string `json:"i,omitempty"` // JSON text, or ""
	JoinMicros int64  `json:"j,omitempty"`
}

// Joined returns when the member joined.
func (m Member) Joined() time.Time { return time.UnixMicro(m.JoinMicros) }

// Time returns the signal's time.
func (m Message) Time() time.Time { return time.UnixMicro(m.TimeMicros) }

// MaxPayload is PostgreSQL's NOTIFY payload limit (8000 bytes) less a
// margin: a Message encoded larger is refused with ErrTooLarge.
const MaxPayload = 7900

// ErrTooLarge: the message does not fit a notification.
var ErrTooLarge = errors.New("signal too large for a notification")

func encode(m Message) (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	if len(b) > MaxPayload {
		return "", fmt.Errorf("%w: %d bytes encoded, at most %d", ErrTooLarge, len(b), MaxPayload)
	}
	return string(b), nil
}

func decode(payload string) (Message, error) {
	var m Message
	err := json.Unmarshal([]byte(payload), &m)
	return m, err
}

// Page is one page of a presence set.
type Page struct {
	Members []Member
	// Count is the size of the whole set.
	Count int64
	// More: members after the last of this page exist.
	More bool
}
