package gateway

import (
	"errors"
	"net/url"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/services"
)

func isInvalidArgument(err error) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && ce.Code() == connect.CodeInvalidArgument
}

// FuzzDecodeFrame: any WebSocket frame either decodes to a ConnectRequest
// or is refused with invalid_argument; it never panics. A decoded frame
// that passes validation survives a round trip through both encodings.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(true, []byte(`{"id":"s","subscribe":{"channels":["a","b"],"cursor":"12"}}`))
	f.Add(true, []byte(`{"id":"p","publish":{"channel":"chat:1","type":"m","data":"aGk=","idempotencyKey":"k"}}`))
	f.Add(true, []byte(`{"id":"u","unsubscribe":{"subscriptionId":"s"}}`))
	f.Add(true, []byte(`{"id":"x","ping":{}}`))
	f.Add(true, []byte(`{"id":1}`))
	f.Add(true, []byte(`{"publish":{"data":"%%%"}}`))
	b, _ := proto.Marshal(&heraldv1.ConnectRequest{Id: "p", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: "c", Data: []byte("x")}}})
	f.Add(false, b)
	f.Add(false, []byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		typ := byte(opBinary)
		if text {
			typ = opText
		}
		req, err := decodeFrame(typ, data)
		if err != nil {
			if !isInvalidArgument(err) {
				t.Fatalf("decode error %v is not invalid_argument", err)
			}
			return
		}
		if err := services.Validate(req); err != nil {
			if !isInvalidArgument(err) {
				t.Fatalf("validation error %v is not invalid_argument", err)
			}
			return
		}
		out, err := services.MarshalJSON(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		// (Binary frames may carry unknown fields, which protobuf keeps
		// and JSON cannot: compare what JSON can say.)
		back, err := decodeFrame(opText, out)
		if err != nil {
			t.Fatalf("JSON round trip: %v", err)
		}
		if again, _ := services.MarshalJSON(back); string(again) != string(out) {
			t.Fatalf("JSON round trip: %s != %s", again, out)
		}
		bin, _ := proto.Marshal(req)
		back, err = decodeFrame(opBinary, bin)
		if err != nil || !proto.Equal(back, req) {
			t.Fatalf("binary round trip: %v", err)
		}
	})
}

// FuzzSSERequest: any query string and Last-Event-ID either give a valid
// subscription request (or one naming no channel, which stands for the
// token's) or invalid_argument; never a panic.
func FuzzSSERequest(f *testing.F) {
	f.Add("channel=a&channel=b", "")
	f.Add("channel=a,b&last_event_id=10", "")
	f.Add("channel=a&last_event_id=10", "12")
	f.Add("channel=a&event=message", "-1")
	f.Add("channel=%zz", "99999999999999999999")
	f.Add("last_event_id=", " 7 ")
	f.Fuzz(func(t *testing.T, rawQuery, lastEventID string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // net/http would have rejected or split it the same way
		}
		req, err := parseSSERequest(q, lastEventID)
		if err != nil {
			if !isInvalidArgument(err) {
				t.Fatalf("error %v is not invalid_argument", err)
			}
			return
		}
		if len(req.channels) == 0 {
			return // the token's channels: services.Open checks them
		}
		if req.cursor != nil && *req.cursor < 0 {
			t.Fatalf("accepted cursor %d", *req.cursor)
		}
		if err := services.Validate(&heraldv1.SubscribeRequest{Channels: req.channels, Cursor: req.cursor}); err != nil {
			t.Fatalf("accepted an invalid request: %v", err)
		}
	})
}

// FuzzParseCursor: a cursor is a non-negative decimal integer or an error.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"0", "42", "-1", "9223372036854775807", "9223372036854775808", "1e3", " 5", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCursor(s)
		if err == nil && n < 0 {
			t.Fatalf("parseCursor(%q) = %d", s, n)
		}
	})
}
