package gateway

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

func testEvent(pos int64) *heraldv1.Event {
	return &heraldv1.Event{
		Position: pos, Channel: "chat:lobby", Type: "message.created",
		Data:       []byte(`{"user":"ada","text":"hello, everyone in the lobby"}`),
		Kind:       heraldv1.EventKind_EVENT_KIND_PUBLISHED,
		CreateTime: timestamppb.New(time.Unix(1700000000, 0)),
	}
}

// TestSplicedFramesDecode: frames spliced from the cache decode to the
// message protojson and protobuf would have produced.
func TestSplicedFramesDecode(t *testing.T) {
	c := newEncodeCache()
	for _, id := range []string{"", "s1", `we"ird\id`} {
		msg := &heraldv1.ConnectResponse{Id: id, Message: &heraldv1.ConnectResponse_Event{Event: testEvent(7)}}
		j, _ := c.connectResponseJSON(msg)
		got := &heraldv1.ConnectResponse{}
		if err := protojson.Unmarshal(j, got); err != nil || !proto.Equal(got, msg) {
			t.Fatalf("JSON %s: %v, %v", j, err, got)
		}
		b, _ := c.connectResponseBinary(msg)
		got = &heraldv1.ConnectResponse{}
		if err := proto.Unmarshal(b, got); err != nil || !proto.Equal(got, msg) {
			t.Fatalf("binary: %v, %v", err, got)
		}
	}
}

// TestEncodeCacheKey: an edited event (same position, new data) is not
// served from the cache.
func TestEncodeCacheKey(t *testing.T) {
	c := newEncodeCache()
	ev := testEvent(9)
	first := c.eventJSON(ev)
	if again := c.eventJSON(testEvent(9)); &again[0] != &first[0] {
		t.Fatal("the same event was encoded twice")
	}
	edited := testEvent(9)
	edited.Data = []byte("edited")
	edited.UpdateTime = timestamppb.Now()
	if got := c.eventJSON(edited); bytes.Equal(got, first) || !bytes.Contains(got, []byte("ZWRpdGVk")) {
		t.Fatalf("edited event served stale bytes: %s", got)
	}
}

// BenchmarkEventFrame compares one subscriber's cost of a JSON event frame
// with the cache (the event is encoded once, then spliced per subscriber)
// against marshalling the whole frame for every subscriber.
func BenchmarkEventFrame(b *testing.B) {
	ev := testEvent(1)
	msg := &heraldv1.ConnectResponse{Id: "s1", Message: &heraldv1.ConnectResponse_Event{Event: ev}}
	b.Run("json/cached", func(b *testing.B) {
		c := newEncodeCache()
		b.ReportAllocs()
		for b.Loop() {
			_, _ = c.connectResponseJSON(msg)
		}
	})
	b.Run("json/marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = jsonOut.Marshal(msg)
		}
	})
	b.Run("proto/cached", func(b *testing.B) {
		c := newEncodeCache()
		b.ReportAllocs()
		for b.Loop() {
			_, _ = c.connectResponseBinary(msg)
		}
	})
	b.Run("proto/marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = proto.Marshal(msg)
		}
	})
}
