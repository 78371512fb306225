package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"connectrpc.com/connect"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/internal/wire"
)

// restResponse is one REST answer, read whole.
type restResponse struct {
	status int
	header http.Header
	body   []byte
}

// restCall sends one REST request and checks what every response shares:
// JSON and no caching. Extra headers come as name, value pairs.
func restCall(t *testing.T, method, url, contentType string, body []byte, headers ...string) restResponse {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json (status %d, body %s)", method, url, ct, resp.StatusCode, b)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("%s %s: Cache-Control %q, want no-store", method, url, cc)
	}
	return restResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// ok checks the status and decodes the body into msg (unknown fields fail:
// the JSON must be exactly the message's protojson).
func (r restResponse) ok(t *testing.T, status int, msg proto.Message) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if msg != nil {
		if err := wire.UnmarshalJSON(r.body, msg, false); err != nil {
			t.Fatalf("decode %T from %s: %v", msg, r.body, err)
		}
	}
}

// fails checks an error response: status, code and words of the message.
func (r restResponse) fails(t *testing.T, status int, code string, words ...string) {
	t.Helper()
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	if r.status != status || e.Code != code {
		t.Fatalf("got %d %s (%q), want %d %s", r.status, e.Code, e.Message, status, code)
	}
	for _, w := range words {
		if !strings.Contains(e.Message, w) {
			t.Fatalf("error message %q does not mention %q", e.Message, w)
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// restEvents is the events URL of a channel, its name escaped as one
// path segment ('/' as %2F).
func restEvents(base, ch string) string {
	return base + "/v1/channels/" + url.PathEscape(ch) + "/events"
}

func restPublish(t *testing.T, base, ch, data string) *heraldv1.Event {
	t.Helper()
	var resp heraldv1.PublishResponse
	restCall(t, "POST", restEvents(base, ch), "text/plain", []byte(data)).ok(t, http.StatusCreated, &resp)
	return resp.Event
}

func restList(t *testing.T, base, ch, query string) *heraldv1.ListEventsResponse {
	t.Helper()
	var resp heraldv1.ListEventsResponse
	restCall(t, "GET", restEvents(base, ch)+"?"+query, "", nil).ok(t, http.StatusOK, &resp)
	return &resp
}

// TestREST runs the REST API over both backends with a real server and
// net/http.
func TestREST(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			in := b.start(t)
			t.Run("PublishJSON", func(t *testing.T) { testRESTPublishJSON(t, in) })
			t.Run("PublishRaw", func(t *testing.T) { testRESTPublishRaw(t, in) })
			t.Run("Idempotent", func(t *testing.T) { testRESTIdempotent(t, in) })
			t.Run("Pagination", func(t *testing.T) { testRESTPagination(t, in) })
			t.Run("GetUpdateDelete", func(t *testing.T) { testRESTEdit(t, in) })
			t.Run("Channels", func(t *testing.T) { testRESTChannels(t, in) })
			t.Run("Errors", func(t *testing.T) { testRESTErrors(t, in) })
			t.Run("SlashInChannelNames", func(t *testing.T) { testRESTSlash(t, in) })
			t.Run("LongPollListEvents", func(t *testing.T) { testRESTLongPoll(t, in) })
			t.Run("PollManyChannels", func(t *testing.T) { testRESTPoll(t, in) })
			t.Run("OpenAPI", func(t *testing.T) { testOpenAPI(t, in) })
		})
	}
}

func testRESTPublishJSON(t *testing.T, in *instance) {
	ch := "rest-json"
	body := `{"type":"msg","data":"hello","idempotencyKey":"k"}` // a string is text
	r := restCall(t, "POST", restEvents(in.base, ch), "application/json", []byte(body))
	var pub heraldv1.PublishResponse
	r.ok(t, http.StatusCreated, &pub)
	ev := pub.Event
	if pub.Duplicate || ev.Channel != ch || ev.Type != "msg" || string(ev.Data) != "hello" || ev.IdempotencyKey != "k" ||
		ev.Position <= 0 || ev.Kind != heraldv1.EventKind_EVENT_KIND_PUBLISHED || ev.CreateTime == nil {
		t.Fatalf("published %v", &pub)
	}
	loc := r.header.Get("Location")
	if want := "/v1/channels/rest-json/events/" + strconv.FormatInt(ev.Position, 10); loc != want {
		t.Fatalf("Location %q, want %q", loc, want)
	}
	var got heraldv1.GetEventResponse
	restCall(t, "GET", in.base+loc, "", nil).ok(t, http.StatusOK, &got)
	if !proto.Equal(got.Event, ev) {
		t.Fatalf("GET Location = %v, want %v", got.Event, ev)
	}
	// A channel in the body may repeat the path's; charset parameters are fine.
	body = fmt.Sprintf(`{"channel":%q,"data":"again"}`, ch)
	restCall(t, "POST", restEvents(in.base, ch), "application/json; charset=utf-8", []byte(body)).ok(t, http.StatusCreated, &pub)
	if string(pub.Event.Data) != "again" || pub.Event.Type != "" || pub.Event.Format != heraldv1.DataFormat_DATA_FORMAT_TEXT {
		t.Fatalf("second publish %v", pub.Event)
	}
	// A JSON value is published as JSON, and every JSON answer carries it
	// as that value, not base64.
	r = restCall(t, "POST", restEvents(in.base, ch), "application/json", []byte(`{"data":{"text":"hi","n":[1, 2]}}`))
	r.ok(t, http.StatusCreated, &pub)
	if !strings.Contains(string(r.body), `"data":{"text":"hi","n":[1,2]},"kind"`) ||
		string(pub.Event.Data) != `{"text":"hi","n":[1,2]}` || pub.Event.Format != heraldv1.DataFormat_DATA_FORMAT_JSON {
		t.Fatalf("JSON publish answered %s", r.body)
	}
	list := restCall(t, "GET", restEvents(in.base, ch)+"?direction=backward&limit=1", "", nil)
	if !strings.Contains(string(list.body), `"data":{"text":"hi","n":[1,2]}`) {
		t.Fatalf("history shows %s", list.body)
	}
}

