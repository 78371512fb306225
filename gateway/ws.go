package gateway

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/services"
)

// WebSocket subprotocols: the frames are the messages of the Connect RPC,
// protojson in text frames or protobuf in binary frames. A client that
// offers neither gets JSON.
const (
	SubprotocolJSON  = "herald.v1.json"
	SubprotocolProto = "herald.v1.proto"
)

// Close codes the server sends (docs/gateway.md has the table). After any
// of them but the client's own and the protocol errors, a client
// reconnects and resumes every subscription from the last position it
// received: after StatusPolicy with a fresh token, after StatusTooBig once
// it sends smaller messages.
const (
	// StatusNormal (1000) answers a client's close frame that had no code;
	// a close frame with a code is answered with the same code.
	StatusNormal = 1000
	// StatusProtocolError (1002): the client broke RFC 6455 (an unmasked
	// frame, RSV bits, a reserved opcode, a fragmented or oversized
	// control frame, a continuation out of place, a malformed close
	// frame). Fix the client.
	StatusProtocolError = 1002
	// StatusInvalidData (1007): a text message, or a close reason, that is
	// not valid UTF-8.
	StatusInvalidData = 1007
	// StatusPolicy (1008): the connection may not continue: the token it
	// was opened with expired. Reconnect with a fresh one and resume.
	StatusPolicy = 1008
	// StatusTooBig (1009): a message was larger than the server's limit.
	StatusTooBig = 1009
	// StatusInternal (1011): the server failed; reconnect and resume.
	StatusInternal = 1011
	// StatusRestart (1012): the server is shutting down; reconnect (to any
	// instance) and resume.
	StatusRestart = 1012
	// StatusTryAgainLater (1013): the server cannot serve now (starting,
	// event log unavailable); reconnect after a backoff.
	StatusTryAgainLater = 1013
	// StatusSlowConsumer (4008): the client did not read its frames fast
	// enough: its write queue stayed full for the write timeout.
	// Reconnect and resume.
	StatusSlowConsumer = 4008
)

var (
	errSlowConsumer = errors.New("slow consumer: frames were not read within the write timeout")
	errConnClosed   = errors.New("connection closed")
	errDeadPeer     = errors.New("peer did not answer a ping")
)

// wsConn is one WebSocket over a hijacked connection: a services.Session
// reading its messages, and a bounded queue of encoded frames that a
// writer goroutine, started while there is something to write, sends in
// batches.
//
// # Concurrency
//
// A connection runs: the serve goroutine (Session.Serve, then the close),
// the session's reader (inside Serve, calling recv), a writer goroutine
// only while frames are queued, and a ping timer. wmu guards the write
// queue, rmu who reads. An idle connection holds no buffer and no writer
// goroutine.
//
// # Time bounds
//
// Every write to the socket must finish within WriteTimeout, or the
// connection is dropped at once: a client that stops reading is gone at
// most WriteTimeout after its writes stall. A close (any code) runs under
// one deadline of WriteTimeout for writing what it must and waiting for
// the client's close frame; then the connection is closed whatever state
// it is in. A queue that stays full for WriteTimeout/2 (a client reading
// too slowly, or not at all) ends with 4008, dropping the frames not yet
// written so that the close frame goes out next, within the WriteTimeout/2
// left; a client that reads again in time gets it.
type wsConn struct {
	g      *Gateway
	conn   net.Conn
	binary bool
	ctx    context.Context // ends when the connection fails or closes; the session's parent
	cancel context.CancelFunc
	r      *wsReader

	wmu           sync.Mutex
	pending       net.Buffers // encoded frames the writer has not taken yet, in pooled chunks; empty when none
	pendingFrames int         // data frames in pending
	pendingBytes  int64       // their budget bytes
	frames        int         // data frames queued or being written: bounded by WSWriteQueue
	queued        int64       // their budget bytes: bounded by WSWriteBytes
	writing       bool        // a writer goroutine runs
	closeQueued   bool        // a close frame is queued: nothing goes out after it
	space         chan struct{}
	closeSent     chan struct{} // closed once the close frame is written

	rmu      sync.Mutex
	rstate   readerState
	readErr  error         // why reading ended; set before readDone closes
	readDone chan struct{} // closed when reading ended

	// handling is set while the session handles a command, which blocks
	// while its publish queue is full; pongs are only read by recv, so a
	// ping unanswered then says nothing about the peer.
	handling atomic.Bool
	ponged   atomic.Bool

	pmu          sync.Mutex
	pingTimer    *time.Timer
	pingsStopped bool
	pingSent     bool // only the ping timer's callback uses it

	failOnce sync.Once
	failErr  error
	failed   chan struct{}

	deadOnce sync.Once
	dead     chan struct{} // closed when the TCP connection is closed
}

