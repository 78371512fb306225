package gateway

import (
	"encoding/json"
	"net/http"
	"sync"

	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// asyncAPIPath serves the AsyncAPI document. It is served rather than kept
// as a file under docs/ for the reason openapi.json is: it is generated
// from the message descriptors this binary was built with, by the same
// schema code as the OpenAPI document, so it cannot drift from the wire,
// and tools find it next to /v1/openapi.json on any instance.
const asyncAPIPath = "/v1/asyncapi.json"

// asyncAPIDoc returns the AsyncAPI 3.0 document of the WebSocket and SSE
// streams, generated on first use and cached. Safe for concurrent use.
var asyncAPIDoc = sync.OnceValues(func() ([]byte, error) {
	b, err := json.MarshalIndent(buildAsyncAPI(), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
})

// serveAsyncAPI answers GET /v1/asyncapi.json. Like every REST route it
// refuses query parameters it does not take (none).
func serveAsyncAPI(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		q, err := parseQuery(r.URL.RawQuery)
		if err == nil {
			err = (&route{}).checkQueryNames(q)
		}
		if err != nil {
			writeError(w, err)
			return
		}
	}
	b, err := asyncAPIDoc()
	if err != nil {
		writeError(w, err) // internal; json.Marshal of plain maps does not fail
		return
	}
	writeJSON(w, http.StatusOK, b)
}

const asyncAPIDescription = `Herald's streams: the WebSocket at /v1/ws, whose frames are the messages of the bidirectional herald.v1.EventService/Connect RPC, and the Server-Sent Events stream at /v1/sse. The application described is the Herald server: it receives ConnectRequest frames and sends ConnectResponse frames and SSE events.

Payloads are protojson (lowerCamelCase names, 64-bit integers as strings, bytes as base64, enums by name, zero values left out). With the WebSocket subprotocol herald.v1.proto the same messages travel as binary protobuf frames (proto/herald/v1/event_service.proto).

Every event has a position, global and gap-free; a client remembers the last one it received and resumes from it after any disconnect: no event lost, none repeated. The REST API (publish, history, channels, long-poll) is described by /v1/openapi.json.`

func buildAsyncAPI() obj {
	s := &schemas{components: obj{}}
	payload := func(m proto.Message) obj { return s.ref(m.ProtoReflect().Descriptor()) }
	sseHeaders := func(id, event obj) obj {
		props := obj{}
		if id != nil {
			props["id"] = id
		}
		props["event"] = event
		return obj{"type": "object", "description": "The SSE fields of the event besides data.", "properties": props}
	}
	positionID := obj{"type": "string", "pattern": "^[0-9]+$", "description": "A position: the cursor to resume after (Last-Event-ID)."}

	messages := obj{
		"ConnectRequest": obj{
			"name":        "ConnectRequest",
			"title":       "Command (client to server)",
			"summary":     "One command: subscribe, unsubscribe, publish, ping or refresh, tagged with an id the client chooses.",
			"description": "A herald.v1.ConnectRequest. Exactly one of subscribe, unsubscribe, publish, ping, refresh is set. A frame that does not decode, or breaks the schema's rules, is answered with an error frame and the connection stays open. Subscription ids starting with @ are the server's.",
			"contentType": "application/json",
			"payload":     payload(&heraldv1.ConnectRequest{}),
			"examples": []obj{
				{"name": "subscribe", "summary": "Subscribe to two channels after position 41.",
					"payload": obj{"id": "s1", "subscribe": obj{"channels": []string{"chat", "news"}, "cursor": "41"}}},
				{"name": "publish", "summary": "Publish; retrying with the same idempotency key stores it once.",
					"payload": obj{"id": "p1", "publish": obj{"channel": "chat", "type": "message", "data": "aGk=", "idempotencyKey": "b1946ac9"}}},
				{"name": "refresh", "summary": "Swap the connection's token before it expires.",
					"payload": obj{"id": "r1", "refresh": obj{"token": "<new JWT>"}}},
			},
		},
		"ConnectResponse": obj{
			"name":        "ConnectResponse",
			"title":       "Reply or event (server to client)",
			"summary":     "The answer to a command, or an event of a subscription, tagged with the command's or the subscription's id.",
			"description": "A herald.v1.ConnectResponse. subscribed, published, unsubscribed, pong, refreshed answer the command with that id; event carries an event of the subscription with that id (in position order, each once); error refuses a command, or, with end (reason, lastPosition), says the subscription ended: subscribe again with cursor = lastPosition. The subscription @server is the one the server opens from the token's channels claim.",
			"contentType": "application/json",
			"payload":     payload(&heraldv1.ConnectResponse{}),
			"examples": []obj{
				{"name": "subscribed", "payload": obj{"id": "s1", "subscribed": obj{"channels": []string{"chat", "news"}, "cursor": "41"}}},
				{"name": "event", "payload": obj{"id": "s1", "event": obj{"position": "42", "channel": "chat", "type": "message", "data": "aGk=",
					"kind": "EVENT_KIND_PUBLISHED", "createTime": "2025-01-02T15:04:05.123Z"}}},
				{"name": "published", "payload": obj{"id": "p1", "published": obj{"event": obj{"position": "43", "channel": "chat", "type": "message",
					"data": "aGk=", "kind": "EVENT_KIND_PUBLISHED", "idempotencyKey": "b1946ac9", "createTime": "2025-01-02T15:04:05.456Z"}}}},
				{"name": "subscription ended", "payload": obj{"id": "s1", "error": obj{"code": "resource_exhausted", "message": "slow consumer",
					"end": obj{"reason": "STREAM_END_REASON_SLOW_CONSUMER", "lastPosition": "42"}}}},
			},
		},
		"SSESubscribed": obj{
			"name":        "@subscribed",
			"title":       "SSE @subscribed",
			"summary":     "The subscription started (id: the start cursor), or, mid-stream and without an id, retention removed events the replay would have sent.",
			"contentType": "application/json",
			"headers":     sseHeaders(positionID, obj{"const": sseSubscribed}),
			"payload":     payload(&heraldv1.Subscribed{}),
			"examples": []obj{{"name": "start", "headers": obj{"id": "41", "event": sseSubscribed},
				"payload": obj{"channels": []string{"chat", "news"}, "cursor": "41"}}},
		},
		"SSEEvent": obj{
			"name":    "event",
			"title":   "SSE event",
			"summary": "One event of the subscribed channels, in position order, each once.",
			"description": "id is the event's position: EventSource sends it back as Last-Event-ID when it reconnects, and the stream resumes after it for every channel. " +
				"event is the event's type; there is no event line for an empty type, nor with ?event=message, so the browser names it message.",
			"contentType": "application/json",
			"headers": sseHeaders(positionID, obj{"type": "string", "pattern": `^[A-Za-z0-9_.:/-]*$`,
				"description": "The event's type, or message."}),
			"payload": payload(&heraldv1.Event{}),
			"examples": []obj{{"name": "published", "headers": obj{"id": "42", "event": "message.created"},
				"payload": obj{"position": "42", "channel": "chat", "type": "message.created", "data": "aGk=",
					"kind": "EVENT_KIND_PUBLISHED", "createTime": "2025-01-02T15:04:05.123Z"}}},
		},
		"SSECheckpoint": obj{
			"name":    sseCheckpoint,
			"title":   "SSE @checkpoint",
			"summary": "A filtered stream moved past events its filter dropped (id: that position).",
			"description": "Only with ?type= or ?tag=: after 100 dropped events in a row, or 1 s after the first of fewer. " +
				"Its id moves Last-Event-ID, so a reconnect resumes after the dropped events.",
			"contentType": "application/json",
			"headers":     sseHeaders(positionID, obj{"const": sseCheckpoint}),
			"payload":     payload(&heraldv1.Checkpoint{}),
			"examples": []obj{{"name": "checkpoint", "headers": obj{"id": "942", "event": sseCheckpoint},
				"payload": obj{"position": "942"}}},
		},
		"SSEEnd": obj{
			"name":    sseEnd,
			"title":   "SSE @end",
			"summary": "The server is about to end the stream: why, and where to resume.",
			"description": "Sent before the server closes the stream (shutdown, slow consumer, outage, token expiry with code unauthenticated). " +
				"EventSource then reconnects by itself with Last-Event-ID; with an expired token, reconnect with a fresh one.",
			"contentType": "application/json",
			"headers":     sseHeaders(nil, obj{"const": sseEnd}),
			"payload":     payload(&heraldv1.Error{}),
			"examples": []obj{{"name": "shutdown", "headers": obj{"event": sseEnd},
				"payload": obj{"code": "unavailable", "message": "server shutting down",
					"end": obj{"reason": "STREAM_END_REASON_SHUTDOWN", "lastPosition": "42"}}}},
		},
	}
	msgRef := func(name string) obj { return obj{"$ref": "#/components/messages/" + name} }
	secRefs := func(names ...string) []obj {
		out := make([]obj, len(names))
		for i, n := range names {
			out[i] = obj{"$ref": "#/components/securitySchemes/" + n}
		}
		return out
	}
	server := func(protocol, desc string) obj {
		return obj{
			"host":        "{host}",
			"protocol":    protocol,
			"description": desc,
			"variables": obj{"host": obj{"default": "127.0.0.1:8080",
				"description": "host[:port] of a Herald instance (`--addr`; the default is 127.0.0.1:8080)."}},
			"security": secRefs(secJWT, secAPIKey, secQuery, secCookie),
		}
	}
	cursorParam := obj{"type": "string", "pattern": "^[0-9]+$"}
	return obj{
		"asyncapi": "3.0.0",
		"info": obj{
			"title":       "Herald streams",
			"version":     "v1",
			"description": asyncAPIDescription,
			"tags":        []obj{{"name": tagStreams}},
		},
		"defaultContentType": "application/json",
		"servers": obj{
			"websocket": server("ws", "A Herald instance, WebSocket (wss behind a TLS proxy). Without a credential the connection is anonymous."),
			"http":      server("http", "A Herald instance, Server-Sent Events over HTTP/1.1 or HTTP/2 (https behind a TLS proxy)."),
		},
		"channels": obj{
			"websocket": obj{
				"address":     "/v1/ws",
				"title":       "WebSocket",
				"description": wsDescription,
				"servers":     []obj{{"$ref": "#/servers/websocket"}},
				"messages": obj{
					"connectRequest":  msgRef("ConnectRequest"),
					"connectResponse": msgRef("ConnectResponse"),
				},
				"bindings": obj{"ws": obj{
					"method": "GET",
					"query": obj{"type": "object", "properties": obj{
						"cursor":   withDesc(cursorParam, "Resume the @server subscription (the token's channels claim) after this position; left out: live."),
						TokenParam: obj{"type": "string", "description": "A JWT or API key, for clients that cannot set the Authorization header."},
					}},
					"headers": obj{"type": "object", "properties": obj{
						"Sec-WebSocket-Protocol": obj{"type": "string", "enum": wsSubprotocols,
							"description": "herald.v1.json: protojson in text frames; herald.v1.proto: protobuf in binary frames. Neither: JSON."},
					}},
					"bindingVersion": "0.1.0",
				}},
			},
			"sse": obj{
				"address":     "/v1/sse",
				"title":       "Server-Sent Events",
				"description": sseDescription,
				"servers":     []obj{{"$ref": "#/servers/http"}},
				"messages": obj{
					"subscribed": msgRef("SSESubscribed"),
					"event":      msgRef("SSEEvent"),
					"end":        msgRef("SSEEnd"),
					"checkpoint": msgRef("SSECheckpoint"),
				},
			},
		},
		"operations": obj{
			"receiveCommand": obj{
				"action":      "receive",
				"title":       "Commands",
				"summary":     "Herald receives the client's commands; each is answered with the command's id.",
				"description": "Publishes on one connection are committed in the order sent and acknowledged after commit.",
				"channel":     obj{"$ref": "#/channels/websocket"},
				"messages":    []obj{{"$ref": "#/channels/websocket/messages/connectRequest"}},
				"reply": obj{
					"channel":  obj{"$ref": "#/channels/websocket"},
					"messages": []obj{{"$ref": "#/channels/websocket/messages/connectResponse"}},
				},
			},
			"sendWebSocketEvents": obj{
				"action":  "send",
				"title":   "Events and ends",
				"summary": "Herald sends each subscription's events, and an error frame with end when it ends a subscription.",
				"description": "Events arrive tagged with the id of the subscribe command that asked for them, in position order, each once: first those after the subscription's cursor, then live ones. " +
					"An error frame with end (slow consumer, shutdown, token no longer allowing the channel) ends that subscription only; resume it with cursor = end.lastPosition.",
				"channel":  obj{"$ref": "#/channels/websocket"},
				"messages": []obj{{"$ref": "#/channels/websocket/messages/connectResponse"}},
			},
			"sendSSE": obj{
				"action":  "send",
				"title":   "Server-Sent Events",
				"summary": "Herald streams one subscription of one or more channels to an EventSource.",
				"description": "@subscribed first, then each event (id = position), and @end before the server ends the stream. " +
					"A reconnecting EventSource sends the last id as Last-Event-ID and the stream resumes after it, for every channel.",
				"channel": obj{"$ref": "#/channels/sse"},
				"messages": []obj{
					{"$ref": "#/channels/sse/messages/subscribed"},
					{"$ref": "#/channels/sse/messages/event"},
					{"$ref": "#/channels/sse/messages/end"},
					{"$ref": "#/channels/sse/messages/checkpoint"},
				},
				"bindings": obj{"http": obj{
					"method": "GET",
					"query": obj{"type": "object", "properties": obj{
						"channel":       obj{"type": "array", "items": obj{"type": "string"}, "description": "Channels (repeat or comma-separate); left out: the token's channels claim."},
						"last_event_id": withDesc(cursorParam, "Resume after this position; the Last-Event-ID header wins. Left out: live."),
						"event":         obj{"type": "string", "enum": []string{"type", "message"}, "description": "message: name every event message."},
						"type":          obj{"type": "array", "items": obj{"type": "string"}, "description": "Only events of these types (exact, or a prefix ending in .*)."},
						"tag":           obj{"type": "array", "items": obj{"type": "string"}, "description": "Only events with all these tags, written key:value."},
						TokenParam:      obj{"type": "string", "description": "A JWT or API key, for EventSource, which cannot set headers."},
					}},
					"bindingVersion": "0.3.0",
				}},
			},
		},
		"components": obj{
			"schemas":         s.components,
			"messages":        messages,
			"securitySchemes": asyncSecuritySchemes(),
		},
	}
}

// asyncSecuritySchemes are securitySchemes in AsyncAPI's terms (apiKey in
// a query or cookie is httpApiKey there).
func asyncSecuritySchemes() obj {
	out := obj{}
	for name, v := range securitySchemes {
		sch := obj{}
		for k, x := range v.(obj) {
			sch[k] = x
		}
		if sch["type"] == "apiKey" {
			sch["type"] = "httpApiKey"
		}
		out[name] = sch
	}
	return out
}

func withDesc(sch obj, desc string) obj {
	out := obj{"description": desc}
	for k, v := range sch {
		out[k] = v
	}
	return out
}
