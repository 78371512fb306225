package services

import (
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
)

func channelProto(c eventlog.Channel) *heraldv1.Channel {
	p := &heraldv1.Channel{
		Name: c.Name,
		Settings: &heraldv1.ChannelSettings{
			MaxEvents:    &c.Settings.MaxEvents,
			MaxAge:       durationpb.New(c.Settings.MaxAge),
			MaxEventSize: &c.Settings.MaxEventSize,
		},
		TruncatedThrough: c.TruncatedThrough,
	}
	if !c.CreatedAt.IsZero() {
		p.CreateTime = timestamppb.New(c.CreatedAt)
	}
	if !c.UpdatedAt.IsZero() {
		p.UpdateTime = timestamppb.New(c.UpdatedAt)
	}
	return p
}

func settingsPatch(s *heraldv1.ChannelSettings) eventlog.SettingsPatch {
	var p eventlog.SettingsPatch
	if s == nil {
		return p
	}
	p.MaxEvents = s.MaxEvents
	p.MaxEventSize = s.MaxEventSize
	if s.MaxAge != nil {
		d := s.MaxAge.AsDuration()
		p.MaxAge = &d
	}
	return p
}
