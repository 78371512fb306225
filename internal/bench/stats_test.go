package bench

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(i + 1) // 1..100
	}
	tests := []struct {
		name   string
		sorted []int64
		q      float64
		want   int64
	}{
		{"empty", nil, 0.5, 0},
		{"one", []int64{7}, 0.5, 7},
		{"one p99", []int64{7}, 0.99, 7},
		{"p50 of 1..100", hundred, 0.50, 50},
		{"p99 of 1..100", hundred, 0.99, 99},
		{"max of 1..100", hundred, 1, 100},
		{"tiny q is the minimum", hundred, 0.001, 1},
		{"p50 of 4 is the 2nd", []int64{10, 20, 30, 40}, 0.5, 20},
		{"p99 of 4 is the 4th", []int64{10, 20, 30, 40}, 0.99, 40},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.q); got != tt.want {
			t.Errorf("%s: percentile(%v) = %d, want %d", tt.name, tt.q, got, tt.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	ms := int64(time.Millisecond)
	d := []int64{5 * ms, 1 * ms, 3 * ms, 2 * ms, 4 * ms} // unsorted
	got := summarize(d)
	want := Latency{N: 5, P50: 3, P99: 5, Max: 5}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
}

func TestCheckDelivery(t *testing.T) {
	t.Parallel()
	want := []int64{11, 12, 13, 14, 15}
	tests := []struct {
		name string
		want []int64
		got  []int64
		loss Loss
	}{
		{"exact", want, []int64{11, 12, 13, 14, 15}, Loss{}},
		{"nothing published, nothing received", nil, nil, Loss{}},
		{"nothing received", want, nil, Loss{Missing: 5}},
		{"gap", want, []int64{11, 12, 14, 15}, Loss{Missing: 1}},
		{"tail cut", want, []int64{11, 12, 13}, Loss{Missing: 2}},
		{"duplicate", want, []int64{11, 12, 12, 13, 14, 15}, Loss{Duplicate: 1}},
		{"duplicate after later ones", want, []int64{11, 12, 13, 14, 12, 15}, Loss{Duplicate: 1}},
		{"swap", want, []int64{11, 13, 12, 14, 15}, Loss{OutOfOrder: 1}},
		{"reversed", want, []int64{15, 14, 13, 12, 11}, Loss{OutOfOrder: 4}},
		{"unexpected", want, []int64{10, 11, 12, 13, 14, 15, 16}, Loss{Unexpected: 2}},
		{"everything", want, []int64{11, 13, 13, 12, 99}, Loss{Missing: 2, Duplicate: 1, OutOfOrder: 1, Unexpected: 1}},
	}
	var seen []bool
	for _, tt := range tests {
		var got Loss
		got, seen = checkDelivery(tt.want, tt.got, seen) // scratch reused across cases on purpose
		if got != tt.loss {
			t.Errorf("%s: loss = %+v, want %+v", tt.name, got, tt.loss)
		}
		if (got.Total() == 0) != (tt.loss == Loss{}) {
			t.Errorf("%s: Total() = %d", tt.name, got.Total())
		}
	}
}

func TestEventStampRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 123_456_789)
	for _, size := range []int{8, 9, 11, 12, 256} {
		data := eventData(now, size)
		if len(data) != size {
			t.Fatalf("size %d: len %d", size, len(data))
		}
		if got := stampOf(data); got != now.UnixNano() {
			t.Errorf("size %d: stampOf = %d, want %d", size, got, now.UnixNano())
		}
		if got := stampOfBase64([]byte(base64.StdEncoding.EncodeToString(data))); got != now.UnixNano() {
			t.Errorf("size %d: stampOfBase64 = %d, want %d", size, got, now.UnixNano())
		}
	}
	if got := stampOf([]byte("short")); got != 0 {
		t.Errorf("stampOf(short) = %d, want 0", got)
	}
}

