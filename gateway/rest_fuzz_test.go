package gateway

import (
	"encoding/json"
	"errors"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/services"
)

// The documented rules (proto/herald/v1/event.proto), written out
// independently of protovalidate.
var (
	channelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@/=-]*$`)
	typeRE    = regexp.MustCompile(`^[A-Za-z0-9_.:/-]*$`)
	keyRE     = regexp.MustCompile(`^[\x21-\x7E]*$`)
	noNUL     = regexp.MustCompile(`^[^\x00]*$`)
)

// decodeRoutes are the routes with a request message, in table order.
func decodeRoutes() []*route {
	var out []*route
	for _, rt := range restRoutes {
		if rt.req != nil {
			out = append(out, rt)
		}
	}
	return out
}

func routeByOp(t testing.TB, op string) *route {
	for _, rt := range restRoutes {
		if rt.op == op {
			return rt
		}
	}
	t.Fatalf("no route %s", op)
	return nil
}

// decodeInput decodes a request as the handler does, minus the service
// call: query parsing, then the route's decoder. It returns the message
// only when it also passes validation.
func decodeInput(rt *route, path map[string]string, rawQuery string, header http.Header, body []byte) (proto.Message, error) {
	q, err := parseQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	if header == nil {
		header = http.Header{}
	}
	msg, err := rt.decode(restInput{path: func(n string) string { return path[n] }, query: q, header: header, body: body})
	if err != nil {
		return nil, err
	}
	return msg, services.Validate(msg)
}

// checkRefusal: a refused request is invalid_argument (415 only for a
// Content-Type a JSON-only route cannot take).
func checkRefusal(t *testing.T, rt *route, err error) {
	t.Helper()
	if code := connect.CodeOf(err); code != connect.CodeInvalidArgument {
		t.Fatalf("%s: refusal %v has code %v, want invalid_argument", rt.op, err, code)
	}
	var se *statusError
	if errors.As(err, &se) && (se.status != http.StatusUnsupportedMediaType || rt.body == noBody) {
		t.Fatalf("%s: unexpected status %d for %v", rt.op, se.status, err)
	}
}

// checkAccepted checks a request that decoded and validated: it sets only
// fields the route binds (path, query, headers; any field from a JSON
// body, the raw field from a raw one), path fields equal the path, and
// every field keeps the documented rules.
func checkAccepted(t *testing.T, rt *route, msg proto.Message, path map[string]string, raw bool, body []byte) {
	t.Helper()
	m := msg.ProtoReflect()
	allowed := map[protoreflect.Name]bool{}
	for _, p := range rt.pathParams {
		allowed[p.field] = true
		fd := m.Descriptor().Fields().ByName(p.field)
		if fd.Kind() == protoreflect.StringKind && m.Get(fd).String() != path[p.name] {
			t.Fatalf("%s: %s = %q, path says %q", rt.op, p.field, m.Get(fd).String(), path[p.name])
		}
	}
	for _, p := range append(slices.Clone(rt.query), rt.headers...) {
		allowed[p.field] = true
	}
	if rt.body == rawOrJSON && raw {
		allowed[rt.rawField] = true
		allowed["format"] = true // from the Content-Type
		if got := m.Get(m.Descriptor().Fields().ByName(rt.rawField)).Bytes(); string(got) != string(body) {
			t.Fatalf("%s: raw body of %d bytes decoded to %d bytes", rt.op, len(body), len(got))
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !allowed[fd.Name()] && !(rt.body != noBody && !raw) {
			t.Fatalf("%s: field %s set, but nothing binds it", rt.op, fd.Name())
		}
		return true
	})
	checkRules(t, msg)
	// What the services receive survives the wire unchanged.
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatalf("%s: marshal accepted request: %v", rt.op, err)
	}
	again := msg.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(b, again); err != nil || !proto.Equal(again, msg) {
		t.Fatalf("%s: accepted request does not round-trip: %v", rt.op, err)
	}
}

// checkRules restates the protovalidate rules of each request.
func checkRules(t *testing.T, msg proto.Message) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%T accepted against the rules: "+format, append([]any{msg}, args...)...)
	}
	name := func(field, s string) {
		t.Helper()
		if n := utf8.RuneCountInString(s); !utf8.ValidString(s) || n < 1 || n > 128 || !channelRE.MatchString(s) {
			fail("%s %q", field, s)
		}
	}
	text := func(field, s string, max int, re *regexp.Regexp) {
		t.Helper()
		if !utf8.ValidString(s) || utf8.RuneCountInString(s) > max || (re != nil && !re.MatchString(s)) {
			fail("%s %q", field, s)
		}
	}
	between := func(field string, v, lo, hi int64) {
		t.Helper()
		if v < lo || v > hi {
			fail("%s %d", field, v)
		}
	}
	wait := func(d interface{ AsDuration() time.Duration }, ok bool) {
		t.Helper()
		if ok && (d.AsDuration() < 0 || d.AsDuration() > time.Minute) {
			fail("wait %v", d.AsDuration())
		}
	}
	settings := func(s *heraldv1.ChannelSettings) {
		t.Helper()
		if s == nil {
			return
		}
		if s.MaxEvents != nil {
			between("max_events", *s.MaxEvents, 0, 10_000_000)
		}
		if s.MaxEventSize != nil {
			between("max_event_size", int64(*s.MaxEventSize), 1, 1<<20)
		}
		if s.MaxAge != nil && (s.MaxAge.AsDuration() < 0 || s.MaxAge.AsDuration() > 10*365*24*time.Hour) {
			fail("max_age %v", s.MaxAge.AsDuration())
		}
	}
	switch m := msg.(type) {
	case *heraldv1.PublishRequest:
		name("channel", m.Channel)
		text("type", m.Type, 64, typeRE)
		text("idempotency_key", m.IdempotencyKey, 128, keyRE)
		between("data", int64(len(m.Data)), 0, 1<<20)
	case *heraldv1.ListEventsRequest:
		name("channel", m.Channel)
		between("cursor", m.Cursor, 0, 1<<63-1)
		between("limit", int64(m.Limit), 0, math.MaxInt32)
		between("direction", int64(m.Direction), 0, 2)
		between("view", int64(m.View), 0, 2)
		wait(m.Wait, m.Wait != nil)
	case *heraldv1.GetEventRequest:
		name("channel", m.Channel)
		between("position", m.Position, 1, 1<<63-1)
	case *heraldv1.UpdateEventRequest:
		name("channel", m.Channel)
		between("position", m.Position, 1, 1<<63-1)
		between("data", int64(len(m.Data)), 0, 1<<20)
	case *heraldv1.DeleteEventRequest:
		name("channel", m.Channel)
		between("position", m.Position, 1, 1<<63-1)
	case *heraldv1.ListChannelsRequest:
		between("page_size", int64(m.PageSize), 0, math.MaxInt32)
		text("page_token", m.PageToken, 128, noNUL)
		text("prefix", m.Prefix, 128, noNUL)
	case *heraldv1.CreateChannelRequest:
		name("name", m.Name)
		settings(m.Settings)
	case *heraldv1.GetChannelRequest:
		name("name", m.Name)
	case *heraldv1.UpdateChannelRequest:
		name("name", m.Name)
		if m.Settings == nil {
			fail("no settings")
		}
		settings(m.Settings)
	case *heraldv1.DeleteChannelRequest:
		name("name", m.Name)
	case *heraldv1.PollRequest:
		between("channels", int64(len(m.Channels)), 0, 100) // none: the token's channels
		for _, c := range m.Channels {
			name("channels[]", c)
		}
		if m.Cursor != nil {
			between("cursor", *m.Cursor, 0, 1<<63-1)
		}
		between("limit", int64(m.Limit), 0, math.MaxInt32)
		wait(m.Wait, m.Wait != nil)
	default:
		t.Fatalf("no rules written for %T", msg)
	}
}

// FuzzRESTQuery decodes a query string and path values for every route.
func FuzzRESTQuery(f *testing.F) {
	routes := decodeRoutes()
	for i := range routes {
		f.Add(uint8(i), "chat:room-42", "7", "")
	}
	for _, q := range []string{
		"cursor=10&direction=backward&limit=50&view=current",
		"direction=DIRECTION_FORWARD&view=log&wait=30s",
		"wait=1.5&cursor=&limit=0",
		"wait=9999999999999999999&limit=-1",
		"direction=sideways&view=",
		"channel=a,b&channel=c&cursor=0&wait=60",
		"channels=a&channel=&cursor=-1",
		"pageSize=10&page_size=10&pageToken=x&prefix=chat%2F",
		"type=msg&idempotency_key=x",
		"limt=5",
		"a=%zz;b",
		"wait=1e3&wait=2",
		"pageToken=a%00&prefix=%00",
		"limit=1001&pageSize=2147483647",
	} {
		for i := range routes {
			f.Add(uint8(i), "a/b", "1", q)
		}
	}
	logs := logGateways(f)
	f.Fuzz(func(t *testing.T, idx uint8, channel, position, rawQuery string) {
		rt := routes[int(idx)%len(routes)]
		path := map[string]string{"channel": channel, "position": position}
		msg, err := decodeInput(rt, path, rawQuery, nil, nil)
		if err != nil {
			checkRefusal(t, rt, err)
			return
		}
		// No body and no Content-Type: raw (empty) data, or the empty JSON message.
		checkAccepted(t, rt, msg, path, rt.body == rawOrJSON, nil)
		serveOnLogs(t, logs, rt, msg)
		// Every query parameter the request carried is one the route takes.
		q, _ := url.ParseQuery(rawQuery)
		for name := range q {
			if rt.checkQueryNames(url.Values{name: nil}) != nil {
				t.Fatalf("%s: took unknown parameter %q", rt.op, name)
			}
		}
	})
}

// FuzzRESTPublish decodes publish requests: JSON or raw bodies, the type
// query parameter and the Idempotency-Key header.
func FuzzRESTPublish(f *testing.F) {
	f.Add("chat", "application/json", []byte(`{"type":"msg","data":"aGk=","idempotencyKey":"k"}`), "", "")
	f.Add("chat", "application/json; charset=utf-8", []byte(`{"channel":"chat","data":"aGk="}`), "type=msg", "k1")
	f.Add("chat", "application/json", []byte(`{"channel":"other"}`), "", "")
	f.Add("chat", "application/json", []byte(`{"type":"a"}`), "type=b", "")
	f.Add("chat", "application/json", []byte(`{"idempotency_key":"a"}`), "", "b")
	f.Add("chat", "application/json", []byte(`{"data":1}`), "", "")
	f.Add("chat", "application/json", []byte(`{"unknown":true}`), "", "")
	f.Add("chat", "application/json", []byte(`  `), "", "")
	f.Add("a/b", "text/plain", []byte("hello"), "type=note", "key")
	f.Add("a/b", "application/octet-stream", []byte{0, 0xff, 0xfe}, "", "")
	f.Add("a/b", "", []byte("no content type"), "", "")
	f.Add("a/b", "application/vnd.x+json", []byte(`{"x":1}`), "", "")
	f.Add("a/b", "application/json;;", []byte(`{}`), "", "")
	f.Add("a/b", "text/plain; charset", []byte(`x`), "tpye=x", "")
	f.Add("-bad", "text/plain", []byte("x"), "type=has space", "bad key")
	rt := routeByOp(f, "Publish")
	logs := logGateways(f)
	f.Fuzz(func(t *testing.T, channel, contentType string, body []byte, rawQuery, key string) {
		header := http.Header{}
		if contentType != "" {
			header.Set("Content-Type", contentType)
		}
		if key != "" {
			header.Set("Idempotency-Key", key)
		}
		path := map[string]string{"channel": channel}
		msg, err := decodeInput(rt, path, rawQuery, header, body)
		if err != nil {
			checkRefusal(t, rt, err)
			return
		}
		raw := !isJSONType(contentType)
		checkAccepted(t, rt, msg, path, raw, body)
		serveOnLogs(t, logs, rt, msg)
		req := msg.(*heraldv1.PublishRequest)
		q, _ := url.ParseQuery(rawQuery)
		if typ := q.Get("type"); typ != "" && req.Type != typ {
			t.Fatalf("type %q, query says %q", req.Type, typ)
		}
		if key != "" && req.IdempotencyKey != key {
			t.Fatalf("idempotency key %q, header says %q", req.IdempotencyKey, key)
		}
		if !raw && json.Valid(body) {
			// The JSON body is the request, apart from what the path,
			// query and header added.
			var fromBody heraldv1.PublishRequest
			if len(strings.TrimSpace(string(body))) > 0 {
				if err := services.UnmarshalJSON(body, &fromBody); err != nil {
					t.Fatalf("accepted a body protojson refuses: %v", err)
				}
			}
			if string(fromBody.Data) != string(req.Data) {
				t.Fatal("data differs from the body's")
			}
		}
	})
}

// isJSONType reports whether a Content-Type the decoder accepted selects
// protojson.
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return (err == nil || errors.Is(err, mime.ErrInvalidMediaParameter)) && mt == "application/json"
}

// FuzzRESTBody decodes bodies of every route that takes one.
func FuzzRESTBody(f *testing.F) {
	var routes []*route
	for _, rt := range decodeRoutes() {
		if rt.body != noBody {
			routes = append(routes, rt)
		}
	}
	for i := range routes {
		for _, b := range []string{
			`{}`, ``, `null`, `[]`, `{"data":"aGk="}`, `{"name":"c","settings":{"maxEvents":"10","maxAge":"1.5s","maxEventSize":100}}`,
			`{"settings":{"maxAge":"-1s"}}`, `{"settings":{"maxEvents":"99999999999"}}`, `{"position":"2"}`, `{"channel":"c"}`,
			`{"name":"other","settings":{}}`, `{"settings":{"max_event_size":0}}`, `{"data":"!!"}`, `{"settings":null}`,
		} {
			f.Add(uint8(i), "c", "application/json", []byte(b))
		}
		f.Add(uint8(i), "c", "text/plain", []byte("raw"))
		f.Add(uint8(i), "c", "", []byte(`{"name":"c"}`))
		f.Add(uint8(i), "c", "application/json; charset=\"", []byte(`{}`))
	}
	logs := logGateways(f)
	f.Fuzz(func(t *testing.T, idx uint8, channel, contentType string, body []byte) {
		rt := routes[int(idx)%len(routes)]
		header := http.Header{}
		if contentType != "" {
			header.Set("Content-Type", contentType)
		}
		path := map[string]string{"channel": channel, "position": "1"}
		msg, err := decodeInput(rt, path, "", header, body)
		if err != nil {
			checkRefusal(t, rt, err)
			return
		}
		raw := rt.body == rawOrJSON && !isJSONType(contentType)
		if rt.body == jsonBody && contentType != "" && !isJSONType(contentType) {
			t.Fatalf("%s: accepted Content-Type %q", rt.op, contentType)
		}
		checkAccepted(t, rt, msg, path, raw, body)
		serveOnLogs(t, logs, rt, msg)
	})
}

// TestRESTRouteTable checks the table itself: every binding names a field
// of the right kind, every path wildcard is bound, operations are unique.
func TestRESTRouteTable(t *testing.T) {
	seen := map[string]bool{}
	for _, rt := range restRoutes {
		key := rt.method + " " + rt.path
		if seen[key] || seen[rt.op] {
			t.Errorf("%s: duplicate route or operation %s", key, rt.op)
		}
		seen[key], seen[rt.op] = true, true
		if (rt.req == nil) != (rt.call == nil) || (rt.req == nil) != (rt.serve != nil) || (rt.req == nil) != (rt.resp == nil) {
			t.Errorf("%s: needs either req, resp and call, or serve", key)
		}
		if rt.summary == "" || rt.description == "" || rt.tag == "" {
			t.Errorf("%s: undocumented", key)
		}
		if rt.req == nil {
			if len(rt.pathParams)+len(rt.query)+len(rt.headers) > 0 || rt.body != noBody {
				t.Errorf("%s: bindings without a request message", key)
			}
			continue
		}
		fields := rt.req.Descriptor().Fields()
		var wild []string
		for _, seg := range strings.Split(rt.path, "/") {
			if strings.HasPrefix(seg, "{") {
				wild = append(wild, strings.Trim(seg, "{}"))
			}
		}
		var bound []string
		for _, group := range [][]param{rt.pathParams, rt.query, rt.headers} {
			for _, p := range group {
				fd := fields.ByName(p.field)
				if fd == nil {
					t.Errorf("%s: %s binds unknown field %s", key, p.name, p.field)
					continue
				}
				if p.desc == "" {
					t.Errorf("%s: %s undocumented", key, p.name)
				}
				fd = p.fieldOf(rt.req.Descriptor())
				// The decoder handles the field's kind: a sample decodes
				// or is refused as invalid_argument, never internal.
				if fd.IsMap() {
					msg := rt.req.New().Mutable(fields.ByName(p.field)).Message()
					if err := setParam(msg, fd, p.name, []string{"1"}, "the query"); connect.CodeOf(err) != connect.CodeInvalidArgument {
						t.Errorf("%s: %s: a map parameter without ':' gave %v, want invalid_argument", key, p.name, err)
					}
					continue
				}
				if _, err := parseScalar(fd, p.name, "1"); err != nil && connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Errorf("%s: %s: %v", key, p.name, err)
				}
			}
		}
		for _, p := range rt.pathParams {
			bound = append(bound, p.name)
		}
		if !slices.Equal(wild, bound) {
			t.Errorf("%s: path wildcards %v, bound %v", key, wild, bound)
		}
		if rt.body == rawOrJSON {
			if fd := fields.ByName(rt.rawField); fd == nil || fd.Kind() != protoreflect.BytesKind {
				t.Errorf("%s: raw field %s is not a bytes field", key, rt.rawField)
			}
		}
	}
}

// TestOpenAPIMatchesRoutes checks the document against the table: the
// same operations, parameters and request bodies.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	b, err := openAPIDoc()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := openAPIDoc()
	if &b[0] != &again[0] {
		t.Error("the document is generated again on each call")
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			OperationID string `json:"operationId"`
			Parameters  []struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
			RequestBody *json.RawMessage `json:"requestBody"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	n := 0
	for _, item := range doc.Paths {
		n += len(item)
	}
	if n != len(restRoutes)+len(streamEndpoints) {
		t.Errorf("%d operations documented, %d routes and %d other endpoints", n, len(restRoutes), len(streamEndpoints))
	}
	for _, rt := range restRoutes {
		op, ok := doc.Paths[rt.path][strings.ToLower(rt.method)]
		if !ok || op.OperationID != rt.op {
			t.Errorf("%s %s (%s) not documented", rt.method, rt.path, rt.op)
			continue
		}
		var want, got []string
		for _, group := range []struct {
			in     string
			params []param
		}{{"path", rt.pathParams}, {"query", rt.query}, {"header", rt.headers}} {
			for _, p := range group.params {
				want = append(want, group.in+":"+p.name)
			}
		}
		for _, p := range op.Parameters {
			got = append(got, p.In+":"+p.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: parameters %v, want %v", rt.op, got, want)
		}
		if (op.RequestBody != nil) != (rt.body != noBody) {
			t.Errorf("%s: request body documented %v, taken %v", rt.op, op.RequestBody != nil, rt.body != noBody)
		}
	}
}