func testRESTPublishRaw(t *testing.T, in *instance) {
	ch := "rest-raw"
	var pub heraldv1.PublishResponse
	restCall(t, "POST", restEvents(in.base, ch)+"?type=note", "text/plain; charset=utf-8", []byte("plain text"),
		"Idempotency-Key", "raw-1").ok(t, http.StatusCreated, &pub)
	if e := pub.Event; string(e.Data) != "plain text" || e.Type != "note" || e.IdempotencyKey != "raw-1" || e.Channel != ch {
		t.Fatalf("raw text publish %v", e)
	}
	binary := []byte{0, 0xff, '{', 0x80, '\n'}
	restCall(t, "POST", restEvents(in.base, ch), "application/octet-stream", binary).ok(t, http.StatusCreated, &pub)
	if !bytes.Equal(pub.Event.Data, binary) || pub.Event.Type != "" {
		t.Fatalf("binary publish %v", pub.Event)
	}
	// JSON sent as something other than application/json is data, not a request.
	doc := []byte(`{"type":"not-a-field-here"}`)
	restCall(t, "POST", restEvents(in.base, ch), "application/vnd.example+json", doc).ok(t, http.StatusCreated, &pub)
	if !bytes.Equal(pub.Event.Data, doc) || pub.Event.Type != "" {
		t.Fatalf("vendor JSON publish %v", pub.Event)
	}
	// No Content-Type at all: raw as well, and an empty body is an empty event.
	restCall(t, "POST", restEvents(in.base, ch), "", []byte{}).ok(t, http.StatusCreated, &pub)
	if len(pub.Event.Data) != 0 {
		t.Fatalf("empty publish %v", pub.Event)
	}
	page := restList(t, in.base, ch, "")
	if len(page.Events) != 4 || string(page.Events[0].Data) != "plain text" || !bytes.Equal(page.Events[1].Data, binary) {
		t.Fatalf("history %v", page.Events)
	}
}

func testRESTIdempotent(t *testing.T, in *instance) {
	ch := "rest-idem"
	body := []byte(`{"data":"x","idempotencyKey":"once"}`)
	var first, second heraldv1.PublishResponse
	r := restCall(t, "POST", restEvents(in.base, ch), "application/json", body)
	r.ok(t, http.StatusCreated, &first)
	r = restCall(t, "POST", restEvents(in.base, ch), "application/json", body)
	r.ok(t, http.StatusOK, &second)
	if !second.Duplicate || second.Event.Position != first.Event.Position || r.header.Get("Location") != "" {
		t.Fatalf("retry = %v (Location %q), want duplicate of %d", &second, r.header.Get("Location"), first.Event.Position)
	}
	// The same key through the header and a raw body is the same publish.
	restCall(t, "POST", restEvents(in.base, ch), "text/plain", []byte("x"), "Idempotency-Key", "once").ok(t, http.StatusOK, &second)
	if !second.Duplicate || second.Event.Position != first.Event.Position {
		t.Fatalf("raw retry = %v", &second)
	}
	if n := len(restList(t, in.base, ch, "").Events); n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
}

func testRESTPagination(t *testing.T, in *instance) {
	ch := "rest-pages"
	var pos []int64
	for i := range 5 {
		pos = append(pos, restPublish(t, in.base, ch, strconv.Itoa(i)).Position)
	}
	walk := func(query string, want [][]int64) {
		t.Helper()
		cursor := int64(0)
		for i, w := range want {
			page := restList(t, in.base, ch, fmt.Sprintf("%s&cursor=%d", query, cursor))
			equalPositions(t, positions(page.Events), w)
			if more := i < len(want)-1; page.HasMore != more {
				t.Fatalf("%s page %d: hasMore %v, want %v", query, i, page.HasMore, more)
			}
			cursor = page.NextCursor
		}
		// Past the end: empty, and the cursor stays.
		page := restList(t, in.base, ch, fmt.Sprintf("%s&cursor=%d", query, cursor))
		if len(page.Events) != 0 || page.HasMore || page.NextCursor != cursor {
			t.Fatalf("%s after the end: %v", query, page)
		}
	}
	walk("limit=2", [][]int64{pos[0:2], pos[2:4], pos[4:5]})
	walk("limit=2&direction=forward", [][]int64{pos[0:2], pos[2:4], pos[4:5]})
	walk("limit=2&direction=backward", [][]int64{{pos[4], pos[3]}, {pos[2], pos[1]}, {pos[0]}})
	walk("limit=2&direction=DIRECTION_BACKWARD", [][]int64{{pos[4], pos[3]}, {pos[2], pos[1]}, {pos[0]}})

	// Edit two: the log view shows the edit entries, the current view the
	// chat as it stands.
	var up heraldv1.UpdateEventResponse
	restCall(t, "PATCH", fmt.Sprintf("%s/%d", restEvents(in.base, ch), pos[1]), "text/plain", []byte("one!")).ok(t, http.StatusOK, &up)
	var del heraldv1.DeleteEventResponse
	restCall(t, "DELETE", fmt.Sprintf("%s/%d", restEvents(in.base, ch), pos[3]), "", nil).ok(t, http.StatusOK, &del)
	log := restList(t, in.base, ch, "view=log")
	equalPositions(t, positions(log.Events), append(slices.Clone(pos), up.Entry.Position, del.Entry.Position))
	cur := restList(t, in.base, ch, "view=Current&direction=backward&limit=3")
	equalPositions(t, positions(cur.Events), []int64{pos[4], pos[2], pos[1]})
	if !cur.HasMore || string(cur.Events[2].Data) != "one!" {
		t.Fatalf("current view %v", cur)
	}
	cur = restList(t, in.base, ch, fmt.Sprintf("view=HISTORY_VIEW_CURRENT&direction=backward&cursor=%d", cur.NextCursor))
	equalPositions(t, positions(cur.Events), []int64{pos[0]})
}

