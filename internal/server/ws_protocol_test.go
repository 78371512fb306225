package server_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/gateway"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// rawWS is a WebSocket client that writes frames byte by byte over a plain
// TCP connection after a real upgrade handshake, so that tests can send
// what no WebSocket library would.
type rawWS struct {
	conn net.Conn
	br   *bufio.Reader
}

// dialRawWS opens a TCP connection to base and upgrades it to a WebSocket
// speaking subprotocol.
func dialRawWS(t *testing.T, base, subprotocol string) *rawWS {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
		strings.TrimPrefix(base, "http://"), base64.StdEncoding.EncodeToString(key), subprotocol)
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Protocol") != subprotocol {
		t.Fatalf("handshake: %s %v", resp.Status, resp.Header)
	}
	return &rawWS{conn: conn, br: br}
}

// frame writes one client frame: b0 is the first byte (FIN, RSV, opcode)
// as given; the payload is masked unless unmasked is set.
func (w *rawWS) frame(t *testing.T, b0 byte, payload []byte, unmasked bool) {
	t.Helper()
	if err := w.write(b0, payload, unmasked); err != nil {
		t.Fatal(err)
	}
}

func (w *rawWS) write(b0 byte, payload []byte, unmasked bool) error {
	buf := []byte{b0}
	mask := byte(0x80)
	if unmasked {
		mask = 0
	}
	switch n := len(payload); {
	case n <= 125:
		buf = append(buf, mask|byte(n))
	case n <= 0xffff:
		buf = append(buf, mask|126)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	default:
		buf = append(buf, mask|127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if !unmasked {
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		buf = append(buf, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	_, err := w.conn.Write(append(buf, p...))
	return err
}

// bytes writes raw bytes.
func (w *rawWS) bytes(t *testing.T, b []byte) {
	t.Helper()
	if _, err := w.conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

// serverFrame is one frame read from the server.
type serverFrame struct {
	fin     bool
	opcode  byte
	payload []byte
}

// read reads one server frame, checking that it is unmasked and has no
// RSV bits.
func (w *rawWS) read() (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return serverFrame{}, fmt.Errorf("server frame with RSV bits or a mask: % x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(w.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{fin: h[0]&0x80 != 0, opcode: h[0] & 0x0f, payload: p}, nil
}

// closeCode reads frames until the server's close frame and returns its
// code (0 for an empty close frame), skipping data frames and pings.
// After the close frame the server must close the TCP connection.
func (w *rawWS) closeCode(t *testing.T) int {
	t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := w.read()
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		if f.opcode != 8 {
			continue
		}
		code := 0
		if len(f.payload) >= 2 {
			code = int(binary.BigEndian.Uint16(f.payload))
		}
		// The server closes the TCP connection after its close frame
		// (here, after ours).
		w.frame(t, 0x88, f.payload[:min(2, len(f.payload))], false)
		if _, err := w.read(); !errors.Is(err, io.EOF) && !isConnReset(err) {
			t.Fatalf("after the close frame: %v, want the connection closed", err)
		}
		return code
	}
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestWSProtocolErrors: every violation of RFC 6455 by a client closes the
// connection with the code the RFC and docs/gateway.md give: 1002 for
// protocol errors, 1007 for invalid UTF-8 in a text message or close
// reason, 1009 for a message over the limit.
func TestWSProtocolErrors(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Services: services.Config{MaxMessageBytes: 1 << 10}})
	closeWith := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	ping := []byte(`{"id":"p","ping":{}}`)
	for _, tc := range []struct {
		name string
		send func(t *testing.T, w *rawWS)
		want int
	}{
		{"unmasked frame", func(t *testing.T, w *rawWS) { w.frame(t, 0x81, ping, true) }, 1002},
		{"64-bit length with the top bit set", func(t *testing.T, w *rawWS) {
			w.bytes(t, []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})
		}, 1002},
		{"reserved data opcode", func(t *testing.T, w *rawWS) { w.frame(t, 0x83, ping, false) }, 1002},
		{"reserved control opcode", func(t *testing.T, w *rawWS) { w.frame(t, 0x8b, nil, false) }, 1002},
		{"RSV1 without an extension", func(t *testing.T, w *rawWS) { w.frame(t, 0xc1, ping, false) }, 1002},
		{"RSV2", func(t *testing.T, w *rawWS) { w.frame(t, 0xa1, ping, false) }, 1002},
		{"RSV3", func(t *testing.T, w *rawWS) { w.frame(t, 0x91, ping, false) }, 1002},
		{"fragmented ping", func(t *testing.T, w *rawWS) { w.frame(t, 0x09, []byte("x"), false) }, 1002},
		{"fragmented close", func(t *testing.T, w *rawWS) { w.frame(t, 0x08, closeWith(1000, ""), false) }, 1002},
		{"ping over 125 bytes", func(t *testing.T, w *rawWS) { w.frame(t, 0x89, make([]byte, 126), false) }, 1002},
		{"continuation without a start", func(t *testing.T, w *rawWS) { w.frame(t, 0x80, ping, false) }, 1002},
		{"new message inside a fragmented one", func(t *testing.T, w *rawWS) {
			w.frame(t, 0x01, ping[:5], false)
			w.frame(t, 0x81, ping, false)
		}, 1002},
		{"close with a 1-byte payload", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, []byte{3}, false) }, 1002},
		{"close code 999", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(999, ""), false) }, 1002},
		{"close code 1004", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(1004, ""), false) }, 1002},
		{"close code 1005", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(1005, ""), false) }, 1002},
		{"close code 1006", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(1006, ""), false) }, 1002},
		{"close code 1015", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(1015, ""), false) }, 1002},
		{"close code 2999", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(2999, ""), false) }, 1002},
		{"close code 5000", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(5000, ""), false) }, 1002},
		{"close reason not UTF-8", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(1000, "\xff\xfe"), false) }, 1007},
		{"text frame not UTF-8", func(t *testing.T, w *rawWS) { w.frame(t, 0x81, []byte("{\"id\":\"\xc3\x28\"}"), false) }, 1007},
		{"fragmented text not UTF-8", func(t *testing.T, w *rawWS) {
			w.frame(t, 0x01, []byte(`{"id":"`), false)
			w.frame(t, 0x80, []byte("\xed\xa0\x80\"}"), false) // a surrogate
		}, 1007},
		{"frame over the limit", func(t *testing.T, w *rawWS) { w.frame(t, 0x82, make([]byte, 2<<10), false) }, 1009},
		{"fragments over the limit", func(t *testing.T, w *rawWS) {
			w.frame(t, 0x02, make([]byte, 600), false)
			w.frame(t, 0x80, make([]byte, 600), false)
		}, 1009},
		{"declared length over the limit", func(t *testing.T, w *rawWS) {
			w.bytes(t, []byte{0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4})
		}, 1009},
		// The client's own codes are echoed, and the close is normal.
		{"client closes normally", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(1000, "bye"), false) }, 1000},
		{"client closes going away", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(1001, ""), false) }, 1001},
		{"client closes with an application code", func(t *testing.T, w *rawWS) { w.frame(t, 0x88, closeWith(4321, "app"), false) }, 4321},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := dialRawWS(t, in.base, gateway.SubprotocolJSON)
			// A valid exchange first: the connection works.
			w.frame(t, 0x81, ping, false)
			_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if f, err := w.read(); err != nil || f.opcode != 1 || !strings.Contains(string(f.payload), `"pong"`) {
				t.Fatalf("ping: %+v %v", f, err)
			}
			tc.send(t, w)
			if got := w.closeCode(t); got != tc.want {
				t.Fatalf("closed with %d, want %d", got, tc.want)
			}
		})
	}
}