// readerState says who reads the connection.
type readerState int

const (
	readerOut    readerState = iota // the session's reader is between recv calls (or has not started)
	readerIn                        // the session's reader is in recv
	readerCloser                    // the closing code reads: recv fails at once
	readerDone                      // reading ended (readErr)
)

func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	// CORS has checked the origin already when it wraps the server; check
	// again so that Register alone is safe too.
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) && !g.origins.allowed(o) {
		writeError(w, connect.NewError(connect.CodePermissionDenied, errors.New("origin "+o+" is not allowed: add it to --allowed-origins")))
		return
	}
	hs, err := checkHandshake(w, r)
	if err != nil {
		writeErrorStatus(w, hs.status, err)
		return
	}
	// The server subscription (the token's channels) resumes after cursor.
	cursor, err := services.ParseServerCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		writeError(w, err)
		return
	}
	// The connection outlives the handler: its context ends with the
	// connection (cancel), and the session's with it.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	// Refused before the upgrade, so the client sees 429 and Retry-After
	// (the instance's limit) or which limit to respect (the user's: close
	// other tabs or connections).
	sess, err := g.app.NewSession(ctx, cursor)
	if err != nil {
		cancel()
		writeError(w, err)
		return
	}
	conn, pre, err := hs.upgrade(w, g.cfg.WriteTimeout)
	if err != nil {
		cancel()
		sess.Discard()
		return
	}
	wc := &wsConn{
		g:         g,
		conn:      conn,
		binary:    hs.subprotocol == SubprotocolProto,
		ctx:       ctx,
		cancel:    cancel,
		r:         newWSReader(conn, pre, g.app.MaxMessageBytes(), g.cfg.ReadTimeout),
		space:     make(chan struct{}, 1),
		closeSent: make(chan struct{}),
		readDone:  make(chan struct{}),
		failed:    make(chan struct{}),
		dead:      make(chan struct{}),
	}
	if !g.track(wc) {
		cancel()
		sess.Discard()
		_ = conn.SetWriteDeadline(time.Now().Add(g.cfg.WriteTimeout))
		_, _ = conn.Write(appendClose(nil, StatusRestart, "server shutting down: reconnect to another instance"))
		_ = conn.Close()
		return
	}
	// The handler returns, so that net/http's request state and buffers
	// are freed while the WebSocket lives on; Drain waits for it.
	go func() {
		defer g.untrack(wc)
		defer cancel()
		wc.serve(sess)
	}()
}

