package services

import (
	"context"
	"errors"
	"strings"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/telemetry"
)

// Interceptor enforces the protovalidate rules of proto/herald/v1 on every
// request of every protocol, before a handler runs: invalid requests fail
// with invalid_argument and write nothing.
//
// The bidirectional Connect RPC is the exception: a bad command there gets
// an Error message and the stream stays open, so its handler validates each
// command itself (validateMsg).
type Interceptor struct{}

// WrapUnary validates unary requests.
func (Interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		if msg, ok := req.Any().(proto.Message); ok {
			_, span := telemetry.Start(ctx, "herald.validate")
			err := validateMsg(msg)
			span.End()
			if err != nil {
				return nil, err
			}
		}
		return next(ctx, req)
	}
}

// WrapStreamingClient leaves clients alone.
func (Interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler validates every message a streaming handler receives.
func (Interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if conn.Spec().Procedure == heraldv1connect.EventServiceConnectProcedure {
			return next(ctx, conn)
		}
		return next(ctx, validatingConn{conn})
	}
}

type validatingConn struct {
	connect.StreamingHandlerConn
}

func (c validatingConn) Receive(m any) error {
	if err := c.StreamingHandlerConn.Receive(m); err != nil {
		return err
	}
	if msg, ok := m.(proto.Message); ok {
		return validateMsg(msg)
	}
	return nil
}

// Validate checks msg against the protovalidate rules of its schema, as the
// Interceptor does for RPCs: gateways call it before a service method.
func Validate(msg proto.Message) error { return validateMsg(msg) }

// validateMsg checks msg against its rules and returns an invalid_argument
// error naming every violated field.
func validateMsg(msg proto.Message) error {
	err := protovalidate.Validate(msg)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if errors.As(err, &verr) {
		parts := make([]string, 0, len(verr.Violations))
		for _, v := range verr.Violations {
			field := protovalidate.FieldPathString(v.Proto.GetField())
			if field == "" {
				field = "request"
			}
			parts = append(parts, field+": "+v.Proto.GetMessage())
		}
		return connect.NewError(connect.CodeInvalidArgument, errors.New("invalid request: "+strings.Join(parts, "; ")))
	}
	// A rule that fails to compile or evaluate is our bug, not the client's.
	return connect.NewError(connect.CodeInternal, errors.New("request validation failed"))
}
