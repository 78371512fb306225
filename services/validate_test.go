package services_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/services"
)

// Refusals of bad names say what a valid one is, once per field, and never
// quote a regular expression.
func TestValidationMessagesSayWhatIsValid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		msg  proto.Message
		want []string
	}{
		{&heraldv1.PublishRequest{Channel: "bad name"}, []string{"channel: a channel name is 1 to 128 characters", "e.g. chat:room-42"}},
		{&heraldv1.PublishRequest{}, []string{"channel: a channel name is 1 to 128"}},
		{&heraldv1.PublishRequest{Channel: "a", Type: "has space"}, []string{"type: an event type is up to 64 characters"}},
		{&heraldv1.SubscribeRequest{Channels: []string{"ok", "-bad"}}, []string{"channels[1]: a channel name"}},
		{&heraldv1.SubscribeRequest{}, []string{"channels: must contain at least 1 item"}},
		{&heraldv1.CreateChannelRequest{Name: "x y"}, []string{"name: a channel name"}},
	} {
		err := services.Validate(tc.msg)
		if err == nil {
			t.Fatalf("%v accepted", tc.msg)
		}
		got := err.Error()
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%v: %q, want it to say %q", tc.msg, got, w)
			}
		}
		for _, bad := range []string{"regex", "`^", "1 characters", "item(s)"} {
			if strings.Contains(got, bad) {
				t.Errorf("%v: %q says %q", tc.msg, got, bad)
			}
		}
		if strings.Count(got, "channel name is") > strings.Count(got, ";")+1 {
			t.Errorf("%v: the same rule twice: %q", tc.msg, got)
		}
	}
}
