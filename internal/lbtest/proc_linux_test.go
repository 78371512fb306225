package lbtest_test

import "syscall"

// childAttr makes the kernel kill a child (herald, nginx) when the test
// process dies, so a crashed or killed test leaves nothing listening.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
