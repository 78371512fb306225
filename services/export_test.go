package services

import (
	"context"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// Test hooks: drive a session command by command, without a transport, as
// Serve's reader does.

// StartSession opens a session whose frames go to send, with its expiry
// clock running, but no reader: the test calls Handle.
func (a *App) StartSession(ctx context.Context, send func(*heraldv1.ConnectResponse) error) *Session {
	ss, err := a.NewSession(ctx, nil)
	if err != nil {
		panic(err)
	}
	ss.send = func(f *Frame) error { return send(f.Proto()) }
	ss.startExpiry()
	return ss
}

// Handle runs one command.
func (ss *Session) Handle(req *heraldv1.ConnectRequest) { ss.handle(req) }

// Close ends the session and frees its slot.
func (ss *Session) Close() { ss.Discard() }

// Expired is closed when the session's credential expired unrefreshed.
func (ss *Session) Expired() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		<-ss.ctx.Done()
		if ss.expired.Load() {
			close(ch)
		}
	}()
	return ch
}

// SubscribeServerChannels subscribes the token's channels after cursor.
func (ss *Session) SubscribeServerChannels(cursor *int64) {
	ss.cursor = cursor
	ss.subscribeServerChannels()
}