func testRESTEdit(t *testing.T, in *instance) {
	ch := "rest-edit"
	ev := restPublish(t, in.base, ch, "helo")
	at := fmt.Sprintf("%s/%d", restEvents(in.base, ch), ev.Position)

	var got heraldv1.GetEventResponse
	restCall(t, "GET", at, "", nil).ok(t, http.StatusOK, &got)
	if string(got.Event.Data) != "helo" {
		t.Fatalf("get %v", got.Event)
	}
	var up heraldv1.UpdateEventResponse
	restCall(t, "PATCH", at, "application/json", []byte(`{"data":"aGVsbG8=","format":"bytes"}`)).ok(t, http.StatusOK, &up)
	if string(up.Event.Data) != "hello" || up.Event.UpdateTime == nil ||
		up.Entry.Kind != heraldv1.EventKind_EVENT_KIND_UPDATED || up.Entry.TargetPosition != ev.Position {
		t.Fatalf("update JSON %v", &up)
	}
	restCall(t, "PATCH", at, "application/octet-stream", []byte("hello, raw")).ok(t, http.StatusOK, &up)
	if string(up.Event.Data) != "hello, raw" {
		t.Fatalf("update raw %v", &up)
	}
	restCall(t, "GET", at, "", nil).ok(t, http.StatusOK, &got)
	if string(got.Event.Data) != "hello, raw" {
		t.Fatalf("get after update %v", got.Event)
	}
	var del heraldv1.DeleteEventResponse
	restCall(t, "DELETE", at, "", nil).ok(t, http.StatusOK, &del)
	if del.Entry.Kind != heraldv1.EventKind_EVENT_KIND_DELETED || del.Entry.TargetPosition != ev.Position {
		t.Fatalf("delete %v", &del)
	}
	restCall(t, "GET", at, "", nil).ok(t, http.StatusOK, &got)
	if !got.Event.Deleted || len(got.Event.Data) != 0 {
		t.Fatalf("get after delete %v", got.Event)
	}
	restCall(t, "PATCH", at, "text/plain", []byte("x")).fails(t, http.StatusBadRequest, "failed_precondition")
	restCall(t, "DELETE", at, "", nil).fails(t, http.StatusBadRequest, "failed_precondition")
	missing := fmt.Sprintf("%s/%d", restEvents(in.base, ch), del.Entry.Position+1000)
	restCall(t, "GET", missing, "", nil).fails(t, http.StatusNotFound, "not_found")
	restCall(t, "PATCH", missing, "text/plain", []byte("x")).fails(t, http.StatusNotFound, "not_found")
	restCall(t, "DELETE", missing, "", nil).fails(t, http.StatusNotFound, "not_found")
	// The JSON body may repeat the path's fields, not contradict them.
	restCall(t, "PATCH", at, "application/json", []byte(`{"position":"1"}`)).
		fails(t, http.StatusBadRequest, "invalid_argument", "position", "path")
}

