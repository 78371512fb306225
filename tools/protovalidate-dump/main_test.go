package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
)

// TestRoundTrip checks that the printed validate.proto compiles back to the
// embedded descriptor and that the committed copy is up to date.
func TestRoundTrip(t *testing.T) {
	fd := validatepb.File_buf_validate_validate_proto
	src, err := render(fd, moduleVersion())
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(fd, src); err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join("..", "..", "third_party", "protovalidate", filepath.FromSlash(fd.Path())))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, src) {
		t.Fatal("third_party/protovalidate/buf/validate/validate.proto is stale: run `make generate`")
	}
}
