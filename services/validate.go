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
		seen := map[string]bool{}
		for _, v := range verr.Violations {
			field := protovalidate.FieldPathString(v.Proto.GetField())
			if field == "" {
				field = "request"
			}
			part := field + ": " + violationText(field, protovalidate.FieldPathString(v.Proto.GetRule()), v.Proto.GetMessage())
			if !seen[part] {
				seen[part] = true
				parts = append(parts, part)
			}
		}
		return connect.NewError(connect.CodeInvalidArgument, errors.New("invalid request: "+strings.Join(parts, "; ")))
	}
	// A rule that fails to compile or evaluate is our bug, not the client's.
	return connect.NewError(connect.CodeInternal, errors.New("request validation failed"))
}

// What the rules of the shared names say, in words a client can act on
// (protovalidate's own messages quote regular expressions).
const (
	channelRule = "a channel name is 1 to 128 characters: letters, digits and _ . : @ / = -, starting with a letter or digit (e.g. chat:room-42)"
	typeRule    = "an event type is up to 64 characters: letters, digits and _ . : / - (e.g. message.created)"
)

// violationText words one violation: the shared names' rules as a whole
// (so that an empty and a malformed channel name read alike and once),
// and protovalidate's messages without regular expressions.
func violationText(field, rule, msg string) string {
	leaf := field
	if i := strings.LastIndexByte(leaf, '.'); i >= 0 {
		leaf = leaf[i+1:]
	}
	if i := strings.IndexByte(leaf, '['); i >= 0 {
		leaf = leaf[:i]
	}
	stringRule := strings.HasPrefix(rule, "string.") || strings.HasPrefix(rule, "repeated.items.string.")
	switch {
	case stringRule && (leaf == "channel" || leaf == "channels" || leaf == "name"):
		return channelRule
	case stringRule && leaf == "type":
		return typeRule
	case strings.HasSuffix(rule, "string.pattern"):
		return "has characters that are not allowed here"
	case msg == "must be at least 1 characters":
		return "must not be empty"
	}
	return strings.Replace(msg, " 1 item(s)", " 1 item", 1)
}
