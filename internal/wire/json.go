package wire

import (
	"encoding/base64"
	"maps"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// AppendEventJSON appends the JSON encoding of ev to dst: Herald's JSON
// mapping (protojson's, with data written by its format: see MarshalJSON),
// written directly rather than through reflection because it is on the path
// of every delivered event. The format follows the data, so that a reader
// sees how to read data as soon as it has read it.
func AppendEventJSON(dst []byte, ev *heraldv1.Event) []byte {
	w := objWriter{b: append(dst, '{')}
	if ev.Position != 0 {
		w.key("position")
		w.b = appendInt64String(w.b, ev.Position)
	}
	if ev.Channel != "" {
		w.key("channel")
		w.b = AppendJSONString(w.b, ev.Channel)
	}
	if ev.Type != "" {
		w.key("type")
		w.b = AppendJSONString(w.b, ev.Type)
	}
	if len(ev.Data) > 0 {
		w.key("data")
		start := len(w.b)
		w.b = appendData(w.b, ev.Data, ev.Format)
		// The format is written only where the data alone does not say it:
		// a JSON object, array, number or boolean is JSON; a string is
		// text, a JSON string or (without a format) base64. Without data
		// (a deletion erased it) there is nothing to say.
		if ev.Format != 0 && w.b[start] == '"' {
			w.key("format")
			w.b = appendEnum(w.b, ev.Format.String(), int32(ev.Format))
		}
	}
	if ev.Kind != 0 {
		w.key("kind")
		w.b = appendEnum(w.b, ev.Kind.String(), int32(ev.Kind))
	}
	if ev.TargetPosition != 0 {
		w.key("targetPosition")
		w.b = appendInt64String(w.b, ev.TargetPosition)
	}
	if ev.IdempotencyKey != "" {
		w.key("idempotencyKey")
		w.b = AppendJSONString(w.b, ev.IdempotencyKey)
	}
	if ev.CreateTime != nil {
		w.key("createTime")
		w.b = appendTimestamp(w.b, ev.CreateTime)
	}
	if ev.UpdateTime != nil {
		w.key("updateTime")
		w.b = appendTimestamp(w.b, ev.UpdateTime)
	}
	if ev.Deleted {
		w.key("deleted")
		w.b = append(w.b, "true"...)
	}
	if ev.Author != "" {
		w.key("author")
		w.b = AppendJSONString(w.b, ev.Author)
	}
	if ev.Seq != 0 {
		w.key("seq")
		w.b = appendInt64String(w.b, ev.Seq)
	}
	if len(ev.Tags) > 0 {
		w.key("tags")
		w.b = appendStringMap(w.b, ev.Tags)
	}
	return append(w.b, '}')
}

// appendStringMap writes a map<string, string> as protojson does: an
// object with its keys sorted.
func appendStringMap(b []byte, m map[string]string) []byte {
	b = append(b, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, k)
		b = append(b, ':')
		b = AppendJSONString(b, m[k])
	}
	return append(b, '}')
}

// objWriter writes the members of a JSON object, commas included.
type objWriter struct {
	b    []byte
	more bool
}

func (w *objWriter) key(k string) {
	if w.more {
		w.b = append(w.b, ',')
	}
	w.more = true
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func appendInt64String(b []byte, n int64) []byte {
	b = append(b, '"')
	b = strconv.AppendInt(b, n, 10)
	return append(b, '"')
}

// appendEnum writes an enum by name, or by number when the number has no
// name (as protojson does).
func appendEnum(b []byte, name string, n int32) []byte {
	if name == strconv.Itoa(int(n)) {
		return strconv.AppendInt(b, int64(n), 10)
	}
	return AppendJSONString(b, name)
}

func appendBase64(b []byte, data []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, '"')
}

// appendTimestamp writes t as protojson does: RFC 3339 in UTC with 0, 3, 6
// or 9 fractional digits.
func appendTimestamp(b []byte, ts *timestamppb.Timestamp) []byte {
	t := time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC()
	b = append(b, '"')
	b = t.AppendFormat(b, "2006-01-02T15:04:05")
	if ns := t.Nanosecond(); ns != 0 {
		var frac string
		switch {
		case ns%1e6 == 0:
			frac = strconv.Itoa(1e3 + ns/1e6)
		case ns%1e3 == 0:
			frac = strconv.Itoa(1e6 + ns/1e3)
		default:
			frac = strconv.Itoa(1e9 + ns)
		}
		b = append(b, '.')
		b = append(b, frac[1:]...)
	}
	return append(b, 'Z', '"')
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD (the log refuses it, so only a bug would produce it); the result
// never holds a raw newline, so it fits on an SSE data line.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but end lines in JavaScript.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
