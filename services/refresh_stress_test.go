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

// TestRefreshCloseStress: refreshes that revoke subscriptions, racing
// streaming, publishing and Close, under -race: no race, deadlock or leak.
func TestRefreshCloseStress(t *testing.T) {
	authn := testAuthn(t)
	sign := func(claims jwt.MapClaims) string { return userToken(t, time.Hour, claims) }
	wide := sign(jwt.MapClaims{"subscribe": []string{">"}, "publish": []string{">"}, "channels": []string{"user:{sub}"}})
	narrow := sign(jwt.MapClaims{"subscribe": []string{"a"}, "publish": []string{"a"}})
	id, err := authn.Authenticate(wide)
	if err != nil {
		t.Fatal(err)
	}
	log := eventlog.NewMemory(eventlog.Options{AutoCreate: true})
	hub := runHub(t, log)
	svc := newApp(t, log, hub, services.Config{Auth: authn})

	stopPub := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() {
		for {
			select {
			case <-stopPub:
				return
			default:
			}
			_, _, _ = log.Append(context.Background(), []eventlog.Publish{{Channel: "a", Data: []byte("x")}, {Channel: "b", Data: []byte("y")}, {Channel: "user:ann", Data: []byte("z")}})
			time.Sleep(100 * time.Microsecond)
		}
	})
	defer func() { close(stopPub); pwg.Wait() }()

	for i := 0; i < 200; i++ {
		sess := svc.StartSession(auth.NewContext(context.Background(), id), func(*heraldv1.ConnectResponse) error { return nil })
		sess.SubscribeServerChannels(new(int64))
		for _, ch := range []string{"a", "b"} {
			sess.Handle(&heraldv1.ConnectRequest{Id: ch, Command: &heraldv1.ConnectRequest_Subscribe{
				Subscribe: &heraldv1.SubscribeRequest{Channels: []string{ch}, Cursor: new(int64)}}})
		}
		done := make(chan struct{}, 2)
		go func() {
			sess.Handle(&heraldv1.ConnectRequest{Id: "p", Command: &heraldv1.ConnectRequest_Publish{
				Publish: &heraldv1.PublishRequest{Channel: "b", Data: []byte("p")}}})
			sess.Handle(&heraldv1.ConnectRequest{Id: "r", Command: &heraldv1.ConnectRequest_Refresh{Refresh: &heraldv1.RefreshCommand{Token: narrow}}})
			sess.Handle(&heraldv1.ConnectRequest{Id: "r2", Command: &heraldv1.ConnectRequest_Refresh{Refresh: &heraldv1.RefreshCommand{Token: wide}}})
			done <- struct{}{}
		}()
		go func() {
			if i%2 == 0 {
				time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
			}
			sess.Close()
			done <- struct{}{}
		}()
		for range 2 {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("iteration %d: refresh/Close deadlocked", i)
			}
		}
		sess.Close()
	}
}
