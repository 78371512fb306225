package limits_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/limits"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestDefaultsValid(t *testing.T) {
	t.Parallel()
	if err := limits.Defaults().Validate(); err != nil {
		t.Fatalf("Defaults().Validate() = %v", err)
	}
	if err := (limits.Limits{}).Validate(); err != nil {
		t.Fatalf("zero Limits (no limits) should be valid: %v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*limits.Limits)
		want string
	}{
		{"negative instance", func(l *limits.Limits) { l.MaxConnectionsPerInstance = -1 }, "MaxConnectionsPerInstance"},
		{"negative user", func(l *limits.Limits) { l.MaxConnectionsPerUser = -1 }, "MaxConnectionsPerUser"},
		{"negative subs", func(l *limits.Limits) { l.MaxSubscriptionsPerConnection = -1 }, "MaxSubscriptionsPerConnection"},
		{"negative channels", func(l *limits.Limits) { l.MaxChannelsPerRequest = -1 }, "MaxChannelsPerRequest"},
		{"NaN rate", func(l *limits.Limits) { l.PublishPerConnection.PerSecond = math.NaN() }, "PublishPerConnection"},
		{"inf rate", func(l *limits.Limits) { l.PublishPerUser.PerSecond = math.Inf(1) }, "PublishPerUser"},
		{"negative rate", func(l *limits.Limits) { l.PublishPerUser.PerSecond = -1 }, "PublishPerUser"},
		{"zero burst", func(l *limits.Limits) { l.PublishPerConnection.Burst = 0 }, "Burst"},
		{"no key cap", func(l *limits.Limits) { l.MaxTrackedUsers = 0 }, "MaxTrackedUsers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := limits.Defaults()
			tt.edit(&l)
			err := l.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v; want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestChecks(t *testing.T) {
	t.Parallel()
	l := limits.Defaults()
	l.MaxSubscriptionsPerConnection = 3
	l.MaxChannelsPerRequest = 2
	tests := []struct {
		name   string
		err    error
		target error
		action limits.Action
	}{
		{"subs under", l.CheckSubscriptions(1, 2), nil, 0},
		{"subs over", l.CheckSubscriptions(2, 2), limits.ErrTooManySubscriptions, limits.ActionUnsubscribe},
		{"subs adding none", l.CheckSubscriptions(5, 0), nil, 0},
		{"channels at", l.CheckChannels(2), nil, 0},
		{"channels over", l.CheckChannels(3), limits.ErrTooManyChannels, limits.ActionSplitRequest},
		{"unlimited", limits.Limits{}.CheckChannels(1 << 20), nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.target == nil {
				if tt.err != nil {
					t.Fatalf("err = %v; want nil", tt.err)
				}
				return
			}
			var le *limits.Error
			if !errors.Is(tt.err, tt.target) || !errors.As(tt.err, &le) || le.Action != tt.action {
				t.Fatalf("err = %#v; want %v with action %v", tt.err, tt.target, tt.action)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err        *limits.Error
		is         error
		text       string
		retryAfter string
	}{
		{&limits.Error{Limit: limits.LimitConnectionsPerUser, Max: 50, Action: limits.ActionCloseConnections},
			limits.ErrTooManyConnections, "close some", ""},
		{&limits.Error{Limit: limits.LimitConnectionsPerInstance, Max: 9, Action: limits.ActionRetryLater},
			limits.ErrTooManyConnections, "backoff", ""},
		{&limits.Error{Limit: limits.LimitPublishPerUser, Max: 4, Action: limits.ActionRetryLater, RetryAfter: 1500 * time.Millisecond},
			limits.ErrRateLimited, "retry after 1.5s", "2"},
		{&limits.Error{Limit: limits.LimitPublishPerConnection, Max: 4, Action: limits.ActionRetryLater, RetryAfter: time.Millisecond},
			limits.ErrRateLimited, "this connection", "1"},
		{&limits.Error{Limit: limits.LimitPublishPerConnection, Max: 4, Action: limits.ActionSplitRequest},
			limits.ErrRateLimited, "at most 4 events", ""},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.is) {
			t.Errorf("%v: not %v", tt.err, tt.is)
		}
		for _, other := range []error{limits.ErrTooManyConnections, limits.ErrRateLimited, limits.ErrTooManySubscriptions, limits.ErrTooManyChannels} {
			if other != tt.is && errors.Is(tt.err, other) {
				t.Errorf("%v: also matches %v", tt.err, other)
			}
		}
		if !strings.Contains(tt.err.Error(), tt.text) {
			t.Errorf("Error() = %q; want it to contain %q", tt.err.Error(), tt.text)
		}
		if got := tt.err.RetryAfterHeader(); got != tt.retryAfter {
			t.Errorf("%v: RetryAfterHeader() = %q; want %q", tt.err, got, tt.retryAfter)
		}
	}
}

func TestCheckPublish(t *testing.T) {
	t.Parallel()
	l := limits.Limits{
		PublishPerConnection: limits.Rate{PerSecond: 10, Burst: 5},
		PublishPerUser:       limits.Rate{PerSecond: 1, Burst: 2},
		MaxTrackedUsers:      10,
	}
	conn, users := l.NewConnectionBucket(), l.NewUserBuckets()
	for i := range 2 {
		if err := limits.CheckPublish(t0, conn, users, "u", 1); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	err := limits.CheckPublish(t0, conn, users, "u", 1)
	var le *limits.Error
	if !errors.As(err, &le) || le.Limit != limits.LimitPublishPerUser || le.RetryAfter != time.Second {
		t.Fatalf("third publish: %#v; want the per-user limit with RetryAfter 1s", err)
	}
	// The user's refusals gave back the connection's tokens: 3 left of 5.
	if !conn.AllowN(t0, 3) || conn.Allow(t0) {
		t.Fatal("connection bucket was charged for refused publishes")
	}
	err = limits.CheckPublish(t0, conn, nil, "", 1)
	if !errors.As(err, &le) || le.Limit != limits.LimitPublishPerConnection || le.RetryAfter != 100*time.Millisecond {
		t.Fatalf("got %#v; want the per-connection limit with RetryAfter 100ms", err)
	}
	err = limits.CheckPublish(t0, nil, users, "v", 3)
	if !errors.As(err, &le) || le.Action != limits.ActionSplitRequest {
		t.Fatalf("batch over burst: %#v; want ActionSplitRequest", err)
	}
}
