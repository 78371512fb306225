package gateway

import (
	"net/http"
	"strconv"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

const tagStreams = "streams"

// endpoint documents, for the OpenAPI document, an endpoint that Register
// serves outside the REST route table: the two streams, whose bodies are
// not request/response messages, and the AsyncAPI document that describes
// their messages. TestOpenAPIMatchesRoutes checks that Register serves
// exactly these and restRoutes under /v1/.
type endpoint struct {
	method, path, op, tag string
	summary, description  string
	// params are OpenAPI parameter objects; successes the non-error
	// responses by status.
	params    func(s *schemas) []obj
	successes func(s *schemas) obj
	errors    []int // documented error statuses (the one error shape)
}

var (
	subscribeFields   = (&heraldv1.SubscribeRequest{}).ProtoReflect().Descriptor().Fields()
	sseCursorField    = subscribeFields.ByName("cursor")
	eventFilterFields = (&heraldv1.EventFilter{}).ProtoReflect().Descriptor().Fields()
	wsSubprotocols    = []string{SubprotocolJSON, SubprotocolProto}
)

const sseDescription = "One subscription of one or more channels as Server-Sent Events (`text/event-stream`), for `EventSource`: " +
	"the events after the cursor (`last_event_id`, or the `Last-Event-ID` header a reconnecting EventSource sends), then live ones, " +
	"each once and in position order. Without a cursor the stream starts live.\n\n" +
	"The stream, in order:\n" +
	"- `retry: <ms>`: the reconnect delay EventSource should use (2 s).\n" +
	"- `event: @subscribed`, `id: <cursor>`, `data:` a `herald.v1.Subscribed` (channels, cursor): the subscription started; its id is the start cursor, so a stream that drops before its first event resumes where it began. " +
	"It comes again mid-stream, without an id, when retention removed events the replay would have sent (`historyTruncated`, `truncatedThrough`).\n" +
	"- One SSE event per Herald event: `id:` its position (the resume cursor for every channel of the stream), `event:` its type " +
	"(no event line for an empty type, so `onmessage` gets it; with `event=message` never, so `onmessage` gets every event), `data:` the `herald.v1.Event` as protojson on one line (`data` base64).\n" +
	"- `event: @checkpoint`, `id: <position>`, `data:` a `herald.v1.Checkpoint`: only with a filter (`type`, `tag`), after 100 events in a row the filter dropped, or 1 s after the first of fewer: " +
	"its id moves `Last-Event-ID` past the dropped events, so a reconnect does not read them again.\n" +
	"- `: keep-alive` comments every `--sse-keepalive` (15 s) while idle.\n" +
	"- `event: @end`, `data:` a `herald.v1.Error` (`code`, `message`, `end.reason`, `end.lastPosition`), just before the server ends the stream: " +
	"shutdown, slow consumer, token expiry (`unauthenticated`: reconnect with a fresh token). EventSource then reconnects by itself with `Last-Event-ID` and nothing is lost.\n\n" +
	"Server event names start with `@`, which event types cannot contain, so they never collide with yours. " +
	"Refusals happen before the stream starts, as HTTP errors in the one error shape. The message schemas are in /v1/asyncapi.json."

const sseExample = "retry: 2000\n\n" +
	"id: 41\nevent: @subscribed\ndata: {\"channels\":[\"chat\",\"news\"],\"cursor\":\"41\"}\n\n" +
	"id: 42\nevent: message.created\ndata: {\"position\":\"42\",\"channel\":\"chat\",\"type\":\"message.created\",\"data\":\"aGk=\",\"kind\":\"EVENT_KIND_PUBLISHED\",\"createTime\":\"2025-01-02T15:04:05.123Z\"}\n\n" +
	": keep-alive\n\n" +
	"event: @end\ndata: {\"code\":\"unavailable\",\"message\":\"server shutting down\",\"end\":{\"reason\":\"STREAM_END_REASON_SHUTDOWN\",\"lastPosition\":\"42\"}}\n\n"

const wsDescription = "Upgrades to a WebSocket whose frames are the messages of the bidirectional `herald.v1.EventService/Connect` RPC: " +
	"the client sends `herald.v1.ConnectRequest` (`subscribe`, `unsubscribe`, `publish`, `ping`, `refresh`, each with an `id` it chooses), " +
	"the server answers with `herald.v1.ConnectResponse` (`subscribed`, `event`, `published`, `unsubscribed`, `pong`, `refreshed`, `error`) tagged with that id.\n\n" +
	"Subprotocols (`Sec-WebSocket-Protocol`): `herald.v1.json` (protojson in text frames) or `herald.v1.proto` (binary protobuf frames); a client that offers neither gets JSON. " +
	"When the token has a `channels` claim the server subscribes the connection to them as subscription `@server` (resume it with `?cursor=`).\n\n" +
	"Close codes: 1000 normal; 1008 the token expired (reconnect with a fresh one); 1009 a frame over `--max-message-bytes`; 1011 internal error; " +
	"1012 server restart (every subscription first got an `error` frame with `end.lastPosition`); 1013 try again later; 4008 slow consumer. " +
	"After any of them reconnect and resume every subscription from the last position received. " +
	"The frames are described message by message in /v1/asyncapi.json."

// streamEndpoints are the endpoints Register serves besides restRoutes.
var streamEndpoints = []endpoint{
	{
		method: http.MethodGet, path: "/v1/sse", op: "SubscribeSSE", tag: tagStreams,
		summary:     "Subscribe over Server-Sent Events",
		description: sseDescription,
		params: func(s *schemas) []obj {
			return []obj{
				{"name": "channel", "in": "query", "style": "form", "explode": true, "schema": s.paramSchema(subscribeFields.ByName("channels")),
					"description": "Channels to subscribe to, 1 to the server's `--max-channels-per-request` (32): repeat the parameter or separate names with commas (`channel=a,b`). " +
						"Left out: the channels of the token's `channels` claim (with neither: 400)."},
				{"name": "last_event_id", "in": "query", "schema": s.paramSchema(sseCursorField),
					"description": "Resume after this position (0: every retained event). Left out: live only. The Last-Event-ID header wins over it."},
				{"name": "event", "in": "query", "schema": obj{"type": "string", "enum": []string{"type", "message"}, "default": "type"},
					"description": "`type` (the default): each SSE event is named by the event's type. `message`: every event is named `message`, so `EventSource.onmessage` receives them all."},
				{"name": "type", "in": "query", "style": "form", "explode": true, "schema": s.paramSchema(eventFilterFields.ByName("types")),
					"description": filterTypeDesc},
				{"name": "tag", "in": "query", "style": "form", "explode": true, "schema": s.paramSchema(eventFilterFields.ByName("tags")),
					"description": filterTagDesc},
				{"name": "Last-Event-ID", "in": "header", "schema": s.paramSchema(sseCursorField),
					"description": "The position to resume after; EventSource sends it by itself when it reconnects."},
			}
		},
		successes: func(s *schemas) obj {
			return obj{"200": obj{
				"description": "The stream. It ends with `@end` when the server ends it, or when the client disconnects.",
				"headers": obj{
					"Cache-Control":     obj{"description": "`no-cache, no-transform`.", "schema": obj{"type": "string"}},
					"X-Accel-Buffering": obj{"description": "`no`: tells nginx not to buffer the stream.", "schema": obj{"type": "string"}},
				},
				"content": obj{"text/event-stream": obj{
					"schema":  obj{"type": "string", "description": "An endless sequence of SSE events (see the operation's description); each `data` is one line of protojson."},
					"example": sseExample,
				}},
			}}
		},
		errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests, http.StatusServiceUnavailable},
	},
	{
		method: http.MethodGet, path: "/v1/ws", op: "ConnectWebSocket", tag: tagStreams,
		summary:     "Open a WebSocket (the Connect RPC's messages)",
		description: wsDescription,
		params: func(s *schemas) []obj {
			return []obj{
				{"name": "cursor", "in": "query", "schema": s.paramSchema(sseCursorField),
					"description": "Resume the server's `@server` subscription (the token's `channels` claim) after this position. Left out: it starts live."},
				{"name": "Upgrade", "in": "header", "required": true, "schema": obj{"type": "string", "enum": []string{"websocket"}},
					"description": "The WebSocket handshake (RFC 6455), with `Connection: Upgrade`, `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`; browsers send these by themselves."},
				{"name": "Sec-WebSocket-Protocol", "in": "header", "schema": obj{"type": "string", "examples": wsSubprotocols},
					"description": "The subprotocols the client offers, comma-separated: `herald.v1.json` and/or `herald.v1.proto`."},
			}
		},
		successes: func(s *schemas) obj {
			return obj{
				"101": obj{
					"description": "Switching Protocols: the connection is now a WebSocket carrying ConnectRequest and ConnectResponse frames.",
					"headers": obj{"Sec-WebSocket-Protocol": obj{
						"description": "The subprotocol chosen: `herald.v1.json` or `herald.v1.proto` (absent when the client offered neither: JSON).",
						"schema":      obj{"type": "string", "enum": wsSubprotocols},
					}},
				},
				"426": errorResponse("Upgrade Required: the request is not a WebSocket handshake."),
			}
		},
		errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests, http.StatusServiceUnavailable},
	},
	{
		method: http.MethodGet, path: asyncAPIPath, op: "GetAsyncAPI", tag: tagMeta,
		summary:     "The AsyncAPI document of the streams",
		description: "The AsyncAPI 3.0 description of the WebSocket and SSE messages, generated from the same message descriptors as this document.",
		successes: func(*schemas) obj {
			return obj{"200": obj{
				"description": "The AsyncAPI document.",
				"content":     obj{"application/json": obj{"schema": obj{"type": "object", "description": "An AsyncAPI 3.0 document."}}},
			}}
		},
		errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable},
	},
}

// endpoint is the OpenAPI operation of ep.
func (s *schemas) endpoint(ep endpoint) obj {
	op := obj{
		"operationId": ep.op,
		"summary":     ep.summary,
		"description": ep.description,
		"tags":        []string{ep.tag},
		"security":    securityFor(ep.method),
	}
	if ep.params != nil {
		op["parameters"] = ep.params(s)
	}
	responses := ep.successes(s)
	for _, st := range ep.errors {
		responses[strconv.Itoa(st)] = errorResponse(errorStatusDesc[st])
	}
	responses["default"] = errorResponse("Any other error, in the same shape.")
	op["responses"] = responses
	return op
}