// TestRESTDecode pins the parameter spellings the API promises.
func TestRESTDecode(t *testing.T) {
	list := routeByOp(t, "ListEvents")
	path := map[string]string{"channel": "a/b"}
	for _, c := range []struct {
		query string
		want  *heraldv1.ListEventsRequest
	}{
		{"", &heraldv1.ListEventsRequest{Channel: "a/b"}},
		{"direction=forward", &heraldv1.ListEventsRequest{Channel: "a/b", Direction: heraldv1.Direction_DIRECTION_FORWARD}},
		{"direction=BACKWARD", &heraldv1.ListEventsRequest{Channel: "a/b", Direction: heraldv1.Direction_DIRECTION_BACKWARD}},
		{"direction=direction_Backward", &heraldv1.ListEventsRequest{Channel: "a/b", Direction: heraldv1.Direction_DIRECTION_BACKWARD}},
		{"view=Current", &heraldv1.ListEventsRequest{Channel: "a/b", View: heraldv1.HistoryView_HISTORY_VIEW_CURRENT}},
		{"view=HISTORY_VIEW_LOG&limit=5&cursor=9", &heraldv1.ListEventsRequest{Channel: "a/b", View: heraldv1.HistoryView_HISTORY_VIEW_LOG, Limit: 5, Cursor: 9}},
	} {
		msg, err := decodeInput(list, path, c.query, nil, nil)
		if err != nil || !proto.Equal(msg, c.want) {
			t.Errorf("%q: got %v, %v; want %v", c.query, msg, err, c.want)
		}
	}
	for q, want := range map[string]time.Duration{
		"wait=30s": 30 * time.Second, "wait=30": 30 * time.Second, "wait=1.5": 1500 * time.Millisecond,
		"wait=500ms": 500 * time.Millisecond, "wait=1m": time.Minute, "wait=0": 0,
	} {
		msg, err := decodeInput(list, path, q, nil, nil)
		if err != nil || msg.(*heraldv1.ListEventsRequest).Wait.AsDuration() != want {
			t.Errorf("%q: got %v, %v; want %v", q, msg, err, want)
		}
	}
	for _, q := range []string{"wait=-5", "wait=1e3", "wait=+5", "wait=5x", "wait=.", "wait=1h", "direction=up", "direction=1", "limit=1.0", "cursor=0x10", "x=1"} {
		if _, err := decodeInput(list, path, q, nil, nil); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%q: err %v, want invalid_argument", q, err)
		}
	}

	poll := routeByOp(t, "Poll")
	for _, q := range []string{"channel=a&channel=b,c", "channel=a,b,c", "channels=a,b&channel=c"} {
		msg, err := decodeInput(poll, nil, q, nil, nil)
		if err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		got := slices.Sorted(slices.Values(msg.(*heraldv1.PollRequest).Channels))
		if !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("%q: channels %v", q, got)
		}
	}
	for q, want := range map[string]*int64{"channel=a": nil, "channel=a&cursor=": nil, "channel=a&cursor=0": new(int64)} {
		msg, err := decodeInput(poll, nil, q, nil, nil)
		if err != nil || (msg.(*heraldv1.PollRequest).Cursor == nil) != (want == nil) {
			t.Errorf("%q: got %v, %v", q, msg, err)
		}
	}

	pub := routeByOp(t, "Publish")
	pp := map[string]string{"channel": "c"}
	h := http.Header{"Content-Type": {"text/plain"}, "Idempotency-Key": {"k"}}
	msg, err := decodeInput(pub, pp, "type=t", h, []byte("raw"))
	if want := (&heraldv1.PublishRequest{Channel: "c", Type: "t", Data: []byte("raw"), IdempotencyKey: "k", Format: heraldv1.DataFormat_DATA_FORMAT_TEXT}); err != nil || !proto.Equal(msg, want) {
		t.Errorf("raw publish: %v, %v", msg, err)
	}
	h = http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k"}}
	msg, err = decodeInput(pub, pp, "", h, []byte(`{"channel":"c","type":"t","data":"raw","idempotencyKey":"k"}`))
	if want := (&heraldv1.PublishRequest{Channel: "c", Type: "t", Data: []byte("raw"), IdempotencyKey: "k", Format: heraldv1.DataFormat_DATA_FORMAT_TEXT}); err != nil || !proto.Equal(msg, want) {
		t.Errorf("JSON publish: %v, %v", msg, err)
	}
	// The data's format from the raw body's Content-Type.
	for ct, want := range map[string]heraldv1.DataFormat{
		"text/plain; charset=utf-8":         heraldv1.DataFormat_DATA_FORMAT_TEXT,
		"application/x-www-form-urlencoded": heraldv1.DataFormat_DATA_FORMAT_TEXT,
		"application/vnd.example+json":      heraldv1.DataFormat_DATA_FORMAT_JSON,
		"application/octet-stream":          heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED,
		"image/png":                         heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED,
	} {
		msg, err := decodeInput(pub, pp, "", http.Header{"Content-Type": {ct}}, []byte(`{"a":1}`))
		if err != nil || msg.(*heraldv1.PublishRequest).Format != want {
			t.Errorf("raw body as %s: %v, %v; want format %v", ct, msg, err, want)
		}
	}
	if _, err := decodeInput(pub, pp, "", http.Header{"Content-Type": {"text/plain; charset=latin1"}}, []byte("x")); err == nil {
		t.Error("a latin1 text body was accepted")
	}
	for _, c := range []struct {
		query, key, body string
	}{
		{"", "", `{"channel":"d"}`}, {"type=u", "", `{"type":"t"}`}, {"", "other", `{"idempotencyKey":"k"}`},
	} {
		h := http.Header{"Content-Type": {"application/json"}}
		if c.key != "" {
			h.Set("Idempotency-Key", c.key)
		}
		if _, err := decodeInput(pub, pp, c.query, h, []byte(c.body)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("conflict %+v: err %v, want invalid_argument", c, err)
		}
	}
	h = http.Header{"Idempotency-Key": {"a", "b"}}
	if _, err := decodeInput(pub, pp, "", h, nil); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("two idempotency keys: err %v", err)
	}
	create := routeByOp(t, "CreateChannel")
	_, err = decodeInput(create, nil, "", http.Header{"Content-Type": {"text/plain"}}, []byte(`{"name":"x"}`))
	var se *statusError
	if !errors.As(err, &se) || se.status != http.StatusUnsupportedMediaType || connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("text/plain create: %v", err)
	}
}
