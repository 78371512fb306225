package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// Herald's JSON mapping is protojson's (lowerCamelCase names, zero values
// left out, 64-bit integers as strings, enums by name, well-known types as
// protojson writes them) with one difference: the `data` of an event, a
// publish and an edit is written and read according to its `format` (see
// herald.v1.DataFormat): a JSON value for JSON, a string for text, base64
// only for bytes. MarshalJSON and UnmarshalJSON implement it for every
// message of the API, so REST, SSE, WebSocket JSON frames and the Connect
// protocol's JSON all carry payloads the same way.

const (
	eventName   protoreflect.FullName = "herald.v1.Event"
	publishName protoreflect.FullName = "herald.v1.PublishRequest"
	updateName  protoreflect.FullName = "herald.v1.UpdateEventRequest"
	// Signals carry data by format too: what subscribers receive, what
	// senders send.
	signalName    protoreflect.FullName = "herald.v1.Signal"
	signalReqName protoreflect.FullName = "herald.v1.SignalRequest"
)

// MarshalJSON encodes m in Herald's JSON mapping.
func MarshalJSON(m proto.Message) ([]byte, error) { return AppendJSON(nil, m) }

// AppendJSON appends m in Herald's JSON mapping to dst.
func AppendJSON(dst []byte, m proto.Message) ([]byte, error) {
	return appendMessage(dst, m.ProtoReflect())
}

func appendMessage(b []byte, m protoreflect.Message) ([]byte, error) {
	md := m.Descriptor()
	switch md.FullName() {
	case eventName:
		if ev, ok := m.Interface().(*heraldv1.Event); ok {
			return AppendEventJSON(b, ev), nil
		}
	case publishName, updateName, signalName, signalReqName:
		return appendWithData(b, m)
	}
	if md.FullName().Parent() == "google.protobuf" {
		// Well-known types (Timestamp, Duration, ...) have their own
		// mappings: protojson's.
		return protojson.MarshalOptions{}.MarshalAppend(b, m.Interface())
	}
	w := objWriter{b: append(b, '{')}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		w.key(fd.JSONName())
		var err error
		if w.b, err = appendField(w.b, fd, m.Get(fd)); err != nil {
			return nil, err
		}
	}
	return append(w.b, '}'), nil
}

// appendWithData writes a publish or an edit: its fields as usual, data by
// its format.
func appendWithData(b []byte, m protoreflect.Message) ([]byte, error) {
	fields := m.Descriptor().Fields()
	dataFD, formatFD := fields.ByName("data"), fields.ByName("format")
	format := heraldv1.DataFormat(m.Get(formatFD).Enum())
	w := objWriter{b: append(b, '{')}
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		w.key(fd.JSONName())
		if fd == dataFD {
			w.b = appendData(w.b, m.Get(fd).Bytes(), format)
			continue
		}
		var err error
		if w.b, err = appendField(w.b, fd, m.Get(fd)); err != nil {
			return nil, err
		}
	}
	if format == heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED && m.Has(dataFD) {
		// A request's string data without a format reads as text: say
		// that this base64 is bytes.
		w.key(formatFD.JSONName())
		w.b = AppendJSONString(w.b, heraldv1.DataFormat_DATA_FORMAT_BYTES.String())
	}
	return append(w.b, '}'), nil
}

// appendData writes data by its format. JSON data is written as it is
// unless it spans lines (SSE data lines and WebSocket frames hold it on one
// line): then it is compacted. Data that does not read as its format (the
// services refuse it, so only a bug would store it) is written as base64.
func appendData(b []byte, data []byte, format heraldv1.DataFormat) []byte {
	switch format {
	case heraldv1.DataFormat_DATA_FORMAT_JSON:
		if !bytes.ContainsAny(data, "\r\n") {
			if json.Valid(data) {
				return append(b, data...)
			}
		} else {
			var c bytes.Buffer
			if json.Compact(&c, data) == nil {
				return append(b, c.Bytes()...)
			}
		}
	case heraldv1.DataFormat_DATA_FORMAT_TEXT:
		return AppendJSONString(b, string(data))
	}
	return appendBase64(b, data)
}