func testRESTChannels(t *testing.T, in *instance) {
	base := in.base + "/v1/channels"
	chURL := base + "/" + url.PathEscape("crud/one")
	r := restCall(t, "POST", base, "application/json", []byte(`{"name":"crud/one","settings":{"maxEvents":"10","maxAge":"3600s"}}`))
	var created heraldv1.CreateChannelResponse
	r.ok(t, http.StatusCreated, &created)
	c := created.Channel
	if c.Name != "crud/one" || c.Settings.GetMaxEvents() != 10 || c.Settings.GetMaxAge().AsDuration() != time.Hour || c.Settings.GetMaxEventSize() != 65536 {
		t.Fatalf("created %v", c)
	}
	if loc := r.header.Get("Location"); loc != "/v1/channels/crud%2Fone" {
		t.Fatalf("Location %q", loc)
	}
	restCall(t, "POST", base, "application/json", []byte(`{"name":"crud/one"}`)).fails(t, http.StatusConflict, "already_exists")
	restCall(t, "POST", base, "", []byte(`{"name":"crud/two"}`)).ok(t, http.StatusCreated, nil) // no Content-Type: JSON
	restCall(t, "POST", base, "application/json", []byte(`{"name":"crud/three"}`)).ok(t, http.StatusCreated, nil)

	var got heraldv1.GetChannelResponse
	restCall(t, "GET", chURL, "", nil).ok(t, http.StatusOK, &got)
	if !proto.Equal(got.Channel, c) {
		t.Fatalf("get %v, want %v", got.Channel, c)
	}
	// List with a prefix, a page at a time (both spellings of page size).
	var names []string
	token := ""
	for i := 0; ; i++ {
		var page heraldv1.ListChannelsResponse
		q := url.Values{"prefix": {"crud/"}, "pageToken": {token}}
		if i%2 == 0 {
			q.Set("pageSize", "2")
		} else {
			q.Set("page_size", "2")
		}
		restCall(t, "GET", base+"?"+q.Encode(), "", nil).ok(t, http.StatusOK, &page)
		for _, ch := range page.Channels {
			names = append(names, ch.Name)
		}
		if token = page.NextPageToken; token == "" || i > 5 {
			break
		}
	}
	if want := []string{"crud/one", "crud/three", "crud/two"}; !slices.Equal(names, want) {
		t.Fatalf("listed %v, want %v", names, want)
	}

	var up heraldv1.UpdateChannelResponse
	restCall(t, "PATCH", chURL, "application/json", []byte(`{"settings":{"maxEventSize":100}}`)).ok(t, http.StatusOK, &up)
	if s := up.Channel.Settings; s.GetMaxEventSize() != 100 || s.GetMaxEvents() != 10 {
		t.Fatalf("updated %v", up.Channel)
	}
	restCall(t, "PATCH", chURL, "application/json", []byte(`{"name":"crud/other","settings":{}}`)).
		fails(t, http.StatusBadRequest, "invalid_argument", "name")
	restCall(t, "PATCH", chURL, "application/json", []byte(`{}`)).fails(t, http.StatusBadRequest, "invalid_argument", "settings")
	// The new size limit holds for REST publishes: 413, like the body limit.
	restCall(t, "POST", restEvents(in.base, "crud/one"), "text/plain", bytes.Repeat([]byte("x"), 101)).
		fails(t, http.StatusRequestEntityTooLarge, "invalid_argument", "max_event_size is 100")

	restCall(t, "DELETE", chURL, "", nil).ok(t, http.StatusOK, &heraldv1.DeleteChannelResponse{})
	restCall(t, "GET", chURL, "", nil).fails(t, http.StatusNotFound, "not_found")
	restCall(t, "DELETE", chURL, "", nil).fails(t, http.StatusNotFound, "not_found")
	restCall(t, "PATCH", chURL, "application/json", []byte(`{"settings":{}}`)).fails(t, http.StatusNotFound, "not_found")
}

