package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"golang.org/x/sync/semaphore"
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

// Close codes the server uses. After any of them a client reconnects and
// resumes every subscription from the last position it received: after
// StatusPolicy with a fresh token, after StatusTooBig once it sends
// smaller frames.
const (
	// StatusPolicy (1008): the connection may not continue: the token it
	// was opened with expired. Reconnect with a fresh one and resume.
	StatusPolicy = websocket.StatusPolicyViolation
	// StatusTooBig (1009): a frame was larger than the server's limit.
	StatusTooBig = websocket.StatusMessageTooBig
	// StatusInternal (1011): the server failed; reconnect and resume.
	StatusInternal = websocket.StatusInternalError
	// StatusRestart (1012): the server is shutting down; reconnect (to any
	// instance) and resume.
	StatusRestart = websocket.StatusServiceRestart
	// StatusTryAgainLater (1013): the server cannot serve now (starting,
	// event log unavailable); reconnect after a backoff.
	StatusTryAgainLater = websocket.StatusTryAgainLater
	// StatusSlowConsumer (4008): the client did not read its frames within
	// the write timeout; reconnect and resume.
	StatusSlowConsumer websocket.StatusCode = 4008
)

var (
	errSlowConsumer = errors.New("slow consumer: frames were not read within the write timeout")
	errConnClosed   = errors.New("connection closed")
)

// wsConn is one WebSocket: a services.Session reading the connection's
// frames, and a bounded queue of encoded frames written by one writer
// goroutine.
//
// # Concurrency
//
// Each connection owns: the session's reader (inside Session.Serve, calling
// recv), a writer goroutine (writer) and a ping timer (startPings). The
// handler goroutine runs Serve, then closes with the code that fits how the
// session ended (finish) and waits until the reader has returned.
type wsConn struct {
	g      *Gateway
	c      *websocket.Conn
	binary bool
	ctx    context.Context // ends when the connection is being torn down
	cancel context.CancelFunc
	// readCtx is the reader's, ended only by kill: when a read's context
	// ends, the library drops the TCP connection at once, which would lose
	// the close frame (1012, 4008) that finish sends.
	readCtx    context.Context
	readCancel context.CancelFunc
	readDone   chan struct{} // closed when a read failed: the peer left
	readOnce   sync.Once

	out        chan wsFrame        // encoded frames; bounded by Config.WSWriteQueue
	queued     *semaphore.Weighted // bytes of queued frames; bounded by Config.WSWriteBytes
	drain      chan struct{}       // closed by finish: write what is queued, then stop
	drainOnce  sync.Once
	writerDone chan struct{} // closed when the writer stops (drained or failed)

	// handling is set while the session handles a command, which blocks
	// while its publish queue is full; pongs are only read by Read, so a
	// ping unanswered then says nothing about the peer.
	handling atomic.Bool

	failOnce sync.Once
	failErr  error
	failed   chan struct{}
}

func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	// CORS has checked the origin already when it wraps the server; check
	// again so that Register alone is safe too.
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) && !g.origins.allowed(o) {
		writeError(w, connect.NewError(connect.CodePermissionDenied, errors.New("origin "+o+" is not allowed: add it to --allowed-origins")))
		return
	}
	// The server subscription (the token's channels) resumes after cursor.
	cursor, err := services.ParseServerCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		writeError(w, err)
		return
	}
	// The connection outlives the handler's context once hijacked; it is
	// ended by cancel, which fail calls: the session then ends too.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	// Refused before the upgrade, so the client sees 429 and Retry-After
	// (the instance's limit) or which limit to respect (the user's: close
	// other tabs or connections).
	sess, err := g.app.NewSession(ctx, cursor)
	if err != nil {
		writeError(w, err)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       []string{SubprotocolJSON, SubprotocolProto},
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		sess.Discard()
		return // Accept wrote the HTTP error
	}
	c.SetReadLimit(int64(g.app.MaxMessageBytes()))
	readCtx, readCancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer readCancel()
	wc := &wsConn{
		g:          g,
		c:          c,
		binary:     c.Subprotocol() == SubprotocolProto,
		ctx:        ctx,
		cancel:     cancel,
		readCtx:    readCtx,
		readCancel: readCancel,
		readDone:   make(chan struct{}),
		out:        make(chan wsFrame, g.cfg.WSWriteQueue),
		queued:     semaphore.NewWeighted(int64(g.cfg.WSWriteBytes)),
		drain:      make(chan struct{}),
		writerDone: make(chan struct{}),
		failed:     make(chan struct{}),
	}
	if !g.track(wc) {
		sess.Discard()
		_ = c.Close(StatusRestart, "server shutting down: reconnect to another instance")
		return
	}
	defer g.untrack(wc)
	wc.serve(sess)
}