// handshake is a checked opening handshake (RFC 6455 4.2.1).
type handshake struct {
	status      int // of the refusal
	accept      string
	subprotocol string // "": the client offered none of ours (JSON)
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// checkHandshake checks an upgrade request: HTTP/1.1, Upgrade: websocket,
// Connection: Upgrade, version 13 and a key of 16 bytes. It picks the
// first of the server's subprotocols the client offers.
func checkHandshake(w http.ResponseWriter, r *http.Request) (handshake, error) {
	hs := handshake{status: http.StatusUpgradeRequired}
	switch {
	case r.ProtoMajor != 1:
		return hs, invalid("WebSocket needs HTTP/1.1; this request came over HTTP/" + fmt.Sprint(r.ProtoMajor))
	case !hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket"):
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		return hs, invalid("not a WebSocket handshake: send Upgrade: websocket and Connection: Upgrade")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		return hs, invalid("Sec-WebSocket-Version: this server speaks version 13")
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		hs.status = http.StatusBadRequest
		return hs, invalid("Sec-WebSocket-Key: want 16 random bytes in base64")
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	hs.accept = base64.StdEncoding.EncodeToString(sum[:])
	for _, p := range []string{SubprotocolJSON, SubprotocolProto} {
		if hasToken(r.Header, "Sec-WebSocket-Protocol", p) {
			hs.subprotocol = p
			break
		}
	}
	return hs, nil
}

// hasToken reports whether the comma-separated lists of header name hold
// token (case-insensitively).
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// upgrade hijacks the connection and answers 101. It returns the
// connection and any bytes the client sent after its handshake (already
// buffered by net/http), so that none of net/http's buffers stay in use.
func (hs handshake) upgrade(w http.ResponseWriter, timeout time.Duration) (net.Conn, []byte, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, err)
		return nil, nil, err
	}
	var pre []byte
	if n := brw.Reader.Buffered(); n > 0 {
		p, _ := brw.Reader.Peek(n)
		pre = bytes.Clone(p)
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + hs.accept + "\r\n"
	if hs.subprotocol != "" {
		resp += "Sec-WebSocket-Protocol: " + hs.subprotocol + "\r\n"
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, resp+"\r\n"); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, pre, nil
}

// kill drops the connection at once, like a crash.
func (wc *wsConn) kill() {
	wc.fail(errConnClosed)
	wc.closeConn()
}

func (wc *wsConn) fail(err error) {
	wc.failOnce.Do(func() {
		wc.failErr = err
		close(wc.failed)
		wc.cancel()
	})
}

// closeConn closes the TCP connection: every blocked read and write
// returns.
func (wc *wsConn) closeConn() {
	wc.deadOnce.Do(func() {
		close(wc.dead)
		_ = wc.conn.Close()
	})
}

func (wc *wsConn) isDead() bool {
	select {
	case <-wc.dead:
		return true
	default:
		return false
	}
}

// serve runs the session, then closes the connection with the code that
// says how it ended.
func (wc *wsConn) serve(sess *services.Session) {
	wc.schedulePing(wc.g.cfg.WSPingInterval)
	err := sess.Serve(wc.recv, wc.send)
	var violation *wsCloseError
	var bye *peerClose
	switch {
	case errors.Is(err, services.ErrSessionExpired):
		// A connection opened with a token ends when the token does,
		// unless a refresh command replaced it in time.
		wc.close(StatusPolicy, "token expired: refresh it before it expires, or reconnect with a fresh token and resume from your last positions", false, wc.g.cfg.WriteTimeout)
	case errors.Is(err, services.ErrShuttingDown):
		wc.close(StatusRestart, "server shutting down: reconnect (to any instance) and resume from your last positions", false, wc.g.cfg.WriteTimeout)
	case errors.Is(err, services.ErrNotReady):
		wc.close(StatusTryAgainLater, "server starting: reconnect in a moment", false, wc.g.cfg.WriteTimeout)
	case wc.slow():
		// What is queued is what the client does not read: the close
		// frame goes out next instead, within the half of the write
		// timeout the queue's wait left.
		wc.close(StatusSlowConsumer, "slow consumer: reconnect and resume from your last positions", true, wc.g.cfg.WriteTimeout/2)
	case errors.As(wc.readError(), &violation):
		wc.close(violation.code, violation.reason, true, wc.g.cfg.WriteTimeout)
	case errors.As(wc.readError(), &bye):
		// The client closed. Publishes it sent are committed; their acks
		// go out before the answering close frame.
		wc.close(bye.code, "", false, wc.g.cfg.WriteTimeout)
	default:
		// The connection broke (a read or write failed, a dead peer, a
		// kill): nothing more can be said on it.
		wc.closeConn()
		wc.close(0, "", true, wc.g.cfg.WriteTimeout)
	}
}

// close sends a close frame with code (0: an empty one) after the queued
// frames (or instead of them: discard), waits for the client's close frame
// and closes the connection, all within budget.
func (wc *wsConn) close(code int, reason string, discard bool, budget time.Duration) {
	wc.stopPings()
	wc.cancel()
	stop := time.AfterFunc(budget, wc.closeConn)
	defer stop.Stop()
	if wc.queueClose(code, reason, discard) {
		select {
		case <-wc.closeSent:
		case <-wc.dead:
		}
	}
	// Wait for the client's answer: whoever reads sees it (or EOF), and
	// drops any message before it.
	wc.rmu.Lock()
	state := wc.rstate
	if state == readerOut {
		// The session's reader is not reading and may never again: read
		// here.
		wc.rstate = readerCloser
	}
	wc.rmu.Unlock()
	if state == readerOut {
		for {
			if _, _, err := wc.r.next(wc); err != nil {
				wc.readEnded(err)
				break
			}
		}
	}
	select {
	case <-wc.readDone:
	case <-wc.dead:
	}
	var ce *wsCloseError
	if errors.As(wc.readError(), &ce) && !wc.isDead() {
		// We stopped reading mid-message (a protocol error, a message
		// over the limit): what the client is still sending would make
		// closing the socket reset it, and the client could lose our
		// close frame. Read and drop it for a moment first (a lingering
		// close), as HTTP servers do.
		wc.linger(min(budget, lingerMax))
	}
	wc.closeConn()
	<-wc.readDone
	wc.r.release()
}

// lingerMax bounds a lingering close, and lingerBytes what it reads.
const (
	lingerMax   = 2 * time.Second
	lingerBytes = 16 << 20
)

// linger reads and drops what the client still sends, until it closes, d
// passes or lingerBytes were read.
func (wc *wsConn) linger(d time.Duration) {
	if cw, ok := wc.conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // our close frame is out: say we are done writing
	}
	_ = wc.conn.SetReadDeadline(time.Now().Add(d))
	_, _ = io.Copy(io.Discard, io.LimitReader(wc.conn, lingerBytes))
}

