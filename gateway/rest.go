package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/services"
)

// route is one REST endpoint: how a request message is assembled from the
// path, the query, headers and the body, which service method answers it,
// and what the OpenAPI document says about it. restRoutes is the only
// table: registerREST serves it and openAPI describes it, so the two cannot
// drift.
type route struct {
	method string
	path   string // ServeMux pattern path; {wildcards} are path parameters
	op     string // OpenAPI operationId: the RPC the route calls
	tag    string
	// summary and description are the OpenAPI texts.
	summary, description string

	req, resp protoreflect.MessageType // nil req: no request message (special)

	pathParams []param
	query      []param
	headers    []param
	body       bodyKind
	rawField   protoreflect.Name // with rawOrJSON: the bytes field a raw body fills
	success    []success         // documented success statuses; the first is the default
	errors     []int             // documented error statuses besides 400, 503 and default
	statusOf   func(proto.Message) int
	locationOf func(proto.Message) string
	call       func(ctx context.Context, g *Gateway, req proto.Message) (proto.Message, error)
	serve      func(g *Gateway, w http.ResponseWriter, r *http.Request) // instead of req/call
}

// param binds a path wildcard, query parameter or header to a field of the
// request message.
type param struct {
	name  string            // as it appears in the URL or header
	field protoreflect.Name // the request field it sets
	// sub, when set, is the field of the message in field that the
	// parameter sets (filter.types): only name spells it.
	sub  protoreflect.Name
	desc string
}

// fieldOf is the field p sets, in a message of type md.
func (p param) fieldOf(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	fd := md.Fields().ByName(p.field)
	if p.sub != "" {
		fd = fd.Message().Fields().ByName(p.sub)
	}
	return fd
}

type bodyKind int

const (
	noBody    bodyKind = iota
	jsonBody           // protojson of the request message
	rawOrJSON          // protojson with Content-Type application/json, else the raw bytes of rawField
)

type success struct {
	status int
	desc   string
}

const (
	tagEvents   = "events"
	tagHistory  = "history"
	tagChannels = "channels"
	tagMeta     = "meta"
)

// Descriptions shared by several routes.
const (
	channelParamDesc = "Channel name. A `/` in the name must be escaped as `%2F` (the path segment is one name)."
	positionDesc     = "Position of the event."
	rawBodyDesc      = "With `Content-Type: application/json` the body is the JSON request: `data` is the event's payload, a JSON value (`{\"data\":{\"text\":\"hi\"}}`, stored with format JSON) or a string (text), or base64 with `\"format\":\"bytes\"`. " +
		"With any other Content-Type, or none, the raw body is the event data and the Content-Type says its format: " +
		"text/* (UTF-8) and application/x-www-form-urlencoded are text, a JSON media type such as application/vnd.example+json is JSON " +
		"(checked to be valid), anything else (application/octet-stream, image/png, ...) or none is bytes."
	idempotencyDesc = "Dedupes retried publishes per channel: a publish with a key already used on the channel, with the same type and data, returns the first event (200, duplicate: true) and appends nothing; the key reused with another type or data is refused (409 already_exists): use a new key for a new event. Up to 128 visible ASCII characters (`!` to `~`): no spaces or control characters."
	waitDesc        = "Long-poll: when nothing is there yet, hold the request up to this long (0 to 60s) for the first event. A Go duration (`30s`, `1m`, `500ms`) or seconds (`30`, `1.5`)."
	emptyIsUnset    = " An empty value is the same as leaving the parameter out."
)

func typeOf(m proto.Message) protoreflect.MessageType { return m.ProtoReflect().Type() }

// rpc adapts an App method (one per RPC) to a route's call.
func rpc[Req, Resp proto.Message](f func(*services.App, context.Context, Req) (Resp, error)) func(context.Context, *Gateway, proto.Message) (proto.Message, error) {
	return func(ctx context.Context, g *Gateway, m proto.Message) (proto.Message, error) {
		resp, err := f(g.app, ctx, m.(Req))
		if err != nil {
			return nil, err
		}
		return resp, nil
	}
}

