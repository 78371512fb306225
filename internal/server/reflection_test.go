package server_test

import (
	"slices"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestReflectionListsEveryService: what grpcurl list shows is every
// service the server answers (Herald's, health, reflection itself), and
// each can be described (grpcurl describe).
func TestReflectionListsEveryService(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	client := grpcreflect.NewClient(h2cClient(), in.base, connect.WithGRPC())
	stream := client.NewStream(t.Context())
	t.Cleanup(func() { _, _ = stream.Close() })
	got, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []protoreflect.FullName{
		"grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
		"herald.v1.ChannelService",
		"herald.v1.EventService",
		"herald.v1.HistoryService",
		"herald.v1.PresenceService",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("reflection lists\n%v\nwant\n%v", got, want)
	}
	for _, name := range want {
		files, err := stream.FileContainingSymbol(name)
		if err != nil || len(files) == 0 {
			t.Fatalf("describe %s: %d files, %v", name, len(files), err)
		}
	}
}
