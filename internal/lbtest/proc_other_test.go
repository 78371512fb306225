//go:build !linux

package lbtest_test

import "syscall"

// childAttr: only Linux can tie a child's life to the test process; the
// test's cleanups stop the children elsewhere.
func childAttr() *syscall.SysProcAttr { return nil }
