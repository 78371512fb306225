package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/wire"
)

// Events are written with their data by format, and read back the same.
func TestEventDataByFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		data   string
		format eventlog.Format
		want   string // the data member
	}{
		{"json object", `{"text":"hi","n":[1,2]}`, eventlog.FormatJSON, `"data":{"text":"hi","n":[1,2]},"kind"`},
		{"json string", `"hi"`, eventlog.FormatJSON, `"data":"hi","format":"DATA_FORMAT_JSON"`},
		{"json big number", `12345678901234567890`, eventlog.FormatJSON, `"data":12345678901234567890,`},
		{"json over lines", "{\n  \"a\": 1\n}", eventlog.FormatJSON, `"data":{"a":1},`},
		{"text", "hé \"there\"\n", eventlog.FormatText, `"data":"hé \"there\"\n","format":"DATA_FORMAT_TEXT"`},
		{"bytes", "hi", eventlog.FormatUnspecified, `"data":"aGk=",`},
		{"explicit bytes", "hi", eventlog.FormatBytes, `"data":"aGk=","format":"DATA_FORMAT_BYTES"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := wire.New(eventlog.Event{Position: 3, Channel: "c", Data: []byte(tc.data), Format: tc.format, Kind: eventlog.KindPublished})
			got := string(e.JSON())
			if !strings.Contains(got, tc.want) || strings.ContainsAny(got, "\r\n") || !json.Valid(e.JSON()) {
				t.Fatalf("JSON %s, want it to hold %s on one line", got, tc.want)
			}
			var back heraldv1.Event
			if err := wire.UnmarshalJSON(e.JSON(), &back, false); err != nil {
				t.Fatal(err)
			}
			want := proto.Clone(e.Proto()).(*heraldv1.Event)
			if tc.name == "json over lines" {
				want.Data = []byte(`{"a":1}`)
			}
			if !proto.Equal(&back, want) {
				t.Fatalf("read back %v, want %v", &back, want)
			}
		})
	}
}

// What a JSON client sends as a publish's data, and what is stored.
func TestPublishDataFromJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in         string
		data       string
		format     heraldv1.DataFormat
		wantErr    string
		discardUnk bool
	}{
		{in: `{"channel":"c","data":{"text":"hi"}}`, data: `{"text":"hi"}`, format: heraldv1.DataFormat_DATA_FORMAT_JSON},
		{in: `{"channel":"c","data":[1, 2 ,3]}`, data: `[1,2,3]`, format: heraldv1.DataFormat_DATA_FORMAT_JSON},
		{in: `{"channel":"c","data":12.5}`, data: `12.5`, format: heraldv1.DataFormat_DATA_FORMAT_JSON},
		{in: `{"channel":"c","data":true}`, data: `true`, format: heraldv1.DataFormat_DATA_FORMAT_JSON},
		{in: `{"channel":"c","data":"hi"}`, data: `hi`, format: heraldv1.DataFormat_DATA_FORMAT_TEXT},
		{in: `{"channel":"c","data":"hi","format":"text"}`, data: `hi`, format: heraldv1.DataFormat_DATA_FORMAT_TEXT},
		{in: `{"channel":"c","data":"hi","format":"json"}`, data: `"hi"`, format: heraldv1.DataFormat_DATA_FORMAT_JSON},
		{in: `{"channel":"c","data":"aGk=","format":"BYTES"}`, data: `hi`, format: heraldv1.DataFormat_DATA_FORMAT_BYTES},
		{in: `{"channel":"c","data":"aGk","format":"DATA_FORMAT_BYTES"}`, data: `hi`, format: heraldv1.DataFormat_DATA_FORMAT_BYTES},
		{in: `{"channel":"c","data":null}`, data: ``},
		{in: `{"channel":"c","data":null,"format":"json"}`, data: `null`, format: heraldv1.DataFormat_DATA_FORMAT_JSON},
		{in: `{"channel":"c","data":{"a":1},"format":"text"}`, wantErr: "a JSON object, but the format is TEXT"},
		{in: `{"channel":"c","data":"%%%","format":"bytes"}`, wantErr: "must be base64"},
		{in: `{"channel":"c","data":"x","format":"yaml"}`, wantErr: `"yaml" is not one of json, text, bytes`},
		{in: `{"channel":"c","data":{"a":1},"bogus":1}`, wantErr: "bogus"},
		{in: `{"channel":"c","data":{"a":1},"bogus":1}`, data: `{"a":1}`, format: heraldv1.DataFormat_DATA_FORMAT_JSON, discardUnk: true},
	} {
		var got heraldv1.PublishRequest
		err := wire.UnmarshalJSON([]byte(tc.in), &got, tc.discardUnk)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || string(got.Data) != tc.data || got.Format != tc.format || got.Channel != "c" {
			t.Errorf("%s: got %q %v %v, want %q %v", tc.in, got.Data, got.Format, err, tc.data, tc.format)
		}
	}
	// Nested in a WebSocket command, and an edit.
	var cmd heraldv1.ConnectRequest
	if err := wire.UnmarshalJSON([]byte(`{"id":"p","publish":{"channel":"c","data":{"x":1}}}`), &cmd, false); err != nil ||
		string(cmd.GetPublish().GetData()) != `{"x":1}` || cmd.GetPublish().GetFormat() != heraldv1.DataFormat_DATA_FORMAT_JSON {
		t.Fatalf("command: %v %v", &cmd, err)
	}
	var upd heraldv1.UpdateEventRequest
	if err := wire.UnmarshalJSON([]byte(`{"channel":"c","position":"1","data":"new text"}`), &upd, false); err != nil ||
		string(upd.Data) != "new text" || upd.Format != heraldv1.DataFormat_DATA_FORMAT_TEXT {
		t.Fatalf("update: %v %v", &upd, err)
	}
	var bad heraldv1.ConnectRequest
	if err := wire.UnmarshalJSON([]byte(`{"id":"p","publish":{"data":[1],"format":"text"}}`), &bad, false); !errors.Is(err, wire.ErrData) {
		t.Fatalf("bad nested data: %v", err)
	}
}

// Messages without data formats encode exactly as protojson reads them.
func TestMarshalJSONMatchesProtojson(t *testing.T) {
	t.Parallel()
	msgs := []proto.Message{
		&heraldv1.ListEventsRequest{Channel: "c", Cursor: 5, Direction: heraldv1.Direction_DIRECTION_BACKWARD, Wait: durationpb.New(1500e6)},
		&heraldv1.ConnectResponse{Id: "x", Message: &heraldv1.ConnectResponse_Error{Error: &heraldv1.Error{Code: "c", Message: "m\n\"<>", End: &heraldv1.StreamEnd{LastPosition: 9}}}},
		&heraldv1.Channel{Name: "n", Settings: &heraldv1.ChannelSettings{MaxEvents: proto.Int64(0), MaxAge: durationpb.New(0)}},
		&heraldv1.PollResponse{Subscribed: &heraldv1.Subscribed{Channels: []string{"a", "b"}, Cursor: 1}, Events: []*heraldv1.Event{{Position: 2, Data: []byte{0, 1}}}, HasMore: true},
		&heraldv1.ConnectResponse{Message: &heraldv1.ConnectResponse_Pong{Pong: &heraldv1.Pong{}}},
	}
	for _, m := range msgs {
		b, err := wire.MarshalJSON(m)
		if err != nil {
			t.Fatal(err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := protojson.Unmarshal(b, back); err != nil || !proto.Equal(back, m) {
			t.Fatalf("%T: %s reads back as %v (%v)", m, b, back, err)
		}
	}
}

// FuzzJSONRoundTrip: any message of the API, read from arbitrary protobuf
// bytes, encodes to valid JSON that decodes to the same message (events'
// data by format, when it reads as its format).
func FuzzJSONRoundTrip(f *testing.F) {
	types := []proto.Message{
		&heraldv1.ConnectRequest{}, &heraldv1.ConnectResponse{}, &heraldv1.PublishRequest{},
		&heraldv1.ListEventsResponse{}, &heraldv1.UpdateEventRequest{}, &heraldv1.UpdateEventResponse{},
		&heraldv1.PollResponse{}, &heraldv1.SubscribeResponse{}, &heraldv1.ListChannelsResponse{},
	}
	for i, m := range []proto.Message{
		&heraldv1.ConnectRequest{Id: "p", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: "c", Data: []byte(`{"a":1}`), Format: heraldv1.DataFormat_DATA_FORMAT_JSON}}},
		&heraldv1.ConnectResponse{Id: "s", Message: &heraldv1.ConnectResponse_Event{Event: &heraldv1.Event{Position: 1, Data: []byte("t"), Format: heraldv1.DataFormat_DATA_FORMAT_TEXT}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(uint8(i), b)
	}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		m := types[int(which)%len(types)].ProtoReflect().New().Interface()
		if proto.Unmarshal(b, m) != nil {
			return
		}
		normalize(m.ProtoReflect())
		out, err := wire.MarshalJSON(m)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %s", out)
		}
		back := m.ProtoReflect().New().Interface()
		if err := wire.UnmarshalJSON(out, back, false); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		if !proto.Equal(back, m) {
			t.Fatalf("%s reads back as %v, want %v", out, back, m)
		}
	})
}

// normalize makes m encodable without loss: it drops unknown fields (JSON
// cannot carry them), replaces invalid UTF-8 in strings (JSON cannot carry
// it), and gives data that does not read as its format (the services
// refuse it; the encoder writes it as base64) the bytes format, and JSON
// data its compact form.
func normalize(m protoreflect.Message) {
	m.SetUnknown(nil)
	fields := m.Descriptor().Fields()
	if df, ff := fields.ByName("data"), fields.ByName("format"); df != nil && ff != nil && df.Kind() == protoreflect.BytesKind {
		data := m.Get(df).Bytes()
		switch heraldv1.DataFormat(m.Get(ff).Enum()) {
		case heraldv1.DataFormat_DATA_FORMAT_JSON:
			var c bytes.Buffer
			if len(data) == 0 || json.Compact(&c, data) != nil {
				m.Clear(ff)
			} else {
				m.Set(df, protoreflect.ValueOfBytes(c.Bytes()))
			}
		case heraldv1.DataFormat_DATA_FORMAT_TEXT:
			if !utf8.Valid(data) {
				m.Clear(ff)
			}
		case heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED, heraldv1.DataFormat_DATA_FORMAT_BYTES:
		default:
			m.Clear(ff) // an unknown format: written as a number, read as bytes
		}
		if m.Descriptor().FullName() == "herald.v1.Event" && len(data) == 0 {
			m.Clear(ff) // no data: no format either
		}
		if m.Descriptor().FullName() != "herald.v1.Event" && heraldv1.DataFormat(m.Get(ff).Enum()) == heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED && len(data) > 0 {
			// A request's string data without a format is text: say bytes.
			m.Set(ff, protoreflect.ValueOfEnum(protoreflect.EnumNumber(heraldv1.DataFormat_DATA_FORMAT_BYTES)))
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() == protoreflect.StringKind && !fd.IsList() && !fd.IsMap():
			m.Set(fd, protoreflect.ValueOfString(strings.ToValidUTF8(v.String(), "\uFFFD")))
		case fd.Kind() == protoreflect.StringKind && fd.IsList():
			l := v.List()
			for i := range l.Len() {
				l.Set(i, protoreflect.ValueOfString(strings.ToValidUTF8(l.Get(i).String(), "\uFFFD")))
			}
		case fd.Message() != nil && fd.IsList():
			l := v.List()
			for i := range l.Len() {
				normalize(l.Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			normalize(v.Message())
		}
		return true
	})
}