// slow reports that the connection failed as a slow consumer.
func (wc *wsConn) slow() bool {
	select {
	case <-wc.failed:
		return errors.Is(wc.failErr, errSlowConsumer)
	default:
		return false
	}
}

func (wc *wsConn) readError() error {
	select {
	case <-wc.readDone:
		return wc.readErr
	default:
		return nil
	}
}

// send is the session's sink: it encodes the frame (an event from its
// shared encoding) and queues it. The queue is bounded in frames and in
// bytes; when either is full, send waits up to half the write timeout, so
// a replay burst paces itself to the client, and a client that has fallen
// that far behind is ended as a slow consumer while the write under way
// still has time to finish and let the close frame (4008) through.
func (wc *wsConn) send(f *services.Frame) error {
	b, op := getBuffer(), byte(opText)
	var err error
	if wc.binary {
		b, err = f.AppendBinary(b)
		op = opBinary
	} else {
		b, err = f.AppendJSON(b)
	}
	defer putBuffer(b)
	if err != nil {
		return err
	}
	// A frame larger than the whole budget takes all of it.
	n := min(int64(len(b)), int64(wc.g.cfg.WSWriteBytes))
	var timer *time.Timer
	for {
		wc.wmu.Lock()
		switch {
		case wc.closeQueued || wc.isDead():
			wc.wmu.Unlock()
			return errConnClosed
		case wc.frames < wc.g.cfg.WSWriteQueue && wc.queued+n <= int64(wc.g.cfg.WSWriteBytes):
			wc.appendFrame(op, b)
			wc.pendingFrames++
			wc.pendingBytes += n
			wc.frames++
			wc.queued += n
			wc.startWriter()
			wc.wmu.Unlock()
			return nil
		}
		wc.wmu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wc.g.cfg.WriteTimeout / 2)
			defer timer.Stop()
		}
		select {
		case <-wc.space:
		case <-wc.failed:
			return wc.failErr
		case <-timer.C:
			return wc.stalled()
		}
	}
}

// stalled ends the connection as a slow consumer, unless it already failed.
func (wc *wsConn) stalled() error {
	wc.fail(errSlowConsumer)
	return wc.failErr
}

// appendFrame appends a frame to the pending batch. The caller holds wmu.
func (wc *wsConn) appendFrame(op byte, payload []byte) {
	c := wc.room(maxHeader + len(payload))
	c = appendHeader(c, op, len(payload))
	wc.pending[len(wc.pending)-1] = append(c, payload...)
}

