package influxtest

import "syscall"

// sysProcAttr asks the kernel to kill influxd when the test process dies
// (a test binary killed by -timeout runs no cleanup), so no server outlives
// its test run on a shared machine. Linux sends the signal when the OS
// thread that started the child exits, which Go does only for a goroutine
// that exits while locked to its thread: never call Launch from one.
//
// It also puts influxd in a process group of its own, so a Ctrl-C in the
// terminal reaches only the parent, which stops its clients first and the
// database last (otherwise the aggregator's final write finds it gone).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