func eventPath(channel string) string {
	return "/v1/channels/" + url.PathEscape(channel) + "/events"
}

// The filter parameters of long-poll (and, with the same words, SSE).
const (
	filterTypeDesc = "Only events of these types (up to 16): exact (`chat.message`) or a prefix ending in `.*` (`chat.*`); `message` also matches events without a type. Repeat the parameter or separate types with commas."
	filterTagDesc  = "Only events carrying all these tags (up to 8), written `key:value` (`tag=room:42`); repeat the parameter or separate them with commas."
)

// restRoutes is the REST API.
var restRoutes = []*route{
	{
		method: http.MethodPost, path: "/v1/channels/{channel}/events", op: "Publish", tag: tagEvents,
		summary: "Publish an event",
		description: "Appends one event to the channel and returns it with its position once committed (201), " +
			"or the earlier event when the idempotency key was used before with the same type and data (200, `duplicate: true`; " +
			"409 when it was used for another event). " +
			"Publishing to a channel that does not exist creates it, unless the server runs with auto-create off (then 404).\n\n" +
			rawBodyDesc + " The type then comes from `?type=` and the idempotency key from the `Idempotency-Key` header " +
			"(both may also be used with a JSON body; a value given twice must agree). A `channel` in a JSON body must equal the path's.",
		req:        typeOf(&heraldv1.PublishRequest{}),
		resp:       typeOf(&heraldv1.PublishResponse{}),
		pathParams: []param{{name: "channel", field: "channel", desc: channelParamDesc}},
		query: []param{{name: "type", field: "type",
			desc: "Event type (0 to 64 characters from `[A-Za-z0-9_.:/-]`; empty means \"message\")."}},
		headers:  []param{{name: "Idempotency-Key", field: "idempotency_key", desc: idempotencyDesc}},
		body:     rawOrJSON,
		rawField: "data",
		success: []success{
			{http.StatusCreated, "Published: a new event was appended."},
			{http.StatusOK, "Duplicate: the idempotency key matched an earlier publish, which is returned; nothing was appended."},
		},
		statusOf: func(m proto.Message) int {
			if m.(*heraldv1.PublishResponse).GetDuplicate() {
				return http.StatusOK
			}
			return http.StatusCreated
		},
		locationOf: func(m proto.Message) string {
			ev := m.(*heraldv1.PublishResponse).GetEvent()
			return eventPath(ev.GetChannel()) + "/" + strconv.FormatInt(ev.GetPosition(), 10)
		},
		errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge},
		call:   rpc((*services.App).Publish),
	},
	{
		method: http.MethodGet, path: "/v1/channels/{channel}/events", op: "ListEvents", tag: tagHistory,
		summary: "List a channel's events (history page or long-poll)",
		description: "Pages through the channel's log by position. Pass `nextCursor` as `cursor` (same direction) for the next page; " +
			"`hasMore` says whether more events exist now. With `wait` (forward direction and log view only) an empty page is held " +
			"until the first event after the cursor arrives or the wait ends (then the page is empty and `nextCursor` equals `cursor`).",
		req:        typeOf(&heraldv1.ListEventsRequest{}),
		resp:       typeOf(&heraldv1.ListEventsResponse{}),
		pathParams: []param{{name: "channel", field: "channel", desc: channelParamDesc}},
		query: []param{
			{name: "cursor", field: "cursor", desc: "Exclusive position to start from; 0 (the default) starts at the oldest (forward) or newest (backward) event."},
			{name: "direction", field: "direction", desc: "`forward` (oldest first, the default) or `backward` (newest first). Case-insensitive; `DIRECTION_FORWARD` also works."},
			{name: "limit", field: "limit", desc: "Page size. 0 (the default) means the server's default page size (100 unless `--page-size` says otherwise); a limit above the server's maximum (`--max-page-size`, 1000 by default) is lowered to it, not refused: `hasMore` then says whether more events exist."},
			{name: "view", field: "view", desc: "`log` (every entry, including UPDATED and DELETED entries; the default) or `current` (published events not deleted, with their current data)."},
			{name: "wait", field: "wait", desc: waitDesc},
			{name: "from_seq", field: "from_seq", desc: "Start at the channel's entry with this seq (`seq` of an event: 1, 2, 3, ... per channel), or the first after it still retained, instead of after `cursor`. Forward direction only, without `cursor` and `wait` (400 otherwise); page on with `nextCursor`."},
		},
		errors: []int{http.StatusNotFound},
		call:   rpc((*services.App).ListEvents),
	},
	{
		method: http.MethodGet, path: "/v1/channels/{channel}/events/{position}", op: "GetEvent", tag: tagHistory,
		summary:     "Get one event",
		description: "Returns the event at the position (404 when absent or removed by retention).",
		req:         typeOf(&heraldv1.GetEventRequest{}),
		resp:        typeOf(&heraldv1.GetEventResponse{}),
		pathParams: []param{
			{name: "channel", field: "channel", desc: channelParamDesc},
			{name: "position", field: "position", desc: positionDesc},
		},
		errors: []int{http.StatusNotFound},
		call:   rpc((*services.App).GetEvent),
	},
	{
		method: http.MethodPatch, path: "/v1/channels/{channel}/events/{position}", op: "UpdateEvent", tag: tagHistory,
		summary: "Replace an event's data",
		description: "Replaces the data of a published event and appends an UPDATED entry that subscribers receive. " +
			"400 (failed_precondition) when the event was deleted or is itself an edit entry.\n\n" + rawBodyDesc,
		req:  typeOf(&heraldv1.UpdateEventRequest{}),
		resp: typeOf(&heraldv1.UpdateEventResponse{}),
		pathParams: []param{
			{name: "channel", field: "channel", desc: channelParamDesc},
			{name: "position", field: "position", desc: positionDesc},
		},
		body:     rawOrJSON,
		rawField: "data",
		errors:   []int{http.StatusNotFound, http.StatusRequestEntityTooLarge},
		call:     rpc((*services.App).UpdateEvent),
	},
	{
		method: http.MethodDelete, path: "/v1/channels/{channel}/events/{position}", op: "DeleteEvent", tag: tagHistory,
		summary: "Delete an event",
		description: "Erases a published event's data and appends a DELETED entry that subscribers receive. " +
			"400 (failed_precondition) when it was already deleted.",
		req:  typeOf(&heraldv1.DeleteEventRequest{}),
		resp: typeOf(&heraldv1.DeleteEventResponse{}),
		pathParams: []param{
			{name: "channel", field: "channel", desc: channelParamDesc},
			{name: "position", field: "position", desc: positionDesc},
		},
		errors: []int{http.StatusNotFound},
		call:   rpc((*services.App).DeleteEvent),
	},
	{
		method: http.MethodGet, path: "/v1/channels", op: "ListChannels", tag: tagChannels,
		summary:     "List channels",
		description: "Lists channels by name, a page at a time. Pass `nextPageToken` as `pageToken` for the next page; it is empty on the last page.",
		req:         typeOf(&heraldv1.ListChannelsRequest{}),
		resp:        typeOf(&heraldv1.ListChannelsResponse{}),
		query: []param{
			{name: "pageSize", field: "page_size", desc: "Page size. 0 (the default) means the server's default page size (100 unless `--page-size` says otherwise); a size above the server's maximum (`--max-page-size`, 1000 by default) is lowered to it, not refused."},
			{name: "pageToken", field: "page_token", desc: "`nextPageToken` of the previous page (at most 128 characters, no NUL)."},
			{name: "prefix", field: "prefix", desc: "Only channels whose name starts with this (at most 128 characters, no NUL)."},
		},
		call: rpc((*services.App).ListChannels),
	},
	{
		method: http.MethodPost, path: "/v1/channels", op: "CreateChannel", tag: tagChannels,
		summary:     "Create a channel",
		description: "Creates a channel; unset settings take the defaults. 409 (already_exists) when it exists.",
		req:         typeOf(&heraldv1.CreateChannelRequest{}),
		resp:        typeOf(&heraldv1.CreateChannelResponse{}),
		body:        jsonBody,
		success:     []success{{http.StatusCreated, "Created."}},
		locationOf: func(m proto.Message) string {
			return "/v1/channels/" + url.PathEscape(m.(*heraldv1.CreateChannelResponse).GetChannel().GetName())
		},
		errors: []int{http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType},
		call:   rpc((*services.App).CreateChannel),
	},
	{
		method: http.MethodGet, path: "/v1/channels/{channel}", op: "GetChannel", tag: tagChannels,
		summary:     "Get a channel",
		description: "Returns the channel with its effective settings.",
		req:         typeOf(&heraldv1.GetChannelRequest{}),
		resp:        typeOf(&heraldv1.GetChannelResponse{}),
		pathParams:  []param{{name: "channel", field: "name", desc: channelParamDesc}},
		errors:      []int{http.StatusNotFound},
		call:        rpc((*services.App).GetChannel),
	},
	{
		method: http.MethodPatch, path: "/v1/channels/{channel}", op: "UpdateChannel", tag: tagChannels,
		summary: "Change a channel's settings",
		description: "Changes the settings set in the body (`{\"settings\":{\"maxEvents\":\"1000\"}}`); the others stay. " +
			"A `name` in the body must equal the path's.",
		req:        typeOf(&heraldv1.UpdateChannelRequest{}),
		resp:       typeOf(&heraldv1.UpdateChannelResponse{}),
		pathParams: []param{{name: "channel", field: "name", desc: channelParamDesc}},
		body:       jsonBody,
		errors:     []int{http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType},
		call:       rpc((*services.App).UpdateChannel),
	},
	{
		method: http.MethodDelete, path: "/v1/channels/{channel}", op: "DeleteChannel", tag: tagChannels,
		summary: "Delete a channel",
		description: "Deletes the channel and all its events. Subscribers that resume from a cursor before the deletion " +
			"get history_truncated.",
		req:        typeOf(&heraldv1.DeleteChannelRequest{}),
		resp:       typeOf(&heraldv1.DeleteChannelResponse{}),
		pathParams: []param{{name: "channel", field: "name", desc: channelParamDesc}},
		errors:     []int{http.StatusNotFound},
		call:       rpc((*services.App).DeleteChannel),
	},
	{
		method: http.MethodGet, path: "/v1/events", op: "Poll", tag: tagEvents,
		summary: "Long-poll one or more channels",
		description: "Returns the events of the channels after the cursor at once when there are some, otherwise waits up to `wait` " +
			"for the first one. Pass the returned `cursor` to the next poll: each event arrives exactly once and in position order " +
			"(as with a subscription), and `subscribed.historyTruncated` reports events removed by retention. " +
			"`hasMore` means more were ready than `limit` allowed: poll again at once.",
		req:  typeOf(&heraldv1.PollRequest{}),
		resp: typeOf(&heraldv1.PollResponse{}),
		query: []param{
			{name: "channel", field: "channels", desc: "Channels to poll, 1 to the server's `--max-channels-per-request` (32 by default; more: 400 invalid_argument): repeat the parameter (`channel=a&channel=b`) or separate names with commas (`channel=a,b`)."},
			{name: "cursor", field: "cursor", desc: "Exclusive position to poll from (0: every retained event). Left out: only events published after the request arrives; continue with the returned cursor." + emptyIsUnset},
			{name: "wait", field: "wait", desc: waitDesc},
			{name: "limit", field: "limit", desc: "Most events to return. 0 (the default) means the server's default page size (100 unless `--page-size` says otherwise); a limit above the server's maximum (`--max-page-size`, 1000 by default) is lowered to it, not refused: `hasMore` then says whether more are ready."},
			{name: "type", field: "filter", sub: "types", desc: filterTypeDesc},
			{name: "tag", field: "filter", sub: "tags", desc: filterTagDesc + " The returned `cursor` moves past the events the filter dropped, so a poll may answer with no event and a cursor that advanced."},
		},
		errors: []int{http.StatusNotFound},
		call:   rpc((*services.App).Poll),
	},
	{
		method: http.MethodGet, path: "/v1/openapi.json", op: "GetOpenAPI", tag: tagMeta,
		summary:     "This OpenAPI document",
		description: "The OpenAPI 3.1 description of the REST API, generated from the same table that serves it.",
		success:     []success{{http.StatusOK, "The OpenAPI document."}},
		serve:       (*Gateway).serveOpenAPI,
	},
}