// room returns the last pending chunk, with room for n more bytes: a new
// pooled chunk when the last one has not (one sized to n when a pooled one
// could not hold it). The caller appends to it and stores it back as the
// last chunk. Pending frames are kept in chunks, written with one writev,
// rather than in one growing buffer: a burst of frames is copied once,
// not again at every doubling, and every chunk goes back to the pool.
// The caller holds wmu.
func (wc *wsConn) room(n int) []byte {
	if k := len(wc.pending); k > 0 {
		if c := wc.pending[k-1]; cap(c)-len(c) >= n {
			return c
		}
	}
	c := getBuffer()
	if cap(c) < n {
		putBuffer(c)
		c = make([]byte, 0, n)
	}
	wc.pending = append(wc.pending, c)
	return c
}

// releaseChunks gives chunks back to the pool and empties them.
func releaseChunks(chunks net.Buffers) net.Buffers {
	for i, c := range chunks {
		putBuffer(c)
		chunks[i] = nil
	}
	return chunks[:0]
}

// startWriter starts the writer unless it runs. The caller holds wmu.
func (wc *wsConn) startWriter() {
	if !wc.writing {
		wc.writing = true
		go wc.writer()
	}
}

// queueControl queues a ping or pong. Control frames are small and not
// counted against the queue's bounds: a pong must go out even when the
// queue is full.
func (wc *wsConn) queueControl(op byte, payload []byte) {
	wc.wmu.Lock()
	defer wc.wmu.Unlock()
	if wc.closeQueued || wc.isDead() {
		return
	}
	wc.appendFrame(op, payload)
	wc.startWriter()
}

// queueClose queues the close frame, after the queued frames or instead of
// those the writer has not taken (discard). It reports false when the
// connection is gone or a close frame was queued already.
func (wc *wsConn) queueClose(code int, reason string, discard bool) bool {
	wc.wmu.Lock()
	defer wc.wmu.Unlock()
	if wc.closeQueued || wc.isDead() {
		return false
	}
	if discard {
		wc.frames -= wc.pendingFrames
		wc.queued -= wc.pendingBytes
		wc.pendingFrames, wc.pendingBytes = 0, 0
		wc.pending = releaseChunks(wc.pending)
	}
	c := wc.room(maxHeader + maxControlPayload)
	wc.pending[len(wc.pending)-1] = appendClose(c, code, reason)
	wc.closeQueued = true
	wc.startWriter()
	return true
}

// writer writes the queued frames: it takes everything pending and writes
// it with one writev (its chunks), until nothing is pending; every chunk
// goes back to the pool once written, and the writer ends. A write must finish within the write timeout: a client
// that stops reading is dropped then.
func (wc *wsConn) writer() {
	var chunks, bufs net.Buffers
	for {
		wc.wmu.Lock()
		if len(wc.pending) == 0 || wc.isDead() {
			wc.writing = false
			wc.pending = releaseChunks(wc.pending)
			if cap(wc.pending) == 0 {
				wc.pending = chunks // its array, for the next burst
			}
			wc.wmu.Unlock()
			return
		}
		chunks, wc.pending = wc.pending, chunks
		frames, n := wc.pendingFrames, wc.pendingBytes
		wc.pendingFrames, wc.pendingBytes = 0, 0
		last := wc.closeQueued // nothing is queued after the close frame
		wc.wmu.Unlock()

		_ = wc.conn.SetWriteDeadline(time.Now().Add(wc.g.cfg.WriteTimeout))
		var err error
		if len(chunks) == 1 {
			_, err = wc.conn.Write(chunks[0])
		} else {
			bufs = append(bufs[:0], chunks...)
			w := bufs                   // WriteTo consumes its receiver: bufs keeps the array
			_, err = w.WriteTo(wc.conn) // one writev on a TCP connection
			clear(bufs)
		}
		chunks = releaseChunks(chunks)
		wc.wmu.Lock()
		wc.frames -= frames
		wc.queued -= n
		wc.wmu.Unlock()
		select {
		case wc.space <- struct{}{}:
		default:
		}
		if err != nil {
			wc.fail(err)
			wc.closeConn()
			continue
		}
		if last {
			close(wc.closeSent)
		}
	}
}

