package gateway

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// RFC 6455 framing, server side: what the WebSocket transport reads from
// and writes to the hijacked connection. Only what Herald needs: no
// extensions (a client offering permessage-deflate gets none), messages
// sent unfragmented, every client frame checked as section 5 requires.

// Opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// maxControlPayload is the largest payload of a control frame (5.5).
const maxControlPayload = 125

// maxHeader is the longest header of a frame the server sends (unmasked,
// 64-bit length).
const maxHeader = 10

// wsCloseError is a violation by the client: the connection fails with
// code (1002, 1007 or 1009) and reason.
type wsCloseError struct {
	code   int
	reason string
}

func (e *wsCloseError) Error() string {
	return fmt.Sprintf("websocket: %s (close %d)", e.reason, e.code)
}

func protocolError(format string, args ...any) error {
	return &wsCloseError{code: StatusProtocolError, reason: fmt.Sprintf(format, args...)}
}

// peerClose is the client's close frame: the connection ends, and the
// server answers with the same code (0: the frame had none).
type peerClose struct {
	code   int
	reason string
}

func (e *peerClose) Error() string {
	if e.code == 0 {
		return "websocket: closed by the client"
	}
	return fmt.Sprintf("websocket: closed by the client with %d %q", e.code, e.reason)
}

// validCloseCode reports whether a close frame may carry code (7.4): the
// codes RFC 6455 and the IANA registry define for use on the wire, and the
// ranges for libraries (3000–3999) and applications (4000–4999). 1005,
// 1006 and 1015 are only reported locally, never sent.
func validCloseCode(code int) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != 1005 && code != 1006
	}
	return false
}

// appendHeader appends the header of an unmasked, final server frame
// with a payload of n bytes.
func appendHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// appendClose appends a close frame with code and reason (cut to fit a
// control frame).
func appendClose(b []byte, code int, reason string) []byte {
	if code == 0 {
		return appendHeader(b, opClose, 0)
	}
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b = appendHeader(b, opClose, 2+len(reason))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, reason...)
}

// buffers are the pooled byte slices of the WebSocket transport: write
// batches and message payloads. An idle connection holds none.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooled is the largest buffer put back: a rare large message does not
// keep its buffer alive in the pool.
const maxPooled = 64 << 10

func getBuffer() []byte { return (*buffers.Get().(*[]byte))[:0] }

func putBuffer(b []byte) {
	if b != nil && cap(b) <= maxPooled {
		b = b[:0]
		buffers.Put(&b)
	}
}

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// readConn is what the frame reader reads from: the hijacked connection
// (or, in tests, anything with deadlines).
type readConn interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// wsReader reads client messages. Between messages it holds no buffer:
// it waits for the next byte with a one-byte read, and only then borrows
// a pooled bufio.Reader, which it gives back once a message is read and
// nothing more is buffered. Once a message has begun, it must arrive
// within timeout (a client trickling a frame cannot hold the connection
// and its buffer); between messages a client may stay silent for as long
// as it answers pings.
//
// Only the connection's reader goroutine uses a wsReader.
type wsReader struct {
	src     wsSource
	br      *bufio.Reader // nil while idle
	limit   int           // the largest message
	timeout time.Duration // 0: none
	msg     []byte        // the message being assembled; pooled
	ctl     [maxControlPayload]byte
}

// wsSource is the bufio.Reader's source: bytes read ahead (with the
// handshake, or the byte an idle wait read), then the connection.
type wsSource struct {
	conn readConn
	pre  []byte
	one  [1]byte
}

func (s *wsSource) Read(p []byte) (int, error) {
	if len(s.pre) > 0 {
		n := copy(p, s.pre)
		s.pre = s.pre[n:]
		return n, nil
	}
	return s.conn.Read(p)
}

func newWSReader(conn readConn, pre []byte, limit int, timeout time.Duration) *wsReader {
	return &wsReader{src: wsSource{conn: conn, pre: pre}, limit: limit, timeout: timeout}
}

// control is what the reader does with control frames between and inside
// messages.
type control interface {
	ping(payload []byte)
	pong()
}

// next reads the next message and returns its opcode (opText or
// opBinary) and payload, which is valid until the next call. Control
// frames are handled on the way: pings and pongs by c, a close frame
// ends reading with a *peerClose. Violations are *wsCloseError; a broken
// connection is its read error.
func (r *wsReader) next(c control) (byte, []byte, error) {
	if err := r.begin(); err != nil {
		return 0, nil, err
	}
	putBuffer(r.msg)
	r.msg = nil
	var op byte // of the message being assembled; 0: none yet
	for {
		fin, fop, n, key, err := r.header()
		if err != nil {
			return 0, nil, err
		}
		if fop >= opClose {
			p := r.ctl[:n]
			if _, err := io.ReadFull(r.br, p); err != nil {
				return 0, nil, unexpected(err)
			}
			mask(p, key)
			switch fop {
			case opPing:
				c.ping(p)
			case opPong:
				c.pong()
			case opClose:
				return 0, nil, closeFrame(p)
			}
			if op == 0 {
				// A control frame between messages: wait for the next
				// message as an idle connection does.
				if err := r.idle(); err != nil {
					return 0, nil, err
				}
			}
			continue
		}
		switch {
		case fop == opContinuation && op == 0:
			return 0, nil, protocolError("continuation frame without a message to continue")
		case fop != opContinuation && op != 0:
			return 0, nil, protocolError("new message before the final fragment of the previous one")
		case fop != opContinuation:
			op = fop
		}
		if int64(len(r.msg))+n > int64(r.limit) {
			return 0, nil, &wsCloseError{code: StatusTooBig,
				reason: fmt.Sprintf("message over %d bytes: send smaller messages", r.limit)}
		}
		if err := r.payload(int(n), key); err != nil {
			return 0, nil, err
		}
		if !fin {
			continue
		}
		if op == opText && !utf8.Valid(r.msg) {
			return 0, nil, &wsCloseError{code: StatusInvalidData, reason: "text message is not valid UTF-8"}
		}
		return op, r.msg, r.idle()
	}
}

