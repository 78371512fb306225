package services

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
)

// codeTable maps the event log's and the hub's sentinels to connect codes.
// It is the only such table: clients see these codes and the messages of
// these errors, never SQL or internal details.
var codeTable = []struct {
	err  error
	code connect.Code
}{
	{eventlog.ErrChannelNotFound, connect.CodeNotFound},
	{eventlog.ErrEventNotFound, connect.CodeNotFound},
	{eventlog.ErrChannelExists, connect.CodeAlreadyExists},
	{eventlog.ErrTooLarge, connect.CodeInvalidArgument},
	{eventlog.ErrNotEditable, connect.CodeFailedPrecondition},
	{fanout.ErrSlowConsumer, connect.CodeResourceExhausted},
	{fanout.ErrShutdown, connect.CodeUnavailable},
	{fanout.ErrStopped, connect.CodeUnavailable},
	{eventlog.ErrUnavailable, connect.CodeUnavailable},
	{eventlog.ErrClosed, connect.CodeUnavailable},
	{context.Canceled, connect.CodeCanceled},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
}

// publicMessages replace error texts that could carry internals.
var publicMessages = map[connect.Code]string{
	connect.CodeUnavailable: "the event log is unavailable; retry (publishes with the same idempotency_key)",
	connect.CodeInternal:    "internal error",
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
	code := connect.CodeInternal
	for _, e := range codeTable {
		if errors.Is(err, e.err) {
			code = e.code
			break
		}
	}
	var end *fanout.EndError
	if errors.As(err, &end) {
		cerr := connect.NewError(code, errors.New(end.Error()))
		if end.Err != nil {
			logger.Warn("subscription ended", "op", op, "err", err)
			cerr = connect.NewError(code, errors.New((&fanout.EndError{Reason: end.Reason, LastPosition: end.LastPosition}).Error()))
		}
		if d, derr := connect.NewErrorDetail(streamEnd(end)); derr == nil {
			cerr.AddDetail(d)
		}
		return cerr
	}
	msg, hide := publicMessages[code]
	if hide {
		logger.Error("request failed", "op", op, "code", code.String(), "err", err)
		return connect.NewError(code, errors.New(msg))
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

// codeName is the snake_case name of a code, as carried in Error.code.
func codeName(c connect.Code) string { return c.String() }
