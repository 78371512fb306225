package gateway

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
	"unicode/utf8"
)

// bytesConn is a readConn over fixed bytes.
type bytesConn struct{ *bytes.Reader }

func (bytesConn) SetReadDeadline(time.Time) error { return nil }

type countingControl struct{ pings, pongs int }

func (c *countingControl) ping(p []byte) {
	if len(p) > maxControlPayload {
		panic("oversized ping payload")
	}
	c.pings++
}
func (c *countingControl) pong() { c.pongs++ }

// FuzzWSFrame: any byte stream from a client yields messages within the
// limit (text ones valid UTF-8), then ends with the client's close (a code
// allowed on the wire), a violation closing with 1002, 1007 or 1009, or
// the end of the input; never a panic.
func FuzzWSFrame(f *testing.F) {
	masked := func(b0 byte, p []byte) []byte {
		out := []byte{b0, 0x80 | byte(len(p)), 1, 2, 3, 4}
		for i, c := range p {
			out = append(out, c^[]byte{1, 2, 3, 4}[i%4])
		}
		return out
	}
	f.Add(masked(0x81, []byte(`{"id":"p","ping":{}}`)))
	f.Add(append(masked(0x01, []byte("ab")), append(masked(0x89, []byte("x")), masked(0x80, []byte("c"))...)...))
	f.Add(masked(0x88, []byte{0x03, 0xe8, 'o', 'k'}))
	f.Add(masked(0x88, []byte{0x03}))
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})
	f.Add(masked(0xc1, []byte("x")))
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 10
		r := newWSReader(bytesConn{bytes.NewReader(data)}, nil, limit, time.Second)
		var c countingControl
		for {
			op, msg, err := r.next(&c)
			if err != nil {
				var v *wsCloseError
				var bye *peerClose
				switch {
				case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				case errors.As(err, &v):
					if v.code != StatusProtocolError && v.code != StatusInvalidData && v.code != StatusTooBig {
						t.Fatalf("violation closes with %d", v.code)
					}
					if len(appendClose(nil, v.code, v.reason)) > 2+2+maxControlPayload {
						t.Fatal("close frame over the control frame limit")
					}
				case errors.As(err, &bye):
					if bye.code != 0 && !validCloseCode(bye.code) || !utf8.ValidString(bye.reason) {
						t.Fatalf("accepted close %d %q", bye.code, bye.reason)
					}
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(msg) > limit {
				t.Fatalf("message of %d bytes over the limit", len(msg))
			}
			if op == opText && !utf8.Valid(msg) {
				t.Fatal("invalid UTF-8 text message accepted")
			}
			if op != opText && op != opBinary {
				t.Fatalf("message with opcode %d", op)
			}
			r.release()
		}
	})
}