// schedulePing arms the ping timer.
func (wc *wsConn) schedulePing(d time.Duration) {
	wc.pmu.Lock()
	defer wc.pmu.Unlock()
	switch {
	case wc.pingsStopped:
	case wc.pingTimer == nil:
		wc.pingTimer = time.AfterFunc(d, wc.pingTick)
	default:
		wc.pingTimer.Reset(d)
	}
}

func (wc *wsConn) stopPings() {
	wc.pmu.Lock()
	defer wc.pmu.Unlock()
	wc.pingsStopped = true
	if wc.pingTimer != nil {
		wc.pingTimer.Stop()
	}
}

// pingTick detects dead peers: it sends a ping, and a write timeout later
// drops the connection unless a pong came back. It runs on a timer, not a
// goroutine per connection, because most connections are idle.
func (wc *wsConn) pingTick() {
	if wc.ctx.Err() != nil {
		return
	}
	if !wc.pingSent {
		wc.pingSent = true
		wc.ponged.Store(false)
		wc.queueControl(opPing, nil)
		wc.schedulePing(wc.g.cfg.WriteTimeout)
		return
	}
	wc.pingSent = false
	if !wc.ponged.Load() && !wc.handling.Load() {
		wc.fail(errDeadPeer)
		wc.closeConn()
		return
	}
	wc.schedulePing(wc.g.cfg.WSPingInterval)
}

// ping answers a client's ping (for the frame reader).
func (wc *wsConn) ping(payload []byte) { wc.queueControl(opPong, payload) }

// pong notes a client's pong (for the frame reader).
func (wc *wsConn) pong() { wc.ponged.Store(true) }

// readEnded records why reading ended.
func (wc *wsConn) readEnded(err error) {
	wc.rmu.Lock()
	defer wc.rmu.Unlock()
	wc.readErr = err
	wc.rstate = readerDone
	close(wc.readDone)
}

// recv reads and decodes the next client message for the session. A
// message that does not decode is reported as a services.ErrBadFrame (the
// session answers it with an error frame and the connection stays open, as
// on the Connect RPC); a protocol violation, the client's close frame or a
// failed read end the session.
func (wc *wsConn) recv() (*heraldv1.ConnectRequest, error) {
	wc.handling.Store(false)
	wc.rmu.Lock()
	if wc.rstate != readerOut {
		wc.rmu.Unlock()
		return nil, errConnClosed
	}
	wc.rstate = readerIn
	wc.rmu.Unlock()
	for {
		op, data, err := wc.r.next(wc)
		if err != nil {
			wc.readEnded(err)
			if errors.Is(err, io.EOF) {
				// The connection ended. For the session io.EOF means a
				// half-close (the Connect RPC's), after which it keeps
				// streaming; a WebSocket has none: the peer is gone.
				return nil, fmt.Errorf("%w: %v", errConnClosed, err)
			}
			return nil, err
		}
		wc.wmu.Lock()
		closing := wc.closeQueued
		wc.wmu.Unlock()
		if closing {
			continue // only the client's close frame matters now
		}
		req, err := decodeFrame(op, data)
		wc.r.release()
		wc.rmu.Lock()
		wc.rstate = readerOut
		wc.rmu.Unlock()
		if err != nil {
			return nil, err
		}
		wc.handling.Store(true)
		return req, nil
	}
}

// decodeFrame decodes one client message: protojson in a text message,
// protobuf in a binary one (whichever subprotocol was chosen, the frame
// type says how it is encoded). Validation happens in the session.
func decodeFrame(op byte, data []byte) (*heraldv1.ConnectRequest, error) {
	req := &heraldv1.ConnectRequest{}
	var err error
	if op == opBinary {
		err = proto.Unmarshal(data, req)
	} else {
		err = services.UnmarshalJSON(data, req)
	}
	if err != nil {
		kind := "JSON"
		if op == opBinary {
			kind = "protobuf"
		}
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("%w: not a herald.v1.ConnectRequest in %s: %v", services.ErrBadFrame, kind, err))
	}
	return req, nil
}