// registerREST adds the REST routes, and for each of their paths a handler
// that answers other methods with 405 in the one error shape.
func (g *Gateway) registerREST(mux *http.ServeMux) {
	allowed := map[string][]string{}
	var paths []string
	for _, rt := range restRoutes {
		mux.Handle(rt.method+" "+rt.path, g.restHandler(rt))
		if _, ok := allowed[rt.path]; !ok {
			paths = append(paths, rt.path)
		}
		allowed[rt.path] = append(allowed[rt.path], rt.method)
		if rt.method == http.MethodGet {
			allowed[rt.path] = append(allowed[rt.path], http.MethodHead)
		}
	}
	// The streams are registered by Register; their other methods are
	// refused here too, in the same shape.
	for _, p := range []string{"/v1/ws", "/v1/sse"} {
		paths = append(paths, p)
		allowed[p] = []string{http.MethodGet, http.MethodHead}
	}
	for _, p := range paths {
		allow := strings.Join(allowed[p], ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeErrorStatus(w, http.StatusMethodNotAllowed, connect.NewError(connect.CodeUnimplemented,
				fmt.Errorf("method %s is not allowed here; allowed: %s", r.Method, allow)))
		})
	}
	// Anything else under /v1/ is not a route: say so in the one error
	// shape (not net/http's plain-text 404) and where the routes are.
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, connect.NewError(connect.CodeNotFound, fmt.Errorf(
			"no route for %s %s: the REST routes are described at /v1/openapi.json", r.Method, r.URL.EscapedPath())))
	})
	// Anything else under /v1/channels/ is most likely a channel name with
	// an unescaped '/'.
	mux.HandleFunc("/v1/channels/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, connect.NewError(connect.CodeNotFound, fmt.Errorf(
			"no route for %s %s: escape a '/' in a channel name as %%2F (see /v1/openapi.json)", r.Method, r.URL.EscapedPath())))
	})
}

