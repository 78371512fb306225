package services_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/services"
)

// TestSessionRefusesAfterExpiry: once a session's credential expired, and
// until the transport has closed it, commands are refused: nothing is
// published or subscribed on an expired token.
func TestSessionRefusesAfterExpiry(t *testing.T) {
	tok := userToken(t, 1100*time.Millisecond, jwt.MapClaims{"publish": []string{"room"}, "subscribe": []string{"room"}})
	id, err := testAuthn(t).Authenticate(tok)
	if err != nil {
		t.Fatal(err)
	}
	log := eventlog.NewMemory(eventlog.Options{AutoCreate: true})
	hub := runHub(t, log)

	var mu sync.Mutex
	var got []*heraldv1.ConnectResponse
	svc := newApp(t, log, hub, services.Config{})
	sess := svc.StartSession(auth.NewContext(context.Background(), id), func(m *heraldv1.ConnectResponse) error {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		return nil
	})
	defer sess.Close()

	select {
	case <-sess.Expired():
	case <-time.After(5 * time.Second):
		t.Fatal("not expired")
	}
	if !id.Expired(time.Now()) {
		t.Fatal("identity not expired yet")
	}
	sess.Handle(&heraldv1.ConnectRequest{Id: "p", Command: &heraldv1.ConnectRequest_Publish{
		Publish: &heraldv1.PublishRequest{Channel: "room", Data: []byte("after expiry")}}})
	sess.Handle(&heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
		Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"room"}, Cursor: new(int64)}}})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		var published, subscribed bool
		for _, m := range got {
			published = published || m.Id == "p" && m.GetPublished() != nil
			subscribed = subscribed || m.Id == "s" && m.GetSubscribed() != nil
		}
		mu.Unlock()
		if published && subscribed {
			t.Errorf("with the credential expired %v ago, the session still committed a publish and opened a subscription", time.Since(id.Expires()).Round(time.Millisecond))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
