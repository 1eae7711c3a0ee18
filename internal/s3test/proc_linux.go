package s3test

import "syscall"

// sysProcAttr asks the kernel to kill weed when the test process dies (a
// test binary killed by -timeout runs no cleanup), and puts it in a
// process group of its own so a terminal's Ctrl-C reaches only the test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
