package services

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/limits"
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

// errorMsg is the Error frame answering command or subscription id with
// err (with the StreamEnd of an ended subscription).
func errorMsg(logger *slog.Logger, id, op string, err error) *heraldv1.ConnectResponse {
	return &heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Error{Error: ErrorProto(logger, op, err)}}
}

// ErrorProto is the Error message for err, as a stream sends it (with the
// StreamEnd of an ended subscription); the code and message are what an
// RPC would return.
func ErrorProto(logger *slog.Logger, op string, err error) *heraldv1.Error {
	var end *End
	if errors.As(err, &end) {
		return end.Proto()
	}
	var fend *fanout.EndError
	if errors.As(err, &fend) {
		return endOf(logger, fend).Proto()
	}
	cerr := toConnect(logger, op, err)
	return &heraldv1.Error{Code: cerr.Code().String(), Message: cerr.Message()}
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
	var end *End
	if errors.As(err, &end) {
		return end.ConnectError()
	}
	var fend *fanout.EndError
	if errors.As(err, &fend) {
		return endOf(logger, fend).ConnectError()
	}
	if !known || public != "" {
		if code == connect.CodeInternal || code == connect.CodeUnavailable {
			logger.Error("request failed", "op", op, "code", code.String(), "err", err)
		}
		return connect.NewError(code, errors.New(public))
	}
	return connect.NewError(code, err)
}

// IsTooLarge reports an event refused for its size (a channel's or a
// namespace's max_event_size): HTTP transports answer it with 413.
func IsTooLarge(err error) bool { return errors.Is(err, eventlog.ErrTooLarge) }

// RetryAfter is the Retry-After header value for a refusal the client may
// retry later ("" for none): the wait a rate limit names, or a second for
// an unavailable server or a full instance.
func RetryAfter(err error) string {
	var lim *limits.Error
	if errors.As(err, &lim) && lim.RetryAfterHeader() != "" {
		return lim.RetryAfterHeader()
	}
	if connect.CodeOf(err) == connect.CodeUnavailable || errors.Is(err, limits.ErrTooManyConnections) {
		return "1"
	}
	return ""
}