// TestParseWSJSON checks the fast path against what protojson writes,
// with and without the space protojson may put after a colon.
func TestParseWSJSON(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 42)
	ev := &heraldv1.Event{
		Position:   9_007_199_254_740_993, // above 2^53: must not go through float64
		Channel:    "bench",
		Type:       `odd"data":"x`, // a value that looks like a key, escaped by protojson
		Data:       eventData(now, 64),
		CreateTime: timestamppb.New(now),
	}
	evJSON, err := protojson.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	frames := map[string]string{
		"spliced":      `{"id":"s1","event":` + string(evJSON) + `}`,
		"protojson":    mustJSON(t, &heraldv1.ConnectResponse{Id: "s1", Message: &heraldv1.ConnectResponse_Event{Event: ev}}),
		"spaced":       strings.ReplaceAll(`{"id":"s1","event":`+string(evJSON)+`}`, `":`, `": `),
		"no id spaced": strings.ReplaceAll(`{"event":`+string(evJSON)+`}`, `":`, `": `),
	}
	for name, f := range frames {
		got, err := parseWSJSON([]byte(f))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.kind != frameEvent || got.pos != ev.Position || got.sent != now.UnixNano() {
			t.Errorf("%s: got %+v, want event at %d sent %d", name, got, ev.Position, now.UnixNano())
		}
	}

	sub := mustJSON(t, &heraldv1.ConnectResponse{Id: "s1", Message: &heraldv1.ConnectResponse_Subscribed{
		Subscribed: &heraldv1.Subscribed{Channels: []string{"bench"}, Cursor: 5},
	}})
	if got, err := parseWSJSON([]byte(sub)); err != nil || got.kind != frameSubscribed {
		t.Errorf("subscribed: got %+v, %v", got, err)
	}
	errFrame := mustJSON(t, &heraldv1.ConnectResponse{Id: "s1", Message: &heraldv1.ConnectResponse_Error{Error: &heraldv1.Error{
		Code: "resource_exhausted", Message: `slow "event": consumer`,
		End: &heraldv1.StreamEnd{Reason: heraldv1.StreamEndReason_STREAM_END_REASON_SLOW_CONSUMER, LastPosition: 77},
	}}})
	got, err := parseWSJSON([]byte(errFrame))
	if err != nil || got.kind != frameError || !strings.Contains(got.err, "SLOW_CONSUMER") || !strings.Contains(got.err, "77") {
		t.Errorf("error frame: got %+v, %v", got, err)
	}
	if _, err := parseWSJSON([]byte(`{"id":"s1","event":{"channel":"bench"}}`)); err == nil {
		t.Error("event without position: no error")
	}
}

func mustJSON(t *testing.T, m *heraldv1.ConnectResponse) string {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSSEEvent(t *testing.T) {
	t.Parallel()
	stream := ": keep-alive\n\n" +
		"event: @subscribed\ndata: {}\n\n" +
		"id: 12\r\nevent: herald-load\r\ndata: {\"position\":\"12\"}\r\n\r\n" +
		"data:a\ndata:b\n\n"
	var ev sseEvent
	var got []string
	for _, l := range strings.SplitAfter(stream, "\n") {
		if l == "" {
			continue
		}
		if ev.line([]byte(l)) {
			got = append(got, ev.name+"|"+string(ev.data)+"|"+map[bool]string{true: "id", false: "-"}[ev.hasID])
			ev.reset()
		}
	}
	want := []string{"@subscribed|{}|-", `herald-load|{"position":"12"}|id`, "|a\nb|-"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	status := "Name:\therald\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t    8000 kB\nThreads:\t7\n"
	got, err := parseStatus([]byte(status), "VmRSS", "RssAnon", "Threads")
	if err != nil {
		t.Fatal(err)
	}
	if got["VmRSS"] != 12345 || got["RssAnon"] != 8000 || got["Threads"] != 7 {
		t.Errorf("parseStatus = %v", got)
	}
	if _, err := parseStatus([]byte(status), "VmSwap"); err == nil {
		t.Error("missing field: no error")
	}
}