// restHandler serves one route: decode, validate, call, encode. Bad input
// never reaches the service.
func (g *Gateway) restHandler(rt *route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.serve != nil {
			if r.URL.RawQuery != "" {
				query, err := parseQuery(r.URL.RawQuery)
				if err == nil {
					err = rt.checkQueryNames(query)
				}
				if err != nil {
					writeError(w, err)
					return
				}
			}
			rt.serve(g, w, r)
			return
		}
		in := restInput{header: r.Header, path: r.PathValue}
		var err error
		if in.query, err = parseQuery(r.URL.RawQuery); err != nil {
			writeError(w, err)
			return
		}
		if rt.body != noBody {
			limit := int64(g.app.MaxMessageBytes())
			in.body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					writeErrorStatus(w, http.StatusRequestEntityTooLarge,
						invalid(fmt.Sprintf("request body larger than the limit of %d bytes", limit)))
					return
				}
				writeError(w, invalid("reading the request body failed: "+err.Error()))
				return
			}
		}
		msg, err := rt.decode(in)
		if err != nil {
			var se *statusError
			if errors.As(err, &se) {
				writeErrorStatus(w, se.status, err)
				return
			}
			writeError(w, err)
			return
		}
		if err := services.Validate(msg); err != nil {
			writeError(w, err)
			return
		}
		resp, err := rt.call(r.Context(), g, msg)
		if err != nil {
			writeError(w, err)
			return
		}
		b, err := services.MarshalJSON(resp)
		if err != nil {
			g.cfg.Logger.Error("encode REST response", "op", rt.op, "err", err)
			writeError(w, err)
			return
		}
		status := http.StatusOK
		if len(rt.success) > 0 {
			status = rt.success[0].status
		}
		if rt.statusOf != nil {
			status = rt.statusOf(resp)
		}
		if rt.locationOf != nil && status == http.StatusCreated {
			w.Header().Set("Location", rt.locationOf(resp))
		}
		writeJSON(w, status, append(b, '\n'))
	})
}