func testRESTErrors(t *testing.T, in *instance) {
	ch := "rest-bad"
	events := restEvents(in.base, ch)
	big := bytes.Repeat([]byte("x"), 2<<20+1) // the default MaxMessageBytes is 2 MiB
	for _, c := range []struct {
		name, method, url, contentType string
		body                           []byte
		status                         int
		code                           string
		words                          []string
	}{
		{"unknown param", "GET", events + "?limt=5", "", nil, 400, "invalid_argument", []string{`"limt"`, "limit"}},
		{"unknown params", "GET", in.base + "/v1/channels?x=1&y=2", "", nil, 400, "invalid_argument", []string{`"x"`, `"y"`}},
		{"param on a route without", "GET", events + "/1?cursor=1", "", nil, 400, "invalid_argument", []string{`"cursor"`}},
		{"publish unknown param", "POST", events + "?tpye=x", "text/plain", []byte("x"), 400, "invalid_argument", []string{`"tpye"`}},
		{"bad limit", "GET", events + "?limit=ten", "", nil, 400, "invalid_argument", []string{"limit"}},
		{"negative limit", "GET", events + "?limit=-1", "", nil, 400, "invalid_argument", []string{"limit"}},
		{"limit overflow", "GET", events + "?limit=99999999999", "", nil, 400, "invalid_argument", []string{"limit"}},
		{"negative cursor", "GET", events + "?cursor=-1", "", nil, 400, "invalid_argument", []string{"cursor"}},
		{"bad cursor", "GET", events + "?cursor=1.5", "", nil, 400, "invalid_argument", []string{"cursor"}},
		{"bad direction", "GET", events + "?direction=up", "", nil, 400, "invalid_argument", []string{"direction", "forward", "backward"}},
		{"bad view", "GET", events + "?view=all", "", nil, 400, "invalid_argument", []string{"view"}},
		{"bad wait", "GET", events + "?wait=soon", "", nil, 400, "invalid_argument", []string{"wait"}},
		{"negative wait", "GET", events + "?wait=-1s", "", nil, 400, "invalid_argument", []string{"wait"}},
		{"wait too long", "GET", events + "?wait=61", "", nil, 400, "invalid_argument", []string{"wait"}},
		{"wait backward", "GET", events + "?wait=1s&direction=backward", "", nil, 400, "invalid_argument", []string{"wait"}},
		{"param twice", "GET", events + "?limit=1&limit=2", "", nil, 400, "invalid_argument", []string{"limit"}},
		{"malformed query", "GET", events + "?limit=%zz", "", nil, 400, "invalid_argument", []string{"query"}},
		{"bad position", "GET", events + "/first", "", nil, 400, "invalid_argument", []string{"position"}},
		{"zero position", "GET", events + "/0", "", nil, 400, "invalid_argument", []string{"position"}},
		{"bad channel", "POST", restEvents(in.base, "-dash"), "text/plain", []byte("x"), 400, "invalid_argument", []string{"channel"}},
		{"bad type", "POST", events + "?type=has+space", "text/plain", []byte("x"), 400, "invalid_argument", []string{"type"}},
		{"unknown JSON field", "POST", events, "application/json", []byte(`{"dta":"eA=="}`), 400, "invalid_argument", []string{"dta"}},
		{"malformed JSON", "POST", events, "application/json", []byte(`{"data":`), 400, "invalid_argument", []string{"JSON"}},
		{"bad base64", "POST", events, "application/json", []byte(`{"data":"!!","format":"bytes"}`), 400, "invalid_argument", []string{"data", "base64"}},
		{"invalid JSON data", "POST", events, "application/vnd.example+json", []byte(`{"a":`), 400, "invalid_argument", []string{"data", "JSON"}},
		{"text that is not UTF-8", "POST", events, "text/plain", []byte{0xff, 0xfe}, 400, "invalid_argument", []string{"data", "UTF-8"}},
		{"data of the wrong kind", "POST", events, "application/json", []byte(`{"data":{"a":1},"format":"text"}`), 400, "invalid_argument", []string{"data", "TEXT"}},
		{"body channel differs", "POST", events, "application/json", []byte(`{"channel":"other"}`), 400, "invalid_argument", []string{"channel", "path"}},
		{"body type differs", "POST", events + "?type=a", "application/json", []byte(`{"type":"b"}`), 400, "invalid_argument", []string{"type"}},
		{"oversize raw", "POST", events, "application/octet-stream", big, 413, "invalid_argument", []string{"2097152"}},
		{"oversize JSON", "POST", events, "application/json", big, 413, "invalid_argument", []string{"2097152"}},
		{"not JSON", "POST", in.base + "/v1/channels", "text/plain", []byte("x"), 415, "invalid_argument", []string{"application/json"}},
		{"bad create", "POST", in.base + "/v1/channels", "application/json", []byte(`{"name":"","settings":{"maxEvents":"-1"}}`), 400, "invalid_argument", []string{"name", "max_events"}},
		{"method", "PUT", events, "", nil, 405, "unimplemented", []string{"PUT"}},
		{"unescaped slash", "GET", in.base + "/v1/channels/a/b/events", "", nil, 404, "not_found", []string{"%2F"}},
		{"poll without channel", "GET", in.base + "/v1/events?wait=1s", "", nil, 400, "invalid_argument", []string{"channels"}},
		{"poll bad channel", "GET", in.base + "/v1/events?channel=ok,-bad", "", nil, 400, "invalid_argument", []string{"channels[1]"}},
		{"NUL in page token", "GET", in.base + "/v1/channels?pageToken=a%00", "", nil, 400, "invalid_argument", []string{"page_token", "NUL"}},
		{"NUL in prefix", "GET", in.base + "/v1/channels?prefix=%00", "", nil, 400, "invalid_argument", []string{"prefix", "NUL"}},
		{"prefix not UTF-8", "GET", in.base + "/v1/channels?prefix=%FF", "", nil, 400, "invalid_argument", []string{"prefix", "UTF-8"}},
		{"openapi param", "GET", in.base + "/v1/openapi.json?v=2", "", nil, 400, "invalid_argument", []string{`"v"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := restCall(t, c.method, c.url, c.contentType, c.body, "Idempotency-Key", "k")
			r.fails(t, c.status, c.code, c.words...)
			if c.status == 405 && r.header.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
		})
	}
	restCall(t, "POST", events, "text/plain", []byte("x"), "Idempotency-Key", "bad key").
		fails(t, http.StatusBadRequest, "invalid_argument", "idempotency_key", "spaces")
	// None of it wrote anything: the channel was never even created.
	restCall(t, "GET", events, "", nil).fails(t, http.StatusNotFound, "not_found")
	restCall(t, "GET", in.base+"/v1/channels/"+ch, "", nil).fails(t, http.StatusNotFound, "not_found")
}

func testRESTSlash(t *testing.T, in *instance) {
	// Each name is one path segment however many '/' (or "..") it holds;
	// the mux must neither split nor clean it.
	names := []string{"slash/a", "slash/a/b", "slash/a/../b", "slash/./c", "slash/a/b/events"}
	for i, ch := range names {
		ev := restPublish(t, in.base, ch, strconv.Itoa(i))
		if ev.Channel != ch {
			t.Fatalf("published to %q, stored in %q", ch, ev.Channel)
		}
	}
	for i, ch := range names {
		page := restList(t, in.base, ch, "")
		if len(page.Events) != 1 || page.Events[0].Channel != ch || string(page.Events[0].Data) != strconv.Itoa(i) {
			t.Fatalf("%q holds %v", ch, page.Events)
		}
		at := fmt.Sprintf("%s/%d", restEvents(in.base, ch), page.Events[0].Position)
		restCall(t, "GET", at, "", nil).ok(t, http.StatusOK, nil)
		var got heraldv1.GetChannelResponse
		restCall(t, "GET", in.base+"/v1/channels/"+url.PathEscape(ch), "", nil).ok(t, http.StatusOK, &got)
		if got.Channel.Name != ch {
			t.Fatalf("channel %q reads as %q", ch, got.Channel.Name)
		}
	}
	var list heraldv1.ListChannelsResponse
	restCall(t, "GET", in.base+"/v1/channels?prefix=slash%2Fa%2F", "", nil).ok(t, http.StatusOK, &list)
	var listed []string
	for _, c := range list.Channels {
		listed = append(listed, c.Name)
	}
	if want := []string{"slash/a/../b", "slash/a/b", "slash/a/b/events"}; !slices.Equal(listed, want) {
		t.Fatalf("prefix slash/a/ lists %v, want %v", listed, want)
	}
	var poll heraldv1.PollResponse
	restCall(t, "GET", in.base+"/v1/events?cursor=0&channel=slash/a,slash/a/b", "", nil).ok(t, http.StatusOK, &poll)
	if len(poll.Events) != 2 || poll.Events[0].Channel != "slash/a" || poll.Events[1].Channel != "slash/a/b" {
		t.Fatalf("poll of slashed names %v", poll.Events)
	}
}

// restAsync runs a request on its own goroutine; the result arrives on
// the channel with the time the response came.
type restAsyncResult struct {
	resp restResponse
	at   time.Time
}

func restAsync(t *testing.T, url string) <-chan restAsyncResult {
	t.Helper()
	out := make(chan restAsyncResult, 1)
	go func() {
		req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		if err != nil {
			panic(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- restAsyncResult{resp: restResponse{status: -1, body: []byte(err.Error())}, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- restAsyncResult{resp: restResponse{status: resp.StatusCode, header: resp.Header, body: b}, at: time.Now()}
	}()
	return out
}

// holdsAndWakes checks a long-poll that has nothing to return yet: it is
// held (its subscription is registered and it has not answered), then
// answers promptly once publish runs, long before its wait would end.
func holdsAndWakes(t *testing.T, in *instance, url string, publish func() []int64, decode func(restResponse) []int64) {
	t.Helper()
	before := in.srv.Hub().Subscribers()
	res := restAsync(t, url)
	waitFor(t, func() bool { return in.srv.Hub().Subscribers() > before })
	select {
	case r := <-res:
		t.Fatalf("long-poll answered before any event: %d %s", r.resp.status, r.resp.body)
	case <-time.After(200 * time.Millisecond):
	}
	published := time.Now()
	want := publish()
	select {
	case r := <-res:
		if d := r.at.Sub(published); d > 5*time.Second {
			t.Fatalf("long-poll answered %v after the publish", d)
		}
		equalPositions(t, decode(r.resp), want)
	case <-time.After(15 * time.Second):
		t.Fatal("long-poll did not answer within 15s of the publish (wait is 30s)")
	}
}

func testRESTLongPoll(t *testing.T, in *instance) {
	ch := "rest-longpoll"
	first := restPublish(t, in.base, ch, "a")
	second := restPublish(t, in.base, ch, "b")

	// Events after the cursor: at once.
	start := time.Now()
	page := restList(t, in.base, ch, "cursor=0&wait=30s")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("long-poll with events ready took %v", d)
	}
	equalPositions(t, positions(page.Events), []int64{first.Position, second.Position})

	// Nothing after the cursor: held until a publish (plain seconds work too).
	decode := func(r restResponse) []int64 {
		var resp heraldv1.ListEventsResponse
		r.ok(t, http.StatusOK, &resp)
		if len(resp.Events) > 0 && resp.NextCursor != resp.Events[len(resp.Events)-1].Position {
			t.Fatalf("nextCursor %d after %v", resp.NextCursor, positions(resp.Events))
		}
		return positions(resp.Events)
	}
	holdsAndWakes(t, in, fmt.Sprintf("%s?cursor=%d&wait=30", restEvents(in.base, ch), second.Position),
		func() []int64 { return []int64{restPublish(t, in.base, ch, "c").Position} }, decode)

	// Nothing arrives: an empty page when the wait ends, cursor unchanged.
	head := restList(t, in.base, ch, "direction=backward&limit=1").Events[0].Position
	start = time.Now()
	page = restList(t, in.base, ch, fmt.Sprintf("cursor=%d&wait=700ms", head))
	if d := time.Since(start); d < 600*time.Millisecond || d > 10*time.Second {
		t.Fatalf("empty long-poll took %v, want about 700ms", d)
	}
	if len(page.Events) != 0 || page.NextCursor != head || page.HasMore {
		t.Fatalf("empty long-poll page %v", page)
	}
}

func testRESTPoll(t *testing.T, in *instance) {
	a, b := "rest-poll-a", "rest-poll-b"
	var want []int64
	for i := range 3 {
		want = append(want, restPublish(t, in.base, a, "a"+strconv.Itoa(i)).Position)
		want = append(want, restPublish(t, in.base, b, "b"+strconv.Itoa(i)).Position)
	}
	restPublish(t, in.base, "rest-poll-other", "not polled")
	poll := func(query string) *heraldv1.PollResponse {
		t.Helper()
		var resp heraldv1.PollResponse
		restCall(t, "GET", in.base+"/v1/events?"+query, "", nil).ok(t, http.StatusOK, &resp)
		return &resp
	}
	for _, q := range []string{"channel=" + a + "&channel=" + b, "channel=" + a + "," + b, "channels=" + b + "&channel=" + a} {
		resp := poll(q + "&cursor=0")
		equalPositions(t, positions(resp.Events), want)
		if resp.Cursor != want[len(want)-1] || resp.HasMore || !slices.Equal(resp.Subscribed.GetChannels(), []string{a, b}) {
			t.Fatalf("poll %s: %v", q, resp)
		}
	}
	// A page at a time with limit, continuing from the returned cursor.
	var got []int64
	cursor := int64(0)
	for i := 0; ; i++ {
		resp := poll(fmt.Sprintf("channel=%s,%s&cursor=%d&limit=4", a, b, cursor))
		got = append(got, positions(resp.Events)...)
		cursor = resp.Cursor
		if !resp.HasMore {
			break
		}
		if i > 5 {
			t.Fatal("poll pages do not end")
		}
	}
	equalPositions(t, got, want)

	// Caught up: the next poll holds until an event on either channel.
	decode := func(r restResponse) []int64 {
		var resp heraldv1.PollResponse
		r.ok(t, http.StatusOK, &resp)
		if len(resp.Events) > 0 && resp.Cursor != resp.Events[len(resp.Events)-1].Position {
			t.Fatalf("cursor %d after %v", resp.Cursor, positions(resp.Events))
		}
		return positions(resp.Events)
	}
	holdsAndWakes(t, in, fmt.Sprintf("%s/v1/events?channel=%s&channel=%s&cursor=%d&wait=30s", in.base, a, b, cursor),
		func() []int64 {
			restPublish(t, in.base, "rest-poll-other", "still not polled")
			return []int64{restPublish(t, in.base, b, "late").Position}
		}, decode)
	// Without a cursor: only what is published after the request arrives.
	holdsAndWakes(t, in, fmt.Sprintf("%s/v1/events?channel=%s,%s&wait=30s&cursor=", in.base, a, b),
		func() []int64 { return []int64{restPublish(t, in.base, a, "new").Position} }, decode)
	// The wait ends with nothing: empty, cursor unchanged.
	last := poll(fmt.Sprintf("channel=%s&cursor=0", a)).Cursor
	start := time.Now()
	resp := poll(fmt.Sprintf("channel=%s&cursor=%d&wait=0.5", a, last))
	if d := time.Since(start); d < 400*time.Millisecond || len(resp.Events) != 0 || resp.Cursor != last {
		t.Fatalf("empty poll after %v: %v", time.Since(start), resp)
	}
}

// restRoutes is the REST API as documented: the OpenAPI document must list
// exactly these operations.
var restRoutes = []string{
	"POST /v1/channels/{channel}/events",
	"GET /v1/channels/{channel}/events",
	"GET /v1/channels/{channel}/events/{position}",
	"PATCH /v1/channels/{channel}/events/{position}",
	"DELETE /v1/channels/{channel}/events/{position}",
	"GET /v1/channels",
	"POST /v1/channels",
	"GET /v1/channels/{channel}",
	"PATCH /v1/channels/{channel}",
	"DELETE /v1/channels/{channel}",
	"GET /v1/events",
	"POST /v1/channels/{channel}/signals",
	"GET /v1/channels/{channel}/presence",
	"GET /v1/openapi.json",
	"GET /v1/asyncapi.json",
	"GET /v1/sse",
	"GET /v1/ws",
}

func testOpenAPI(t *testing.T, in *instance) {
	r := restCall(t, "GET", in.base+"/v1/openapi.json", "", nil)
	r.ok(t, http.StatusOK, nil)
	var doc struct {
		OpenAPI    string `json:"openapi"`
		Paths      map[string]map[string]openAPIOperation
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		}
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var ops []string
	for path, item := range doc.Paths {
		for method := range item {
			ops = append(ops, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(ops)
	want := slices.Sorted(slices.Values(restRoutes))
	if !slices.Equal(ops, want) {
		t.Fatalf("documented operations\n%v\nwant\n%v", ops, want)
	}

	// Every $ref resolves.
	var all any
	if err := json.Unmarshal(r.body, &all); err != nil {
		t.Fatal(err)
	}
	walkRefs(all, func(ref string) {
		name, ok := strings.CutPrefix(ref, "#/components/schemas/")
		if _, found := doc.Components.Schemas[name]; !ok || !found {
			t.Errorf("dangling $ref %q", ref)
		}
	})
	// The protojson shape of the event.
	var event struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(doc.Components.Schemas["herald.v1.Event"], &event); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]map[string]any{
		"position": {"type": "string", "format": "int64"},

		"idempotencyKey": {"type": "string"},
		"createTime":     {"type": "string", "format": "date-time"},
		"kind":           {"type": "string"},
		"deleted":        {"type": "boolean"},
	} {
		for k, v := range want {
			if event.Properties[field][k] != v {
				t.Errorf("Event.%s: %s = %v, want %v", field, k, event.Properties[field][k], v)
			}
		}
	}
	if _, typed := event.Properties["data"]["type"]; typed || event.Properties["data"]["description"] == nil {
		t.Errorf("Event.data = %v, want any JSON value, described", event.Properties["data"])
	}
	if kinds, _ := event.Properties["kind"]["enum"].([]any); !slices.Contains(kinds, any("EVENT_KIND_PUBLISHED")) {
		t.Errorf("Event.kind enum %v", kinds)
	}

	// Every documented operation is served (neither 404 nor 405 from the
	// mux, no 5xx), and takes every query parameter it documents.
	for i, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		spec := doc.Paths[path][strings.ToLower(method)]
		if path == "/v1/sse" || path == "/v1/ws" {
			testOpenAPIStream(t, in, path, spec)
			continue
		}
		ch := fmt.Sprintf("openapi-%d", i)
		ev := restPublish(t, in.base, ch, "x")
		target := strings.NewReplacer("{channel}", url.PathEscape(ch), "{position}", strconv.FormatInt(ev.Position, 10)).Replace(path)
		q := url.Values{}
		for _, p := range spec.Parameters {
			switch p.In {
			case "query":
				q.Set(p.Name, sampleParam(p.Schema))
			case "path":
				if !strings.Contains(path, "{"+p.Name+"}") {
					t.Errorf("%s: path parameter %q not in the path", op, p.Name)
				}
			}
		}
		if q.Has("channel") {
			q.Set("channel", ch)
		}
		if q.Has("wait") {
			q.Set("wait", "0s")
		}
		if q.Has("cursor") {
			q.Set("cursor", "0")
		}
		res := restCall(t, method, in.base+target+"?"+q.Encode(), "", nil)
		if res.status == 404 || res.status == 405 || res.status >= 500 || (res.status >= 400 && bytes.Contains(res.body, []byte("unknown query parameter"))) {
			t.Errorf("%s (%s?%s): %d %s", op, target, q.Encode(), res.status, res.body)
		}
		if _, ok := spec.Responses[strconv.Itoa(res.status)]; !ok {
			t.Errorf("%s answered %d, which it does not document (%s)", op, res.status, res.body)
		}
	}
}

// testOpenAPIStream checks that the streams answer as documented: SSE
// with text/event-stream, starting with @subscribed; /v1/ws with 426 to a
// request that is not a WebSocket handshake, and 101 to one.
func testOpenAPIStream(t *testing.T, in *instance, path string, spec openAPIOperation) {
	t.Helper()
	documented := func(status int, contentType string) {
		t.Helper()
		resp, ok := spec.Responses[strconv.Itoa(status)].(map[string]any)
		if !ok {
			t.Errorf("GET %s answered %d, which it does not document", path, status)
			return
		}
		if contentType == "" {
			return
		}
		mt, _, _ := mime.ParseMediaType(contentType)
		if content, _ := resp["content"].(map[string]any); content[mt] == nil {
			t.Errorf("GET %s answered %d with %s, documented %v", path, status, mt, resp["content"])
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	get := func(query string, header ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", in.base+path+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s%s: %v", path, query, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil // a WebSocket now: nothing to read
		}
		buf := make([]byte, 512)
		n, _ := io.ReadAtLeast(resp.Body, buf, 1)
		return resp, buf[:n]
	}
	switch path {
	case "/v1/sse":
		resp, body := get("?channel=openapi-sse&last_event_id=0")
		documented(resp.StatusCode, resp.Header.Get("Content-Type"))
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("retry:")) {
			t.Errorf("GET /v1/sse: %d %q", resp.StatusCode, body)
		}
		resp, _ = get("")
		documented(resp.StatusCode, resp.Header.Get("Content-Type"))
	case "/v1/ws":
		resp, _ := get("")
		documented(resp.StatusCode, resp.Header.Get("Content-Type"))
		resp, _ = get("", "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13",
			"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol", "herald.v1.json")
		documented(resp.StatusCode, "")
		if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Protocol") != "herald.v1.json" {
			t.Errorf("WebSocket handshake: %d, protocol %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Protocol"))
		}
	}
}

type openAPIOperation struct {
	Parameters []struct {
		Name   string         `json:"name"`
		In     string         `json:"in"`
		Schema map[string]any `json:"schema"`
	} `json:"parameters"`
	Responses map[string]any `json:"responses"`
}

// sampleParam returns a valid value for a parameter schema.
func sampleParam(schema map[string]any) string {
	if enum, ok := schema["enum"].([]any); ok && len(enum) > 0 {
		return fmt.Sprint(enum[0])
	}
	switch schema["type"] {
	case "integer":
		return "1"
	case "array":
		return "x"
	}
	return "x"
}

func walkRefs(v any, fn func(string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "$ref" {
				fn(s)
			}
			walkRefs(e, fn)
		}
	case []any:
		for _, e := range x {
			walkRefs(e, fn)
		}
	}
}

// TestUnroutedV1: a path under /v1/ that no route serves, or a method a
// route does not take, is answered in the one JSON error shape like every
// other refusal, pointing to the API's description.
func TestUnroutedV1(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
		words        []string
	}{
		{http.MethodGet, "/v1/", http.StatusNotFound, "not_found", []string{"GET /v1/", "/v1/openapi.json"}},
		{http.MethodGet, "/v1/nope", http.StatusNotFound, "not_found", []string{"/v1/nope", "/v1/openapi.json"}},
		{http.MethodPost, "/v1/chanels", http.StatusNotFound, "not_found", []string{"POST /v1/chanels", "/v1/openapi.json"}},
		{http.MethodGet, "/v1/events/extra", http.StatusNotFound, "not_found", []string{"/v1/openapi.json"}},
		{http.MethodPost, "/v1/sse", http.StatusMethodNotAllowed, "unimplemented", []string{"POST", "GET"}},
		{http.MethodPut, "/v1/ws", http.StatusMethodNotAllowed, "unimplemented", []string{"PUT", "GET"}},
		{http.MethodDelete, "/v1/events", http.StatusMethodNotAllowed, "unimplemented", []string{"DELETE", "GET"}},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			r := restCall(t, tc.method, in.base+tc.path, "", nil)
			r.fails(t, tc.status, tc.code, tc.words...)
			if tc.status == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Fatalf("405 without Allow")
			}
		})
	}
}

// TestPollWithoutWaitDoesNotStall: a poll without wait lets the hub catch
// up with the log first; that must not stall when the log's head is a
// position no entry will reach (removed before this hub read it, seen here
// from a second instance). (Regression: CatchUp compared positions and
// spun for its full second.)
func TestPollWithoutWaitDoesNotStall(t *testing.T) {
	dsn, schema := database(t)
	a := startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}})
	// b does not hear a's notifications and polls the log rarely: a hub
	// lagging by a moment, made deterministic.
	b := startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema + "_b"}, Hub: fanout.Options{PollInterval: time.Hour}})
	ca, cb := grpcClients(a), grpcClients(b)
	mustPublish(t, ca.events, "eph", "x")
	if _, err := ca.channels.DeleteChannel(t.Context(), connect.NewRequest(&heraldv1.DeleteChannelRequest{Name: "eph"})); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		start := time.Now()
		if _, err := cb.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{"other"}})); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("poll %d without wait took %v", i, d)
		}
	}
}
