package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// version overrides the module version reported by "herald version", for
// builds that know better than the Go toolchain (a release script):
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/herald
var version string

// revision is the source revision for builds the toolchain records none
// for (-buildvcs=false, a git worktree): scripts/image sets it with
// -ldflags "-X main.revision=...".
var revision string

// buildInfo is the binary's build information, with revision filled in
// when the toolchain recorded none.
func buildInfo() *debug.BuildInfo {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		info = &debug.BuildInfo{}
	}
	if revision == "" {
		return info
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return info
		}
	}
	info.Settings = append(info.Settings, debug.BuildSetting{Key: "vcs.revision", Value: revision})
	return info
}

func printVersion(args []string, stdout io.Writer) error {
	fs := newFlags("version", "", "Print the version of herald, the source revision it was built from (and whether\nthat tree had uncommitted changes) and the Go version.", stdout)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.usage("takes no arguments, got %q", fs.Args())
	}
	_, err := fmt.Fprintln(stdout, versionString(buildInfo(), version))
	return err
}

// versionString describes a build: the module version (or override), the
// VCS revision, its time and whether the tree was modified, as recorded by
// the Go toolchain. go build in a git clone records the revision; go run,
// go test, -buildvcs=false and builds in a git worktree do not.
func versionString(info *debug.BuildInfo, override string) string {
	v := override
	var rev, at, goVersion string
	modified := false
	if info != nil {
		if v == "" {
			v = info.Main.Version
		}
		goVersion = info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(unknown)"
	}
	details := []string{"revision " + rev}
	switch {
	case rev == "":
		details[0] = "revision unknown (built without VCS information: go run, -buildvcs=false, or outside a git clone)"
	case modified:
		details[0] += " (modified: the tree had uncommitted changes)"
	}
	if at != "" {
		details = append(details, "committed "+at)
	}
	if goVersion != "" {
		details = append(details, goVersion)
	}
	return "herald " + v + ", " + strings.Join(details, ", ")
}

// buildVersion returns the version and the VCS revision of this build
// (for metrics and the instance registry); "" for what is unknown.
func buildVersion() (string, string) {
	v := version
	var rev string
	info := buildInfo()
	if v == "" {
		v = info.Main.Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			rev = s.Value
		}
	}
	return v, rev
}