func writeJSON(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// statusError carries an HTTP status that has no connect code of its own
// (415) along with the connect error the client sees.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// restInput is what a request message is decoded from.
type restInput struct {
	path   func(name string) string
	query  url.Values
	header http.Header
	body   []byte
}

// parseQuery parses a raw query, refusing malformed ones rather than
// dropping the pairs it cannot read.
func parseQuery(raw string) (url.Values, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, invalid("malformed query string: " + err.Error())
	}
	return q, nil
}

// decode assembles the request message of rt from in. Each field comes
// from one place; a field given in two places (the path and the body, a
// header and the body) must agree. Errors are invalid_argument and name the
// parameter or field. The result is not validated yet.
func (rt *route) decode(in restInput) (proto.Message, error) {
	msg := rt.req.New()
	fields := msg.Descriptor().Fields()
	if err := rt.decodeBody(msg, in); err != nil {
		return nil, err
	}
	for _, p := range rt.pathParams {
		fd := fields.ByName(p.field)
		v, err := parseScalar(fd, p.name, in.path(p.name))
		if err != nil {
			return nil, err
		}
		if err := setOnce(msg, fd, v, "the path"); err != nil {
			return nil, err
		}
	}
	if err := rt.checkQueryNames(in.query); err != nil {
		return nil, err
	}
	for _, p := range rt.query {
		fd := p.fieldOf(msg.Descriptor())
		var vals []string
		for _, name := range p.names(fd) {
			vals = append(vals, in.query[name]...)
		}
		if len(vals) == 0 {
			continue
		}
		target := msg
		if p.sub != "" {
			target = msg.Mutable(fields.ByName(p.field)).Message()
		}
		if err := setParam(target, fd, p.name, vals, "the query"); err != nil {
			return nil, err
		}
	}
	for _, p := range rt.headers {
		vals := in.header.Values(p.name)
		if len(vals) == 0 {
			continue
		}
		if err := setParam(msg, fields.ByName(p.field), p.name, vals, "the "+p.name+" header"); err != nil {
			return nil, err
		}
	}
	return msg.Interface(), nil
}

