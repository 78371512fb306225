package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// openAPIDoc returns the OpenAPI 3.1 document of restRoutes, generated on
// first use from the table and the message descriptors (with their
// protovalidate rules) and cached. Safe for concurrent use. (Set in init:
// restRoutes serves it, which would otherwise be an initialization cycle.)
var openAPIDoc func() ([]byte, error)

func init() {
	openAPIDoc = sync.OnceValues(func() ([]byte, error) {
		b, err := json.MarshalIndent(buildOpenAPI(), "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	})
}

func (g *Gateway) serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	b, err := openAPIDoc()
	if err != nil {
		g.cfg.Logger.Error("build the OpenAPI document", "err", err)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

type obj = map[string]any

const apiDescription = `Herald's REST API: publish, read and edit history, manage channels and long-poll, each route calling the same service method as the gRPC/Connect API (package herald.v1).

Conventions:
- Bodies and responses are protojson: lowerCamelCase field names, 64-bit integers as strings, bytes as base64, enums by name, durations as "1.5s", timestamps in RFC 3339. Fields with zero values are left out of responses. Unknown body fields are refused.
- Channel names may contain '/': escape it as %2F in paths.
- Unknown query parameters, malformed numbers, durations, enums and JSON are refused with 400 naming the parameter; nothing is written.
- Every error has the shape {"code": "invalid_argument", "message": "..."}: code is the stable gRPC/Connect code in snake case, the HTTP status follows from it (as in the Connect protocol).
- Responses are application/json with Cache-Control: no-store, except the streams: GET /v1/sse (text/event-stream) and GET /v1/ws (a WebSocket); their messages are described by the AsyncAPI document at /v1/asyncapi.json.
- Credentials: a JWT or an API key as Authorization: Bearer; clients that cannot set headers send the same token as the access_token query parameter (GET only) or the herald_token cookie. Without one a request is anonymous, which the server's settings may allow.`

var tagDescriptions = []obj{
	{"name": tagEvents, "description": "Publish and long-poll (EventService)."},
	{"name": tagHistory, "description": "Read and edit a channel's stored events (HistoryService)."},
	{"name": tagChannels, "description": "Channels and their settings (ChannelService)."},
	{"name": tagStreams, "description": "Receive a channel's events as they are published: Server-Sent Events, a WebSocket, or long-polling. " +
		"All three run the same subscription: replay after your cursor, then live, each event once and in position order. " +
		"The messages of the SSE and WebSocket streams are described by the AsyncAPI document at /v1/asyncapi.json."},
	{"name": tagMeta, "description": "About the API."},
}

// errorStatusDesc describes the error responses routes document.
var errorStatusDesc = map[int]string{
	http.StatusBadRequest:            "invalid_argument (a parameter or field breaks the rules, or an unknown query parameter was given; nothing was written), failed_precondition or out_of_range.",
	http.StatusUnauthorized:          "unauthenticated: the credential (Authorization header, access_token or herald_token) does not verify, or expired.",
	http.StatusForbidden:             "permission_denied: the credential, or anonymous access, does not allow this on this channel; or the page's Origin is not allowed (--allowed-origins) or the Host not (--allowed-hosts).",
	http.StatusTooManyRequests:       "resource_exhausted: a publish rate (per user, connection or address) or a connection limit (long-lived requests per instance or per user) was reached. Retry after Retry-After seconds; the message names the limit.",
	http.StatusNotFound:              "not_found: unknown channel or event.",
	http.StatusConflict:              "already_exists.",
	http.StatusRequestEntityTooLarge: "invalid_argument: the body is larger than the server's limit, or the event data than the channel's or namespace's max event size (the message gives the limit).",
	http.StatusUnsupportedMediaType:  "invalid_argument: the Content-Type is not application/json.",
	http.StatusServiceUnavailable:    "unavailable: the event log is unreachable, or the server is starting or stopping. Retry (publishes with the same idempotency key); Retry-After is set.",
}

// buildOpenAPI describes restRoutes, then the endpoints Register serves
// outside that table (streamEndpoints: SSE, WebSocket, AsyncAPI).
func buildOpenAPI() obj {
	s := &schemas{components: obj{}}
	s.components["Error"] = errorSchema()
	paths := obj{}
	add := func(method, path string, op obj) {
		item, _ := paths[path].(obj)
		if item == nil {
			item = obj{}
			paths[path] = item
		}
		item[strings.ToLower(method)] = op
	}
	for _, rt := range restRoutes {
		add(rt.method, rt.path, s.operation(rt))
	}
	for _, ep := range streamEndpoints {
		add(ep.method, ep.path, s.endpoint(ep))
	}
	return obj{
		"openapi": "3.1.0",
		"info": obj{
			"title":       "Herald REST API",
			"version":     "v1",
			"description": apiDescription,
		},
		"servers":  openAPIServers,
		"security": securityFor(http.MethodPost),
		"tags":     tagDescriptions,
		"paths":    paths,
		"components": obj{
			"schemas":         s.components,
			"securitySchemes": securitySchemes,
		},
	}
}

// openAPIServers is relative to nothing: the document is served by every
// instance under whatever name clients use, so the host is a variable
// whose default is `herald serve`'s default address.
var openAPIServers = []obj{{
	"url":         "{scheme}://{host}",
	"description": "A Herald instance (`herald serve`); every transport is on this one port.",
	"variables": obj{
		"scheme": obj{"enum": []string{"http", "https"}, "default": "http",
			"description": "https when a TLS proxy is in front of Herald."},
		"host": obj{"default": "127.0.0.1:8080", "description": "host[:port] (`--addr`; the default is 127.0.0.1:8080)."},
	},
}}

// Security schemes. JWTs and API keys both travel as `Authorization:
// Bearer`; clients that cannot set headers (EventSource, the WebSocket
// constructor) use the access_token query parameter (GET only) or the
// herald_token cookie (see authn.go). No credential is anonymous, which is
// allowed when the server runs without --auth-config or a namespace admits
// anonymous clients; a credential that does not verify gets 401.
const (
	secJWT    = "bearerJWT"
	secAPIKey = "apiKey"
	secQuery  = "accessTokenQuery"
	secCookie = "accessTokenCookie"
)

var securitySchemes = obj{
	secJWT: obj{"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
		"description": "A JWT verified against the server's keys (--auth-config: HS256 secret, RS/ES/EdDSA keys or a JWKS file or URL). Its claims grant channel patterns; `channels` names channels the server subscribes the connection to."},
	secAPIKey: obj{"type": "http", "scheme": "bearer",
		"description": "An API key from --auth-config, sent the same way as a JWT: `Authorization: Bearer <key>`."},
	secQuery: obj{"type": "apiKey", "in": "query", "name": TokenParam,
		"description": "The same JWT or API key as a query parameter, for clients that cannot set headers (EventSource, the WebSocket constructor). GET requests only; the server removes it from the request before anything logs it."},
	secCookie: obj{"type": "apiKey", "in": "cookie", "name": TokenCookie,
		"description": "The same JWT or API key in a cookie, for same-site pages."},
}

// securityFor lists the credentials a request with method may carry; the
// empty requirement says that none is also accepted (anonymous).
func securityFor(method string) []obj {
	sec := []obj{{secJWT: []string{}}, {secAPIKey: []string{}}}
	if method == http.MethodGet {
		sec = append(sec, obj{secQuery: []string{}})
	}
	return append(sec, obj{secCookie: []string{}}, obj{})
}

func (s *schemas) operation(rt *route) obj {
	op := obj{
		"operationId": rt.op,
		"summary":     rt.summary,
		"description": rt.description,
		"tags":        []string{rt.tag},
	}
	params := []obj{}
	var fields protoreflect.FieldDescriptors
	if rt.req != nil {
		fields = rt.req.Descriptor().Fields()
	}
	for _, p := range rt.pathParams {
		params = append(params, obj{"name": p.name, "in": "path", "required": true, "description": p.desc,
			"schema": s.paramSchema(fields.ByName(p.field))})
	}
	for _, p := range rt.query {
		fd := p.fieldOf(rt.req.Descriptor())
		q := obj{"name": p.name, "in": "query", "description": p.desc, "schema": s.paramSchema(fd)}
		if fd.IsList() || fd.IsMap() {
			q["style"], q["explode"] = "form", true
		}
		params = append(params, q)
	}
	for _, p := range rt.headers {
		params = append(params, obj{"name": p.name, "in": "header", "description": p.desc,
			"schema": s.paramSchema(fields.ByName(p.field))})
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if rt.method == http.MethodGet {
		op["security"] = securityFor(rt.method)
	}
	if longPoll(rt) {
		op["tags"] = []string{rt.tag, tagStreams}
		op["description"] = rt.description + "\n\nA long-poll: with `wait` the server may hold the request open that long before it answers, " +
			"so give the HTTP client a timeout above `wait` (proxies too). A held request counts against the connection limits (429 when full)."
	}
	if rt.body != noBody {
		op["requestBody"] = s.requestBody(rt)
	}

	responses := obj{}
	successes := rt.success
	if len(successes) == 0 {
		successes = []success{{http.StatusOK, "OK."}}
	}
	for _, sc := range successes {
		var schema obj
		if rt.resp != nil {
			schema = s.ref(rt.resp.Descriptor())
		} else {
			schema = obj{"type": "object", "description": "An OpenAPI 3.1 document."}
		}
		resp := obj{"description": sc.desc, "content": obj{"application/json": obj{"schema": schema}}}
		if sc.status == http.StatusCreated && rt.locationOf != nil {
			resp["headers"] = obj{"Location": obj{
				"description": "The path of what was created.",
				"schema":      obj{"type": "string"},
			}}
		}
		responses[strconv.Itoa(sc.status)] = resp
	}
	// Every route refuses unknown query parameters (400), bad credentials
	// (401) and disallowed origins or actions (403).
	errStatuses := []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable}
	if rateLimited(rt) {
		errStatuses = append(errStatuses, http.StatusTooManyRequests)
	}
	for _, st := range append(errStatuses, rt.errors...) {
		responses[strconv.Itoa(st)] = errorResponse(errorStatusDesc[st])
	}
	responses["default"] = errorResponse("Any other error, in the same shape.")
	op["responses"] = responses
	return op
}

// longPoll reports whether rt can hold the request open (its request has
// a wait field): it then counts as a long-lived request, like a stream.
func longPoll(rt *route) bool {
	return rt.req != nil && rt.req.Descriptor().Fields().ByName("wait") != nil
}

// rateLimited reports whether rt can be refused with 429: long-polls count
// against the connection limits, publishes against the publish rates.
func rateLimited(rt *route) bool {
	return longPoll(rt) || (rt.req != nil && rt.req.Descriptor().FullName() == "herald.v1.PublishRequest")
}

func errorResponse(desc string) obj {
	return obj{"description": desc, "content": obj{"application/json": obj{"schema": obj{"$ref": "#/components/schemas/Error"}}}}
}

func errorSchema() obj {
	var codes []string
	for c := connect.CodeCanceled; c <= connect.CodeUnauthenticated; c++ {
		codes = append(codes, c.String())
	}
	return obj{
		"type":        "object",
		"description": "The one error shape of every endpoint.",
		"required":    []string{"code", "message"},
		"properties": obj{
			"code":    obj{"type": "string", "enum": codes, "description": "The gRPC/Connect code in snake case."},
			"message": obj{"type": "string", "description": "What went wrong, for humans."},
		},
	}
}

// requestBody describes a route's body: the request message without the
// fields the path binds.
func (s *schemas) requestBody(rt *route) obj {
	md := rt.req.Descriptor()
	var schema obj
	if len(rt.pathParams) == 0 {
		schema = s.ref(md)
	} else {
		full := s.message(md) // inline, not a component: only this variant is used
		props := obj{}
		for k, v := range full["properties"].(obj) {
			props[k] = v
		}
		var required []string
		if r, ok := full["required"].([]string); ok {
			required = slices.Clone(r)
		}
		for _, p := range rt.pathParams {
			name := md.Fields().ByName(p.field).JSONName()
			delete(props, name)
			required = slices.DeleteFunc(required, func(n string) bool { return n == name })
		}
		schema = obj{"type": "object", "properties": props,
			"description": fmt.Sprintf("%s without the fields the path gives (those may be repeated here if they agree).", md.Name())}
		if len(required) > 0 {
			schema["required"] = required
		}
	}
	content := obj{"application/json": obj{"schema": schema}}
	desc := "protojson."
	if rt.body == rawOrJSON {
		fd := md.Fields().ByName(rt.rawField)
		raw := obj{"type": "string", "description": "The raw " + fd.JSONName() + "."}
		content["application/octet-stream"] = obj{"schema": raw}
		content["text/plain"] = obj{"schema": raw}
		desc = rawBodyDesc
	}
	return obj{"description": desc, "content": content}
}

// schemas collects component schemas of messages in protojson shape.
type schemas struct {
	components obj
}

func (s *schemas) ref(md protoreflect.MessageDescriptor) obj {
	if wkt := wellKnown(md); wkt != nil {
		return wkt
	}
	name := string(md.FullName())
	if _, ok := s.components[name]; !ok {
		s.components[name] = nil // placeholder: recursive messages
		s.components[name] = s.message(md)
	}
	return obj{"$ref": "#/components/schemas/" + name}
}

// wellKnown returns the JSON shape of a google.protobuf message protojson
// writes as a scalar, or nil.
func wellKnown(md protoreflect.MessageDescriptor) obj {
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return obj{"type": "string", "format": "date-time", "description": "RFC 3339 timestamp."}
	case "google.protobuf.Duration":
		return obj{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]{1,9})?s$`, "description": "Seconds with an s suffix, e.g. \"1.5s\"."}
	case "google.protobuf.Empty":
		return obj{"type": "object"}
	}
	if md.ParentFile() != nil && md.ParentFile().Package() == "google.protobuf" {
		return obj{} // any JSON value
	}
	return nil
}

func (s *schemas) message(md protoreflect.MessageDescriptor) obj {
	props := obj{}
	var required []string
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		sch, req := s.field(fd)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			appendDesc(sch, fmt.Sprintf("One of the oneof `%s` (%s): at most one is set.", od.Name(), oneofFields(od)))
		}
		props[fd.JSONName()] = sch
		if req {
			required = append(required, fd.JSONName())
		}
	}
	out := obj{"type": "object", "properties": props}
	if len(required) > 0 {
		out["required"] = required
	}
	return out
}

func oneofFields(od protoreflect.OneofDescriptor) string {
	var names []string
	for i := range od.Fields().Len() {
		names = append(names, od.Fields().Get(i).JSONName())
	}
	return strings.Join(names, ", ")
}

// field returns the protojson schema of fd and whether its rules require it.
func (s *schemas) field(fd protoreflect.FieldDescriptor) (obj, bool) {
	if isPayload(fd) {
		return payloadSchema(), false
	}
	rules := fieldRules(fd)
	if fd.IsMap() {
		return obj{"type": "object", "additionalProperties": s.scalar(fd.MapValue())}, false
	}
	if fd.IsList() {
		items := s.scalar(fd)
		applyRules(items, rules.GetRepeated().GetItems(), true)
		arr := obj{"type": "array", "items": items}
		applyRules(arr, rules, true)
		return arr, rules.GetRequired() || rules.GetRepeated().GetMinItems() > 0
	}
	sch := s.scalar(fd) // a fresh object: OpenAPI 3.1 allows keywords beside $ref
	applyRules(sch, rules, true)
	return sch, rules.GetRequired() || rules.GetString().GetMinLen() > 0
}

// isPayload reports the data of an event, a publish or an edit, which the
// JSON mapping writes by its format rather than as protojson bytes.
func isPayload(fd protoreflect.FieldDescriptor) bool {
	if fd.Name() != "data" || fd.Kind() != protoreflect.BytesKind {
		return false
	}
	switch fd.ContainingMessage().FullName() {
	case "herald.v1.Event", "herald.v1.PublishRequest", "herald.v1.UpdateEventRequest":
		return true
	}
	return false
}

// payloadSchema describes data in Herald's JSON mapping: any JSON value.
func payloadSchema() obj {
	return obj{"description": "The payload, by `format`: a JSON value (format `DATA_FORMAT_JSON`; " +
		"in a request, any JSON value other than a string implies it), a string (`DATA_FORMAT_TEXT`; " +
		"in a request, a string without a format is text), or base64 (`DATA_FORMAT_BYTES`, and events without a format). " +
		"At most 1 MiB as bytes, and at most the channel's max_event_size.",
		"examples": []any{map[string]any{"text": "hi"}, "hello"}}
}

// scalar is the protojson schema of one value of fd.
func (s *schemas) scalar(fd protoreflect.FieldDescriptor) obj {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return obj{"type": "boolean"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return obj{"type": "integer", "format": "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return obj{"type": "integer", "minimum": 0, "maximum": uint64(1<<32 - 1)}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return obj{"type": "string", "format": "int64", "pattern": `^-?[0-9]+$`}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return obj{"type": "string", "format": "uint64", "pattern": `^[0-9]+$`}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return obj{"type": "number"}
	case protoreflect.StringKind:
		return obj{"type": "string"}
	case protoreflect.BytesKind:
		return obj{"type": "string", "contentEncoding": "base64"}
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		names := make([]string, vals.Len())
		for i := range vals.Len() {
			names[i] = string(vals.Get(i).Name())
		}
		return obj{"type": "string", "enum": names}
	default: // message, group
		return s.ref(fd.Message())
	}
}

// paramSchema is the schema of a path, query or header parameter bound to
// fd: plain text, so 64-bit integers are integers and enums take the short
// lowercase names.
func (s *schemas) paramSchema(fd protoreflect.FieldDescriptor) obj {
	if fd.IsMap() {
		// Written key:value, repeated or comma-separated.
		return obj{"type": "array", "items": obj{"type": "string", "pattern": "^[A-Za-z0-9_.-]+:", "examples": []string{"room:42"}}}
	}
	rules := fieldRules(fd)
	item := obj{}
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		item = obj{"type": "integer", "format": "int32"}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		item = obj{"type": "integer", "format": "int64"}
	case protoreflect.EnumKind:
		item = obj{"type": "string", "enum": enumNames(fd.Enum())}
	case protoreflect.MessageKind:
		if fd.Message().FullName() == durationName {
			item = obj{"type": "string", "examples": []string{"30s", "30"}}
		}
	default:
		item = s.scalar(fd)
	}
	if !fd.IsList() {
		applyRules(item, rules, false)
		return item
	}
	applyRules(item, rules.GetRepeated().GetItems(), false)
	arr := obj{"type": "array", "items": item}
	applyRules(arr, rules, false)
	return arr
}

// fieldRules returns fd's protovalidate rules, or nil.
func fieldRules(fd protoreflect.FieldDescriptor) *validate.FieldRules {
	opts := fd.Options()
	if opts == nil || !proto.HasExtension(opts, validate.E_Field) {
		return nil
	}
	r, _ := proto.GetExtension(opts, validate.E_Field).(*validate.FieldRules)
	return r
}

// applyRules adds the JSON Schema keywords that express r to sch; rules
// JSON Schema cannot express on the value as sent (64-bit integers sent as
// strings, byte lengths before base64, durations) go into the description.
func applyRules(sch obj, r *validate.FieldRules, int64AsString bool) {
	if r == nil {
		return
	}
	if x := r.GetString(); x != nil {
		if x.HasMinLen() {
			sch["minLength"] = x.GetMinLen()
		}
		if x.HasMaxLen() {
			sch["maxLength"] = x.GetMaxLen()
		}
		if x.HasPattern() {
			sch["pattern"] = x.GetPattern()
		}
	}
	if x := r.GetBytes(); x != nil && x.HasMaxLen() {
		appendDesc(sch, fmt.Sprintf("At most %d bytes.", x.GetMaxLen()))
	}
	if x := r.GetInt32(); x != nil {
		bound(sch, x.HasGte(), "minimum", int64(x.GetGte()), false)
		bound(sch, x.HasGt(), "exclusiveMinimum", int64(x.GetGt()), false)
		bound(sch, x.HasLte(), "maximum", int64(x.GetLte()), false)
		bound(sch, x.HasLt(), "exclusiveMaximum", int64(x.GetLt()), false)
	}
	if x := r.GetInt64(); x != nil {
		bound(sch, x.HasGte(), "minimum", x.GetGte(), int64AsString)
		bound(sch, x.HasGt(), "exclusiveMinimum", x.GetGt(), int64AsString)
		bound(sch, x.HasLte(), "maximum", x.GetLte(), int64AsString)
		bound(sch, x.HasLt(), "exclusiveMaximum", x.GetLt(), int64AsString)
	}
	if x := r.GetRepeated(); x != nil {
		if x.HasMinItems() {
			sch["minItems"] = x.GetMinItems()
		}
		if x.HasMaxItems() {
			sch["maxItems"] = x.GetMaxItems()
		}
		if x.GetUnique() {
			sch["uniqueItems"] = true
		}
	}
	if x := r.GetDuration(); x != nil {
		switch {
		case x.HasGte() && x.HasLte():
			appendDesc(sch, fmt.Sprintf("From %v to %v.", x.GetGte().AsDuration(), x.GetLte().AsDuration()))
		case x.HasGte():
			appendDesc(sch, fmt.Sprintf("At least %v.", x.GetGte().AsDuration()))
		case x.HasLte():
			appendDesc(sch, fmt.Sprintf("At most %v.", x.GetLte().AsDuration()))
		}
	}
}

var boundWords = map[string]string{
	"minimum": "At least", "exclusiveMinimum": "Greater than",
	"maximum": "At most", "exclusiveMaximum": "Less than",
}

func bound(sch obj, has bool, keyword string, v int64, asText bool) {
	if !has {
		return
	}
	if asText {
		appendDesc(sch, fmt.Sprintf("%s %d.", boundWords[keyword], v))
		return
	}
	sch[keyword] = v
}

func appendDesc(sch obj, text string) {
	if d, ok := sch["description"].(string); ok && d != "" {
		text = d + " " + text
	}
	sch["description"] = text
}
