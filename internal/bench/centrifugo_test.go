package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The frames below are Centrifugo v6.9.1's, as a WebSocket and a uni_sse
// client received them (docs/benchmarks.md, "Centrifugo beside Herald").
func TestCentrifugoFrames(t *testing.T) {
	t.Parallel()
	at := time.Unix(1765000000, 123456789)
	data := centrifugoData(at, 256)
	if len(data) != 256 {
		t.Errorf("data is %d bytes, want 256", len(data))
	}
	if !json.Valid(data) {
		t.Fatalf("data is not JSON: %s", data)
	}
	push := `{"push":{"channel":"bench","pub":{"data":` + string(data) + `,"offset":7,"epoch":"ZquLIVaH"}}}`
	f, ok := centrifugoPub([]byte(push))
	if !ok || f.kind != frameEvent || f.pos != 7 || f.sent != at.UnixNano() {
		t.Errorf("push: got %+v %v, want offset 7 sent %d", f, ok, at.UnixNano())
	}
	uni := `{"channel":"bench","pub":{"data":` + string(data) + `,"offset":8}}`
	if f, ok := centrifugoPub([]byte(uni)); !ok || f.pos != 8 || f.sent != at.UnixNano() {
		t.Errorf("uni push: got %+v %v", f, ok)
	}
	if _, ok := centrifugoPub([]byte(`{"push":{"channel":"bench","pub":{"data":{"x":1}}}}`)); ok {
		t.Error("a publication without offset was read")
	}

	// A recovered subscription: its publications are events, in order,
	// and its start cursor is the one asked for.
	reply := `{"id":2,"subscribe":{"recoverable":true,"epoch":"ZquLIVaH","publications":[{"data":{"x":2},"offset":2},{"data":{"x":3},"offset":3}],"recovered":true,"offset":1,"positioned":true,"was_recovering":true}}`
	var m centrifugoReply
	if err := json.Unmarshal([]byte(reply), &m); err != nil || m.Subscribe == nil {
		t.Fatalf("reply: %v %+v", err, m)
	}
	d := &dialer{cf: &centrifugoState{}}
	s := &subscriber{dropAt: &d.dropAt}
	cursor := int64(1)
	signalled := false
	if err := s.centrifugoSubscribed(d, m.Subscribe, &cursor, func(error) { signalled = true }); err != nil {
		t.Fatal(err)
	}
	if !signalled || s.startCursor != 1 || len(s.positions) != 2 || s.positions[0] != 2 || s.positions[1] != 3 {
		t.Errorf("recovered: signalled %v, start %d, positions %v", signalled, s.startCursor, s.positions)
	}
	if d.cf.getEpoch() != "ZquLIVaH" {
		t.Errorf("epoch %q", d.cf.getEpoch())
	}

	// A wrong epoch: no recovered field. That is a failed resume, not a
	// subscription that silently starts live.
	bad := `{"id":2,"subscribe":{"recoverable":true,"epoch":"ZquLIVaH","offset":4,"positioned":true,"was_recovering":true}}`
	m = centrifugoReply{}
	if err := json.Unmarshal([]byte(bad), &m); err != nil {
		t.Fatal(err)
	}
	s = &subscriber{dropAt: &d.dropAt}
	err := s.centrifugoSubscribed(d, m.Subscribe, &cursor, func(error) {})
	if err == nil || !strings.Contains(err.Error(), "not recovered") {
		t.Errorf("unrecovered resume: %v", err)
	}
}

func TestCentrifugoConfigChecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Scenario: "fanout", Target: "nats"}, "target must be"},
		{Config{Scenario: "fanout", Target: TargetCentrifugo, Transports: []string{"grpc"}}, "ws and sse only"},
		{Config{Scenario: "publish", Target: TargetCentrifugo, Mode: "pipelined"}, "closed only"},
		{Config{Scenario: "fanout", Target: TargetCentrifugo, WSCodec: "proto"}, "json only"},
	} {
		tc.cfg.Addrs = []string{"127.0.0.1:8000"}
		tc.cfg.Defaults()
		if err := tc.cfg.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