// track registers a connection so shutdown can wait for it.
func (g *Gateway) track(wc *wsConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	select {
	case <-g.app.Stopping():
		return false
	default:
	}
	g.conns[wc] = struct{}{}
	g.connsWG.Add(1)
	return true
}

func (g *Gateway) untrack(wc *wsConn) {
	g.mu.Lock()
	delete(g.conns, wc)
	g.mu.Unlock()
	g.connsWG.Done()
}

func (wc *wsConn) kill() {
	wc.fail(errConnClosed)
	wc.readCancel() // drops the connection even while a Close is under way
	_ = wc.c.CloseNow()
}

func (wc *wsConn) fail(err error) {
	wc.failOnce.Do(func() {
		wc.failErr = err
		close(wc.failed)
		wc.cancel()
	})
}

// serve runs the session, then closes the connection with the code that
// says how it ended.
func (wc *wsConn) serve(sess *services.Session) {
	go wc.writer()
	wc.startPings()
	err := sess.Serve(wc.recv, wc.send)
	switch {
	case errors.Is(err, services.ErrSessionExpired):
		// A connection opened with a token ends when the token does,
		// unless a refresh command replaced it in time.
		wc.finish(StatusPolicy, "token expired: refresh it before it expires, or reconnect with a fresh token and resume from your last positions")
	case errors.Is(err, services.ErrShuttingDown):
		wc.finish(StatusRestart, "server shutting down: reconnect (to any instance) and resume from your last positions")
	case errors.Is(err, services.ErrNotReady):
		wc.finish(StatusTryAgainLater, "server starting: reconnect in a moment")
	case wc.slow():
		// Best effort: the close frame waits behind the unread frames,
		// and Close gives up after its own timeout.
		wc.finish(StatusSlowConsumer, "slow consumer: reconnect and resume from your last positions")
	case wc.readFailed():
		// The client closed or broke the connection, or sent a frame over
		// the limit (the library then closed it with 1009). Publishes it
		// sent are committed; their acks go out while the connection can
		// still carry them.
		wc.finish(websocket.StatusNormalClosure, "")
		return
	default:
		// A write failed: the connection is gone.
		_ = wc.c.CloseNow()
		wc.stopWriter()
		<-wc.writerDone
	}
	wc.waitReader()
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

func (wc *wsConn) readFailed() bool {
	select {
	case <-wc.readDone:
		return true
	default:
		return false
	}
}

// finish flushes the queued frames (within the write timeout) and closes
// the connection with code.
func (wc *wsConn) finish(code websocket.StatusCode, reason string) {
	wc.stopWriter()
	select {
	case <-wc.writerDone:
	case <-time.After(wc.g.cfg.WriteTimeout):
	}
	_ = wc.c.Close(code, reason) // before cancel: see readCtx
	wc.cancel()
}

// waitReader waits until the session's reader has seen the connection
// close.
func (wc *wsConn) waitReader() {
	select {
	case <-wc.readDone:
	case <-time.After(wc.g.cfg.WriteTimeout):
		_ = wc.c.CloseNow()
		<-wc.readDone
	}
}

// wsFrame is an encoded frame and the bytes it holds of the budget.
type wsFrame struct {
	b []byte
	n int64
}

// send is the session's sink: it encodes the frame (an event from its
// shared encoding) and queues it. The queue is bounded in frames and in
// bytes; when either is full, send waits up to the write timeout, so a
// replay burst paces itself to the client, and a client that stops reading
// is ended as a slow consumer.
func (wc *wsConn) send(f *services.Frame) error {
	var b []byte
	var err error
	if wc.binary {
		b, err = f.AppendBinary(nil)
	} else {
		b, err = f.AppendJSON(nil)
	}
	if err != nil {
		return err
	}
	// A frame larger than the whole budget takes all of it.
	wf := wsFrame{b: b, n: min(int64(len(b)), int64(wc.g.cfg.WSWriteBytes))}
	if wc.queued.TryAcquire(wf.n) {
		select {
		case wc.out <- wf:
			return nil
		case <-wc.failed:
			wc.queued.Release(wf.n)
			return wc.failErr
		default:
		}
	} else {
		ctx, cancel := context.WithTimeout(wc.ctx, wc.g.cfg.WriteTimeout)
		err := wc.queued.Acquire(ctx, wf.n)
		cancel()
		if err != nil {
			return wc.stalled()
		}
	}
	t := time.NewTimer(wc.g.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case wc.out <- wf:
		return nil
	case <-wc.failed:
		wc.queued.Release(wf.n)
		return wc.failErr
	case <-t.C:
		wc.queued.Release(wf.n)
		return wc.stalled()
	}
}

// stalled ends the connection as a slow consumer, unless it already failed.
func (wc *wsConn) stalled() error {
	select {
	case <-wc.failed:
		return wc.failErr
	default:
	}
	wc.fail(errSlowConsumer)
	return errSlowConsumer
}

func (wc *wsConn) stopWriter() { wc.drainOnce.Do(func() { close(wc.drain) }) }

// writer writes queued frames until stopWriter, then what is still queued.
func (wc *wsConn) writer() {
	defer close(wc.writerDone)
	typ := websocket.MessageText
	if wc.binary {
		typ = websocket.MessageBinary
	}
	for {
		var f wsFrame
		select {
		case f = <-wc.out:
		case <-wc.drain:
			select {
			case f = <-wc.out:
			default:
				return
			}
		}
		// No deadline here: a write cut short would break the frame and
		// lose the close code. A stalled write is detected by send (the
		// queue stays full) and by the pings, and ended by closing.
		err := wc.c.Write(context.Background(), typ, f.b)
		wc.queued.Release(f.n)
		if err != nil {
			wc.fail(err)
			return
		}
	}
}

// startPings detects dead peers: a ping not answered within the write
// timeout drops the connection. It runs on a timer, not a goroutine per
// connection, because most connections are idle most of the time.
func (wc *wsConn) startPings() {
	var mu sync.Mutex
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(wc.g.cfg.WSPingInterval, func() {
		if wc.ctx.Err() != nil {
			return
		}
		// Not derived from wc.ctx: a ping cut short by teardown would
		// drop the connection before its close frame.
		ctx, cancel := context.WithTimeout(context.Background(), wc.g.cfg.WriteTimeout)
		err := wc.c.Ping(ctx)
		cancel()
		switch {
		case wc.ctx.Err() != nil:
		case err != nil && !wc.handling.Load():
			wc.fail(errors.New("peer did not answer a ping"))
		default:
			mu.Lock()
			t.Reset(wc.g.cfg.WSPingInterval)
			mu.Unlock()
		}
	})
	context.AfterFunc(wc.ctx, func() {
		mu.Lock()
		t.Stop()
		mu.Unlock()
	})
}

// recv reads and decodes the next client frame for the session. A frame
// that does not decode is reported as a services.ErrBadFrame (the session
// answers it with an error frame and the connection stays open, as on the
// Connect RPC); a failed read means the peer left.
func (wc *wsConn) recv() (*heraldv1.ConnectRequest, error) {
	wc.handling.Store(false)
	typ, data, err := wc.c.Read(wc.readCtx)
	if err != nil {
		wc.readOnce.Do(func() { close(wc.readDone) })
		return nil, err
	}
	req, err := decodeFrame(typ, data)
	if err != nil {
		return nil, err
	}
	wc.handling.Store(true)
	return req, nil
}

// decodeFrame decodes one client frame: protojson in a text frame, protobuf
// in a binary frame (whichever subprotocol was chosen, the frame type says
// how it is encoded). Validation happens in the session.
func decodeFrame(typ websocket.MessageType, data []byte) (*heraldv1.ConnectRequest, error) {
	req := &heraldv1.ConnectRequest{}
	var err error
	if typ == websocket.MessageBinary {
		err = proto.Unmarshal(data, req)
	} else {
		err = services.UnmarshalJSON(data, req)
	}
	if err != nil {
		kind := "JSON"
		if typ == websocket.MessageBinary {
			kind = "protobuf"
		}
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("%w: not a herald.v1.ConnectRequest in %s: %v", services.ErrBadFrame, kind, err))
	}
	return req, nil
}