// begin waits, holding no buffer, until a message begins, then arms the
// message timeout.
func (r *wsReader) begin() error {
	if r.br == nil {
		if len(r.src.pre) == 0 {
			if _, err := io.ReadFull(r.src.conn, r.src.one[:]); err != nil {
				return err
			}
			r.src.pre = r.src.one[:]
		}
		r.br = readers.Get().(*bufio.Reader)
		r.br.Reset(&r.src)
	}
	if r.timeout > 0 {
		return r.src.conn.SetReadDeadline(time.Now().Add(r.timeout))
	}
	return nil
}

// idle ends a message: the timeout no longer applies, and the buffer goes
// back to the pool unless more is buffered.
func (r *wsReader) idle() error {
	if r.timeout > 0 {
		if err := r.src.conn.SetReadDeadline(time.Time{}); err != nil {
			return err
		}
	}
	if r.br != nil && r.br.Buffered() == 0 {
		r.br.Reset(nil)
		readers.Put(r.br)
		r.br = nil
	}
	if r.br != nil {
		return r.begin() // the next message is already here
	}
	return nil
}

// release gives back the last message's buffer.
func (r *wsReader) release() {
	putBuffer(r.msg)
	r.msg = nil
	if r.br != nil && r.br.Buffered() == 0 {
		r.br.Reset(nil)
		readers.Put(r.br)
		r.br = nil
	}
}

// header reads and checks a frame header (5.2): no RSV bits (no extension
// is negotiated), no reserved opcode, masked, a 64-bit length with its
// top bit clear, control frames final and at most 125 bytes.
func (r *wsReader) header() (fin bool, op byte, n int64, key [4]byte, err error) {
	if r.br == nil {
		if err = r.begin(); err != nil {
			return
		}
	}
	var h [2]byte
	if _, err = io.ReadFull(r.br, h[:]); err != nil {
		err = unexpected(err)
		return
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0f
	switch {
	case h[0]&0x70 != 0:
		err = protocolError("RSV bits set, but no extension was negotiated")
		return
	case op > opBinary && op < opClose || op > opPong:
		err = protocolError("reserved opcode %#x", op)
		return
	case h[1]&0x80 == 0:
		err = protocolError("client frames must be masked")
		return
	}
	n = int64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(r.br, b[:]); err != nil {
			err = unexpected(err)
			return
		}
		n = int64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(r.br, b[:]); err != nil {
			err = unexpected(err)
			return
		}
		u := binary.BigEndian.Uint64(b[:])
		if u>>63 != 0 {
			err = protocolError("64-bit payload length with its most significant bit set")
			return
		}
		n = int64(u)
	}
	if op >= opClose {
		switch {
		case !fin:
			err = protocolError("fragmented control frame")
			return
		case n > maxControlPayload:
			err = protocolError("control frame payload of %d bytes, over 125", n)
			return
		}
	}
	if _, err = io.ReadFull(r.br, key[:]); err != nil {
		err = unexpected(err)
	}
	return
}

// payload appends n unmasked payload bytes to the message, growing it as
// the bytes arrive rather than by the length the header declares.
func (r *wsReader) payload(n int, key [4]byte) error {
	if r.msg == nil {
		r.msg = getBuffer()
	}
	start := len(r.msg)
	for rest := n; rest > 0; {
		if len(r.msg) == cap(r.msg) {
			r.msg = slices.Grow(r.msg, min(rest, max(cap(r.msg), 512)))
		}
		k, err := r.br.Read(r.msg[len(r.msg):min(cap(r.msg), len(r.msg)+rest)])
		r.msg = r.msg[:len(r.msg)+k]
		rest -= k
		if err != nil && rest > 0 {
			return unexpected(err)
		}
	}
	mask(r.msg[start:], key)
	return nil
}

// closeFrame checks the payload of a client's close frame (5.5.1, 7.4).
func closeFrame(p []byte) error {
	switch {
	case len(p) == 0:
		return &peerClose{}
	case len(p) == 1:
		return protocolError("close frame with a 1-byte payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return protocolError("close code %d may not be sent", code)
	}
	if !utf8.Valid(p[2:]) {
		return &wsCloseError{code: StatusInvalidData, reason: "close reason is not valid UTF-8"}
	}
	return &peerClose{code: code, reason: string(p[2:])}
}

// mask applies the masking key to p, which starts at the payload's first
// byte.
func mask(p []byte, key [4]byte) {
	k := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k) | uint64(k)<<32
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k64)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