func appendField(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch {
	case fd.IsList():
		l := v.List()
		b = append(b, '[')
		for i := range l.Len() {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, fd, l.Get(i)); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case fd.IsMap():
		mp := v.Map()
		keys := make([]protoreflect.MapKey, 0, mp.Len())
		mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
			keys = append(keys, k)
			return true
		})
		slices.SortFunc(keys, func(x, y protoreflect.MapKey) int { return strings.Compare(x.String(), y.String()) })
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendJSONString(b, k.String())
			b = append(b, ':')
			var err error
			if b, err = appendValue(b, fd.MapValue(), mp.Get(k)); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return appendValue(b, fd, v)
}

func appendValue(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendMessage(b, v.Message())
	case protoreflect.StringKind:
		return AppendJSONString(b, v.String()), nil
	case protoreflect.BytesKind:
		return appendBase64(b, v.Bytes()), nil
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.EnumKind:
		n := v.Enum()
		if ev := fd.Enum().Values().ByNumber(n); ev != nil {
			return AppendJSONString(b, string(ev.Name())), nil
		}
		return strconv.AppendInt(b, int64(n), 10), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return appendInt64String(b, v.Int()), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		b = strconv.AppendUint(b, v.Uint(), 10)
		return append(b, '"'), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		switch {
		case math.IsNaN(f):
			return append(b, `"NaN"`...), nil
		case math.IsInf(f, 1):
			return append(b, `"Infinity"`...), nil
		case math.IsInf(f, -1):
			return append(b, `"-Infinity"`...), nil
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		return strconv.AppendFloat(b, f, 'g', -1, bits), nil
	}
	return nil, fmt.Errorf("json: unsupported field kind %v of %s", fd.Kind(), fd.FullName())
}

// UnmarshalJSON decodes Herald's JSON mapping into m. With discardUnknown,
// fields m does not know are skipped (as connect-go's JSON codec does for
// RPCs); otherwise they are an error (REST and WebSocket, where a typo must
// not pass silently).
//
// A `data` member is read by the message's format: for a publish or an
// edit, a JSON value other than a string is JSON data; a string is text,
// unless `format` says JSON (the string is then the JSON value) or BYTES
// (the string is then base64). In an event (as the server writes them), a
// string without a format is base64, as protojson writes bytes.
func UnmarshalJSON(b []byte, m proto.Message, discardUnknown bool) error {
	md := m.ProtoReflect().Descriptor()
	if holdsData(md) {
		var err error
		if b, err = rewriteData(b, md); err != nil {
			return err
		}
	}
	return protojson.UnmarshalOptions{DiscardUnknown: discardUnknown}.Unmarshal(b, m)
}

// dataHolders caches, per message type, whether it holds (at any depth) a
// message whose data follows its format.
var dataHolders sync.Map // protoreflect.FullName -> bool

func holdsData(md protoreflect.MessageDescriptor) bool {
	if v, ok := dataHolders.Load(md.FullName()); ok {
		return v.(bool)
	}
	v := holdsDataVisit(md, map[protoreflect.FullName]bool{})
	dataHolders.Store(md.FullName(), v)
	return v
}

func holdsDataVisit(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	switch md.FullName() {
	case eventName, publishName, updateName, signalName, signalReqName:
		return true
	}
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := range fields.Len() {
		if sub := fields.Get(i).Message(); sub != nil && holdsDataVisit(sub, seen) {
			return true
		}
	}
	return false
}

// rewriteData turns the data members of raw (a JSON object of type md) into
// protojson's form (base64 data and an explicit format), descending into
// the members that hold such messages. Everything else is passed through.
func rewriteData(raw []byte, md protoreflect.MessageDescriptor) ([]byte, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return raw, nil // not an object: protojson reports it
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		return raw, nil // malformed: protojson reports it, with its position
	}
	changed := false
	switch md.FullName() {
	case eventName, publishName, updateName, signalName, signalReqName:
		ok, err := fixData(obj, md.FullName() == eventName || md.FullName() == signalName)
		if err != nil {
			return nil, err
		}
		changed = changed || ok
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		sub := fd.Message()
		if sub == nil || fd.IsMap() || !holdsData(sub) {
			continue
		}
		names := []string{fd.JSONName()}
		if string(fd.Name()) != fd.JSONName() {
			names = append(names, string(fd.Name()))
		}
		for _, name := range names {
			v, ok := obj[name]
			if !ok {
				continue
			}
			nv, err := rewriteMember(v, fd, sub)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			obj[name] = nv
			changed = true
		}
	}
	if !changed {
		return raw, nil
	}
	return json.Marshal(obj)
}