// names are the spellings of a query parameter: its documented name, and
// the field's proto and JSON names, as protojson accepts both.
func (p param) names(fd protoreflect.FieldDescriptor) []string {
	names := []string{p.name}
	if p.sub != "" {
		return names
	}
	for _, n := range []string{string(fd.Name()), fd.JSONName()} {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// checkQueryNames refuses parameters the route does not take: a typo must
// not be silently ignored.
func (rt *route) checkQueryNames(q url.Values) error {
	var known []string
	var unknown []string
	if rt.req != nil {
		for _, p := range rt.query {
			known = append(known, p.names(p.fieldOf(rt.req.Descriptor()))...)
		}
	}
	for name := range q {
		if !slices.Contains(known, name) {
			unknown = append(unknown, strconv.Quote(name))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	msg := "unknown query parameter"
	if len(unknown) > 1 {
		msg += "s"
	}
	msg += " " + strings.Join(unknown, ", ")
	if len(rt.query) == 0 {
		return invalid(msg + "; this route takes none")
	}
	docs := make([]string, len(rt.query))
	for i, p := range rt.query {
		docs[i] = p.name
	}
	return invalid(msg + "; this route takes " + strings.Join(docs, ", "))
}

// decodeBody fills msg from the body: protojson, or the raw bytes.
func (rt *route) decodeBody(msg protoreflect.Message, in restInput) error {
	if rt.body == noBody {
		return nil
	}
	isJSON := true
	var mt string
	var params map[string]string
	if ct := in.header.Get("Content-Type"); ct != "" {
		var err error
		mt, params, err = mime.ParseMediaType(ct)
		if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
			return &statusError{http.StatusUnsupportedMediaType, invalid(fmt.Sprintf("malformed Content-Type %q", ct))}
		}
		isJSON = mt == "application/json"
		if !isJSON && rt.body == jsonBody {
			return &statusError{http.StatusUnsupportedMediaType,
				invalid(fmt.Sprintf("Content-Type %q is not supported: send application/json", mt))}
		}
	} else if rt.body == rawOrJSON {
		isJSON = false
	}
	if !isJSON {
		format, err := rawFormat(mt, params)
		if err != nil {
			return &statusError{http.StatusUnsupportedMediaType, err}
		}
		fields := msg.Descriptor().Fields()
		msg.Set(fields.ByName(rt.rawField), protoreflect.ValueOfBytes(bytes.Clone(in.body)))
		if format != heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED {
			msg.Set(fields.ByName("format"), protoreflect.ValueOfEnum(protoreflect.EnumNumber(format)))
		}
		return nil
	}
	if len(bytes.TrimSpace(in.body)) == 0 {
		return nil // an empty body is the empty message
	}
	if err := services.UnmarshalJSON(in.body, msg.Interface()); err != nil {
		return invalid("invalid JSON body: " + strings.TrimPrefix(err.Error(), "proto: "))
	}
	return nil
}

// rawFormat is the data format of a raw body: its Content-Type says.
// Text (text/*, and form-encoded text such as curl -d sends) is TEXT and
// must be UTF-8; a JSON media type other than application/json itself
// (application/vnd.example+json, ...) is JSON; anything else, or no
// Content-Type, is opaque bytes. application/json is the JSON request.
func rawFormat(mt string, params map[string]string) (heraldv1.DataFormat, error) {
	switch {
	case mt == "":
		return heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED, nil
	case strings.HasPrefix(mt, "text/"), mt == "application/x-www-form-urlencoded":
		if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "utf8" && cs != "us-ascii" {
			return 0, invalid(fmt.Sprintf("charset %q is not supported: send text as UTF-8 (charset=utf-8), or the raw bytes as application/octet-stream", params["charset"]))
		}
		return heraldv1.DataFormat_DATA_FORMAT_TEXT, nil
	case strings.HasSuffix(mt, "+json"):
		return heraldv1.DataFormat_DATA_FORMAT_JSON, nil
	}
	return heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED, nil
}

// setParam sets fd from the values of one parameter: several (or
// comma-separated) values for a repeated field, exactly one otherwise. An
// empty value of a singular parameter is the same as none.
func setParam(msg protoreflect.Message, fd protoreflect.FieldDescriptor, name string, vals []string, source string) error {
	if fd.IsMap() {
		// map<string, string> written key:value (tag=room:42,lang:en).
		if msg.Has(fd) {
			return invalid(fmt.Sprintf("%s: given both in the body and in %s", name, source))
		}
		tags, err := parseTags(vals)
		if err != nil {
			return err
		}
		m := msg.Mutable(fd).Map()
		for k, v := range tags {
			m.Set(protoreflect.ValueOfString(k).MapKey(), protoreflect.ValueOfString(v))
		}
		return nil
	}
	if fd.IsList() {
		if msg.Has(fd) {
			return invalid(fmt.Sprintf("%s: given both in the body and in %s", name, source))
		}
		list := msg.Mutable(fd).List()
		for _, v := range vals {
			for part := range strings.SplitSeq(v, ",") {
				pv, err := parseScalar(fd, name, part)
				if err != nil {
					return err
				}
				list.Append(pv)
			}
		}
		return nil
	}
	if len(vals) > 1 {
		return invalid(fmt.Sprintf("%s: given %d times; give it once", name, len(vals)))
	}
	if vals[0] == "" {
		return nil
	}
	v, err := parseScalar(fd, name, vals[0])
	if err != nil {
		return err
	}
	return setOnce(msg, fd, v, source)
}

// setOnce sets fd to v unless the body already set it to something else.
func setOnce(msg protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value, source string) error {
	if msg.Has(fd) && !msg.Get(fd).Equal(v) {
		return invalid(fmt.Sprintf("%s: the body says %s but %s says %s",
			fd.JSONName(), describe(msg.Get(fd)), source, describe(v)))
	}
	msg.Set(fd, v)
	return nil
}

func describe(v protoreflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		return strconv.Quote(x)
	case []byte:
		return fmt.Sprintf("%d bytes", len(x))
	case protoreflect.Message:
		b, _ := services.MarshalJSON(x.Interface())
		return string(b)
	default:
		return fmt.Sprint(x)
	}
}

// parseScalar parses one path, query or header value into a value of fd
// (an element of fd when it is repeated).
func parseScalar(fd protoreflect.FieldDescriptor, name, s string) (protoreflect.Value, error) {
	bad := func(what string) (protoreflect.Value, error) {
		return protoreflect.Value{}, invalid(fmt.Sprintf("%s: %s is not %s", name, strconv.Quote(s), what))
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(s) {
			return bad("valid UTF-8")
		}
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return bad("a boolean (true or false)")
		}
		return protoreflect.ValueOfBool(b), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return bad("a 32-bit integer")
		}
		return protoreflect.ValueOfInt32(int32(n)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return bad("a 64-bit integer")
		}
		return protoreflect.ValueOfInt64(n), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return bad("an unsigned 32-bit integer")
		}
		return protoreflect.ValueOfUint32(uint32(n)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return bad("an unsigned 64-bit integer")
		}
		return protoreflect.ValueOfUint64(n), nil
	case protoreflect.EnumKind:
		if v := enumValue(fd.Enum(), s); v != nil {
			return protoreflect.ValueOfEnum(v.Number()), nil
		}
		return bad("one of " + strings.Join(enumNames(fd.Enum()), ", "))
	case protoreflect.MessageKind:
		if fd.Message().FullName() == durationName {
			d, ok := parseDuration(s)
			if !ok {
				return bad("a duration (30s, 1m, 500ms) or a number of seconds")
			}
			return protoreflect.ValueOfMessage(durationpb.New(d).ProtoReflect()), nil
		}
	}
	// Only the kinds above appear in the route table (TestRESTRouteTable).
	return protoreflect.Value{}, connect.NewError(connect.CodeInternal, fmt.Errorf("%s: unsupported parameter type %v", name, fd.Kind()))
}