// TestWSProtocolValid: what RFC 6455 allows is accepted: a fragmented
// message with control frames between its fragments, a ping answered with
// a pong carrying its payload, an unsolicited pong, an empty close frame,
// and several frames in one TCP segment.
func TestWSProtocolValid(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	w := dialRawWS(t, in.base, gateway.SubprotocolJSON)
	_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg := []byte(`{"id":"p1","ping":{}}`)
	w.frame(t, 0x01, msg[:4], false)
	w.frame(t, 0x89, []byte("are you there"), false)
	w.frame(t, 0x00, msg[4:10], false)
	w.frame(t, 0x8a, []byte("unsolicited"), false)
	w.frame(t, 0x80, msg[10:], false)
	var pong, reply bool
	for !pong || !reply {
		f, err := w.read()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case f.opcode == 0xa && string(f.payload) == "are you there":
			pong = true
		case f.opcode == 1 && f.fin && strings.Contains(string(f.payload), `"p1"`):
			reply = true
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
	// Two messages in one write, each answered.
	var two []byte
	for _, id := range []string{"a", "b"} {
		m := []byte(`{"id":"` + id + `","ping":{}}`)
		two = append(two, 0x81, 0x80|byte(len(m)), 0, 0, 0, 0)
		two = append(two, m...) // a zero mask key leaves the payload as it is
	}
	w.bytes(t, two)
	for _, id := range []string{"a", "b"} {
		f, err := w.read()
		if err != nil || !strings.Contains(string(f.payload), `"`+id+`"`) {
			t.Fatalf("reply %s: %+v %v", id, f, err)
		}
	}
	w.frame(t, 0x88, nil, false)
	f, err := w.read()
	if err != nil || f.opcode != 8 || len(f.payload) > 2 || len(f.payload) == 2 && binary.BigEndian.Uint16(f.payload) != 1000 {
		t.Fatalf("close reply to an empty close: %+v %v", f, err)
	}
	if _, err := w.read(); !errors.Is(err, io.EOF) && !isConnReset(err) {
		t.Fatalf("after the close: %v", err)
	}
}
