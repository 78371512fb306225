package services

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/namespace"
)

// codeTable maps the event log's and the hub's sentinels to connect codes.
// It is the only such table. Clients see the code and either the error's
// own text (written for them) or, where that could carry internals such as
// SQL or addresses, the fixed public message.
var codeTable = []struct {
	err    error
	code   connect.Code
	public string // replaces the error text when set
}{
	{eventlog.ErrChannelNotFound, connect.CodeNotFound, ""},
	{eventlog.ErrEventNotFound, connect.CodeNotFound, ""},
	{eventlog.ErrChannelExists, connect.CodeAlreadyExists, ""},
	// The error's text names the key, the channel and the stored event's
	// position, and says to use a new key for a new event.
	{eventlog.ErrIdempotencyConflict, connect.CodeAlreadyExists, ""},
	{eventlog.ErrTooLarge, connect.CodeInvalidArgument, ""},
	{namespace.ErrUnknown, connect.CodeInvalidArgument, ""},
	{eventlog.ErrNotEditable, connect.CodeFailedPrecondition, ""},
	{fanout.ErrNoChannels, connect.CodeInvalidArgument, ""},
	{fanout.ErrCursorAhead, connect.CodeOutOfRange, ""},
	{fanout.ErrSlowConsumer, connect.CodeResourceExhausted, ""},
	{fanout.ErrShutdown, connect.CodeUnavailable, ""},
	{fanout.ErrStopped, connect.CodeUnavailable, "server shutting down; reconnect (to any instance) and resume from your last position"},
	{fanout.ErrNotReady, connect.CodeUnavailable, ""},
	{errShuttingDown, connect.CodeUnavailable, ""},
	{eventlog.ErrUnavailable, connect.CodeUnavailable, unavailableMessage},
	{eventlog.ErrClosed, connect.CodeUnavailable, "server shutting down; retry (publishes with the same idempotency_key)"},
	{context.Canceled, connect.CodeCanceled, ""},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded, ""},
}

const unavailableMessage = "the event log is unavailable; retry (publishes with the same idempotency_key)"

// errShuttingDown answers publishes that a closing session could not
// commit in time: they may or may not have been committed.
var errShuttingDown = errors.New("server shutting down before the publish was acknowledged; it may or may not be committed: retry with the same idempotency_key")

// ConnectError is toConnect for gateways: the code and client message of an
// error from the event log or the hub, the same as an RPC would return.
func ConnectError(logger *slog.Logger, op string, err error) *connect.Error {
	return toConnect(logger, op, err)
}

// ErrorProto is the Error message for err, as the Connect RPC sends it
// (with the StreamEnd of an ended subscription).
func ErrorProto(logger *slog.Logger, op string, err error) *heraldv1.Error {
	cerr := toConnect(logger, op, err)
	e := &heraldv1.Error{Code: cerr.Code().String(), Message: cerr.Message()}
	var end *fanout.EndError
	if errors.As(err, &end) {
		e.End = streamEnd(end)
	}
	return e
}

// toConnect turns an error from the layers below into a connect error with
// a stable code and a message fit for clients. Unknown errors are logged
// and reported as internal.
func toConnect(logger *slog.Logger, op string, err error) *connect.Error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code, public, known := connect.CodeInternal, "internal error", false
	for _, e := range codeTable {
		if errors.Is(err, e.err) {
			code, public, known = e.code, e.public, true
			break
		}
	}
	var end *fanout.EndError
	if errors.As(err, &end) {
		if end.Err != nil {
			logger.Warn("subscription ended", "op", op, "err", err)
		}
		// The end reason and position are for the client; the log's error is not.
		cerr := connect.NewError(code, errors.New((&fanout.EndError{Reason: end.Reason, LastPosition: end.LastPosition}).Error()))
		if d, derr := connect.NewErrorDetail(streamEnd(end)); derr == nil {
			cerr.AddDetail(d)
		}
		return cerr
	}
	if !known || public != "" {
		if code == connect.CodeInternal || code == connect.CodeUnavailable {
			logger.Error("request failed", "op", op, "code", code.String(), "err", err)
		}
		return connect.NewError(code, errors.New(public))
	}
	return connect.NewError(code, err)
}

// streamEnd describes how a subscription ended, for clients to resume.
func streamEnd(end *fanout.EndError) *heraldv1.StreamEnd {
	reason := heraldv1.StreamEndReason_STREAM_END_REASON_UNSPECIFIED
	switch end.Reason {
	case fanout.ReasonSlowConsumer:
		reason = heraldv1.StreamEndReason_STREAM_END_REASON_SLOW_CONSUMER
	case fanout.ReasonShutdown:
		reason = heraldv1.StreamEndReason_STREAM_END_REASON_SHUTDOWN
	case fanout.ReasonUnavailable:
		reason = heraldv1.StreamEndReason_STREAM_END_REASON_UNAVAILABLE
	}
	return &heraldv1.StreamEnd{Reason: reason, LastPosition: end.LastPosition}
}
