package gateway

import (
	"context"
	"errors"
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

// wsConn is one WebSocket: a services.Session fed by the read loop, and a
// bounded queue of encoded frames written by one writer goroutine.
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

	out        chan wsFrame        // encoded frames; bounded by Config.WSWriteQueue
	queued     *semaphore.Weighted // bytes of queued frames; bounded by Config.WSWriteBytes
	drain      chan struct{}       // closed by finish: write what is queued, then stop
	drainOnce  sync.Once
	writerDone chan struct{} // closed when the writer stops (drained or failed)

	// handling is set while the reader is inside Session.Handle, which
	// blocks while the publish queue is full; pongs are only read by Read,
	// so a ping unanswered then says nothing about the peer.
	handling atomic.Bool

	failOnce sync.Once
	failErr  error
	failed   chan struct{}

	cursor *int64 // where the server subscription resumes; nil: live
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
	// Refused before the upgrade, so the client sees 429 and Retry-After
	// (the instance's limit) or which limit to respect (the user's: close
	// other tabs or connections).
	release, err := g.cfg.Events.Streams().Acquire(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       []string{SubprotocolJSON, SubprotocolProto},
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return // Accept wrote the HTTP error
	}
	c.SetReadLimit(int64(g.cfg.MaxMessageBytes))
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	readCtx, readCancel := context.WithCancel(context.WithoutCancel(r.Context()))
	wc := &wsConn{
		g:          g,
		c:          c,
		binary:     c.Subprotocol() == SubprotocolProto,
		ctx:        ctx,
		cancel:     cancel,
		readCtx:    readCtx,
		readCancel: readCancel,
		out:        make(chan wsFrame, g.cfg.WSWriteQueue),
		queued:     semaphore.NewWeighted(int64(g.cfg.WSWriteBytes)),
		drain:      make(chan struct{}),
		writerDone: make(chan struct{}),
		failed:     make(chan struct{}),
		cursor:     cursor,
	}
	if !g.track(wc) {
		cancel()
		readCancel()
		_ = c.Close(StatusRestart, "server shutting down: reconnect to another instance")
		return
	}
	defer g.untrack(wc)
	defer readCancel()
	wc.serve()
}

// track registers a connection so shutdown can wait for it.
func (g *Gateway) track(wc *wsConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	select {
	case <-g.cfg.Hub.Stopped():
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

func (wc *wsConn) serve() {
	g := wc.g
	select {
	case <-g.cfg.Hub.Ready():
	case <-time.After(5 * time.Second):
		_ = wc.c.Close(StatusTryAgainLater, "server starting: reconnect in a moment")
		wc.cancel()
		return
	}
	go wc.writer()
	sess := g.cfg.Events.StartSession(wc.ctx, wc.send)
	// Before any command is read: the server subscription answers first.
	sess.SubscribeServerChannels(wc.cursor)
	readErr := make(chan error, 1)
	go func() { readErr <- wc.reader(sess) }()
	wc.startPings()

	var code websocket.StatusCode
	var reason string
	select {
	case <-sess.Expired():
		// A connection opened with a token ends when the token does,
		// unless a refresh command replaced it in time.
		sess.Close()
		code, reason = StatusPolicy, "token expired: refresh it before it expires, or reconnect with a fresh token and resume from your last positions"
	case <-readErr:
		// The client closed or broke the connection, or sent a frame over
		// the limit (the library then closed it with 1009). Publishes
		// already received are still committed; their acks go out while
		// the connection can still carry them.
		sess.Close()
		wc.finish(websocket.StatusNormalClosure, "")
		return
	case <-wc.failed:
		sess.Close()
		if errors.Is(wc.failErr, errSlowConsumer) {
			// Best effort: the close frame waits behind the unread frames,
			// and Close gives up after its own timeout.
			code, reason = StatusSlowConsumer, "slow consumer: reconnect and resume from your last positions"
		} else {
			_ = wc.c.CloseNow()
			wc.stopWriter()
			<-wc.writerDone
			wc.wait(readErr)
			return
		}
	case <-g.cfg.Hub.Stopped():
		sess.WaitSubscriptions() // each sends its shutdown Error frame
		sess.Close()
		code, reason = StatusRestart, "server shutting down: reconnect (to any instance) and resume from your last positions"
	}
	wc.finish(code, reason)
	wc.wait(readErr)
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

func (wc *wsConn) wait(readErr <-chan error) {
	select {
	case <-readErr:
	case <-time.After(wc.g.cfg.WriteTimeout):
		_ = wc.c.CloseNow()
		<-readErr
	}
}

// wsFrame is an encoded frame and the bytes it holds of the budget.
type wsFrame struct {
	b []byte
	n int64
}

// send is the session's sink: it encodes msg once and queues the frame.
// The queue is bounded in frames and in bytes; when either is full, send
// waits up to the write timeout, so a replay burst paces itself to the
// client, and a client that stops reading is ended as a slow consumer.
func (wc *wsConn) send(msg *heraldv1.ConnectResponse) error {
	var b []byte
	var err error
	if wc.binary {
		b, err = wc.g.enc.connectResponseBinary(msg)
	} else {
		b, err = wc.g.enc.connectResponseJSON(msg)
	}
	if err != nil {
		return err
	}
	// A frame larger than the whole budget takes all of it.
	f := wsFrame{b: b, n: min(int64(len(b)), int64(wc.g.cfg.WSWriteBytes))}
	if wc.queued.TryAcquire(f.n) {
		select {
		case wc.out <- f:
			return nil
		case <-wc.failed:
			wc.queued.Release(f.n)
			return wc.failErr
		default:
		}
	} else {
		ctx, cancel := context.WithTimeout(wc.ctx, wc.g.cfg.WriteTimeout)
		err := wc.queued.Acquire(ctx, f.n)
		cancel()
		if err != nil {
			return wc.stalled()
		}
	}
	t := time.NewTimer(wc.g.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case wc.out <- f:
		return nil
	case <-wc.failed:
		wc.queued.Release(f.n)
		return wc.failErr
	case <-t.C:
		wc.queued.Release(f.n)
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

// reader decodes client frames and hands them to the session in order. A
// frame that does not decode gets an invalid_argument Error frame and the
// connection stays open, as on the Connect RPC.
func (wc *wsConn) reader(sess *services.Session) error {
	for {
		typ, data, err := wc.c.Read(wc.readCtx)
		if err != nil {
			return err
		}
		req, err := decodeFrame(typ, data)
		if err != nil {
			wc.sendError(err)
			continue
		}
		wc.handling.Store(true)
		sess.Handle(req)
		wc.handling.Store(false)
	}
}

func (wc *wsConn) sendError(err error) {
	msg := &heraldv1.ConnectResponse{Message: &heraldv1.ConnectResponse_Error{Error: services.ErrorProto(wc.g.cfg.Logger, "ws", err)}}
	_ = wc.send(msg)
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
		err = jsonIn.Unmarshal(data, req)
	}
	if err != nil {
		kind := "JSON"
		if typ == websocket.MessageBinary {
			kind = "protobuf"
		}
		return nil, connect.NewError(connect.CodeInvalidArgument,
			errors.New("invalid frame: not a herald.v1.ConnectRequest in "+kind+": "+err.Error()))
	}
	return req, nil
}