const durationName protoreflect.FullName = "google.protobuf.Duration"

// parseDuration reads a Go duration ("30s", "1m30s") or plain seconds
// ("30", "1.5").
func parseDuration(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	if c := s[len(s)-1]; c >= '0' && c <= '9' {
		for _, r := range s {
			if (r < '0' || r > '9') && r != '.' {
				return 0, false // only plain decimal seconds, no sign or exponent
			}
		}
		s += "s"
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

// enumPrefix is the prefix every value name of ed shares ("DIRECTION_").
func enumPrefix(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	prefix := string(vals.Get(0).Name())
	for i := 1; i < vals.Len(); i++ {
		name := string(vals.Get(i).Name())
		for !strings.HasPrefix(name, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	return prefix[:strings.LastIndexByte(prefix, '_')+1]
}

// enumValue finds the value s names: the full name or the name without the
// enum's prefix, in any case.
func enumValue(ed protoreflect.EnumDescriptor, s string) protoreflect.EnumValueDescriptor {
	prefix := enumPrefix(ed)
	vals := ed.Values()
	for i := range vals.Len() {
		name := string(vals.Get(i).Name())
		if strings.EqualFold(s, name) || strings.EqualFold(s, strings.TrimPrefix(name, prefix)) {
			return vals.Get(i)
		}
	}
	return nil
}

// enumNames are the short lowercase names clients should use, without the
// unspecified value.
func enumNames(ed protoreflect.EnumDescriptor) []string {
	prefix := enumPrefix(ed)
	var out []string
	vals := ed.Values()
	for i := range vals.Len() {
		if vals.Get(i).Number() == 0 {
			continue
		}
		out = append(out, strings.ToLower(strings.TrimPrefix(string(vals.Get(i).Name()), prefix)))
	}
	return out
}