func rewriteMember(v json.RawMessage, fd protoreflect.FieldDescriptor, sub protoreflect.MessageDescriptor) (json.RawMessage, error) {
	if !fd.IsList() {
		return rewriteData(v, sub)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return v, nil // protojson reports it
	}
	for i := range items {
		nv, err := rewriteData(items[i], sub)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		items[i] = nv
	}
	return json.Marshal(items)
}

// ErrData marks an invalid `data` member: the caller answers it with
// invalid_argument.
var ErrData = errors.New("invalid data")

// fixData reads obj's data member by its format and writes both back in
// protojson's form. It reports whether it changed obj.
func fixData(obj map[string]json.RawMessage, event bool) (bool, error) {
	d, ok := obj["data"]
	if !ok {
		return false, nil
	}
	format := heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED
	if f, ok := obj["format"]; ok {
		var err error
		if format, err = parseFormat(f); err != nil {
			return false, err
		}
	}
	d = bytes.TrimSpace(d)
	if len(d) == 0 || string(d) == "null" && format != heraldv1.DataFormat_DATA_FORMAT_JSON {
		return false, nil // protojson's: null is the empty value
	}
	var data []byte
	isString := d[0] == '"'
	switch {
	case format == heraldv1.DataFormat_DATA_FORMAT_JSON:
		var c bytes.Buffer
		if err := json.Compact(&c, d); err != nil {
			return false, fmt.Errorf("%w: data: not a JSON value: %v", ErrData, err)
		}
		data = c.Bytes()
	case !isString:
		if format != heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED {
			return false, fmt.Errorf("%w: data: a JSON %s, but the format is %s: send a string, or format JSON",
				ErrData, jsonKind(d[0]), shortFormat(format))
		}
		var c bytes.Buffer
		if err := json.Compact(&c, d); err != nil {
			return false, fmt.Errorf("%w: data: not a JSON value: %v", ErrData, err)
		}
		data, format = c.Bytes(), heraldv1.DataFormat_DATA_FORMAT_JSON
	default:
		var s string
		if err := json.Unmarshal(d, &s); err != nil {
			return false, fmt.Errorf("%w: data: %v", ErrData, err)
		}
		bytesFormat := format == heraldv1.DataFormat_DATA_FORMAT_BYTES ||
			event && format == heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED
		if bytesFormat {
			var err error
			if data, err = decodeBase64(s); err != nil {
				return false, fmt.Errorf("%w: data: the format is BYTES, so data must be base64: %v", ErrData, err)
			}
		} else {
			data, format = []byte(s), heraldv1.DataFormat_DATA_FORMAT_TEXT
		}
	}
	enc, _ := json.Marshal(base64.StdEncoding.EncodeToString(data))
	obj["data"] = enc
	if format != heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED {
		name, _ := json.Marshal(format.String())
		obj["format"] = name
	}
	return true, nil
}

func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func shortFormat(f heraldv1.DataFormat) string {
	return strings.TrimPrefix(f.String(), "DATA_FORMAT_")
}

// parseFormat reads a format as protojson does (its name or number), and
// also its short name in any case ("json", "Text").
func parseFormat(raw json.RawMessage) (heraldv1.DataFormat, error) {
	var n int32
	if json.Unmarshal(raw, &n) == nil {
		return heraldv1.DataFormat(n), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("%w: format: want one of json, text, bytes", ErrData)
	}
	u := strings.ToUpper(s)
	if v, ok := heraldv1.DataFormat_value[u]; ok {
		return heraldv1.DataFormat(v), nil
	}
	if v, ok := heraldv1.DataFormat_value["DATA_FORMAT_"+u]; ok && u != "UNSPECIFIED" {
		return heraldv1.DataFormat(v), nil
	}
	return 0, fmt.Errorf("%w: format: %q is not one of json, text, bytes", ErrData, s)
}

// decodeBase64 accepts what protojson accepts: standard or URL-safe
// alphabet, with or without padding.
func decodeBase64(s string) ([]byte, error) {
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	if len(s)%4 != 0 {
		enc = enc.WithPadding(base64.NoPadding)
	}
	return enc.DecodeString(s)
}
