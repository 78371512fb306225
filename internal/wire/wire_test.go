package wire_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/wire"
)

func sample() eventlog.Event {
	return eventlog.Event{
		Position: 42, Channel: "chat:room-1", Type: "msg", Data: []byte(`{"text":"hi"}`),
		Kind: eventlog.KindUpdated, Target: 7, IdempotencyKey: "k-1",
		CreatedAt: time.Date(2026, 12, 4, 10, 0, 0, 123_000_000, time.UTC),
		UpdatedAt: time.Date(2026, 12, 4, 10, 1, 0, 123_456_789, time.UTC),
		Deleted:   true, Author: "user:ann",
		Seq: 9, Tags: map[string]string{"room": "1", "a\"b": "é\n"},
	}
}

// The hand-written JSON must read back, with protojson, as the same event.
func TestEventJSONRoundTrip(t *testing.T) {
	t.Parallel()
	for _, ev := range []eventlog.Event{{}, sample(), {Position: 1, Channel: "a", CreatedAt: time.Unix(0, 1000)}} {
		e := wire.New(ev)
		var got heraldv1.Event
		if err := protojson.Unmarshal(e.JSON(), &got); err != nil {
			t.Fatalf("%s: %v", e.JSON(), err)
		}
		if !proto.Equal(&got, e.Proto()) {
			t.Fatalf("JSON %s reads back as %v, want %v", e.JSON(), &got, e.Proto())
		}
		var pb heraldv1.Event
		if err := proto.Unmarshal(e.Binary(), &pb); err != nil || !proto.Equal(&pb, e.Proto()) {
			t.Fatalf("binary reads back as %v (%v), want %v", &pb, err, e.Proto())
		}
	}
}

// The forms are made once and shared, also when asked for concurrently.
func TestEntryFormsShared(t *testing.T) {
	t.Parallel()
	e := wire.New(sample())
	var wg sync.WaitGroup
	outs := make([][]byte, 8)
	for i := range outs {
		wg.Go(func() { outs[i] = e.JSON() })
	}
	wg.Wait()
	for _, o := range outs {
		if &o[0] != &outs[0][0] {
			t.Fatal("JSON() made more than once")
		}
	}
	if e.Proto() != e.Proto() {
		t.Fatal("Proto() made more than once")
	}
	if e.Cost() < int64(len(sample().Data)) {
		t.Fatalf("Cost %d below the data size", e.Cost())
	}
}

func FuzzEventJSON(f *testing.F) {
	f.Add(int64(1), "chan", "type", []byte("data"), int32(1), "key", "author", int64(0), int32(0), true)
	f.Add(int64(-5), "\u2028\"\\\x01", "\xff", []byte{}, int32(99), "", "é", int64(-62135596800), int32(999_999_999), false)
	f.Fuzz(func(t *testing.T, pos int64, ch, typ string, data []byte, kind int32, key, author string, sec int64, nanos int32, deleted bool) {
		ev := &heraldv1.Event{Position: pos, Channel: ch, Type: typ, Data: data, Kind: heraldv1.EventKind(kind),
			IdempotencyKey: key, Author: author, Deleted: deleted}
		if nanos >= 0 && nanos < 1e9 && sec >= -62135596800 && sec <= 253402300799 {
			ev.CreateTime = &timestamppbT{Seconds: sec, Nanos: nanos}
		}
		b := wire.AppendEventJSON(nil, ev)
		if !json.Valid(b) || bytes.ContainsAny(b, "\n\r") {
			t.Fatalf("invalid or multi-line JSON: %q", b)
		}
		var got heraldv1.Event
		if err := protojson.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		want := proto.Clone(ev).(*heraldv1.Event)
		// Invalid UTF-8 is replaced; compare after the same replacement.
		want.Channel, want.Type, want.IdempotencyKey, want.Author = validUTF8(ch), validUTF8(typ), validUTF8(key), validUTF8(author)
		if !proto.Equal(&got, want) {
			t.Fatalf("%s reads back as %v, want %v", b, &got, want)
		}
	})
}

type timestamppbT = timestamppb.Timestamp

// validUTF8 replaces each byte of invalid UTF-8 with U+FFFD, as the encoder does.
func validUTF8(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError && len(s[i:]) > 0 {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				b.WriteRune(utf8.RuneError)
				continue
			}
		}
		b.WriteRune(r)
	}
	return b.String()
}

// BenchmarkEventJSON: what writing a JSON payload as JSON instead of
// base64 saves, per event encoded (once per event and instance) and per
// byte on the wire (every delivery), for a typical chat message.
func BenchmarkEventJSON(b *testing.B) {
	data := []byte(`{"text":"a chat message of about a hundred bytes, as a typical realtime payload would be","n":1}`)
	for _, f := range []struct {
		name   string
		format eventlog.Format
	}{{"base64", eventlog.FormatUnspecified}, {"json", eventlog.FormatJSON}} {
		b.Run(f.name, func(b *testing.B) {
			ev := sample()
			ev.Data, ev.Format, ev.Deleted, ev.Kind = data, f.format, false, eventlog.KindPublished
			pb := wire.New(ev).Proto()
			var out []byte
			b.ReportAllocs()
			for b.Loop() {
				out = wire.AppendEventJSON(out[:0], pb)
			}
			b.ReportMetric(float64(len(out)), "bytes/event")
		})
	}
}
