// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): a daemon started by a unit with Type=notify says READY=1
// once it serves, RELOADING=1 and READY=1 around a configuration reload,
// STOPPING=1 when it begins to shut down, and, when the
// unit sets WatchdogSec=, sends WATCHDOG=1 more often than that, or is
// killed and restarted.
//
// The protocol is one datagram of newline-separated KEY=VALUE lines to the
// unix socket named by $NOTIFY_SOCKET (a path, or an abstract socket when
// it starts with "@"). It is small enough that a dependency would cost
// more than these lines; without $NOTIFY_SOCKET every call is a no-op, so
// the same binary runs unchanged outside systemd.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Messages understood by systemd.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
	// Reloading says a configuration reload began; READY=1 says it
	// ended. Send it with MonotonicUsec: systemctl reload then waits
	// for the reload to finish.
	Reloading = "RELOADING=1"
)

// MonotonicUsec is the MONOTONIC_USEC= line systemd wants beside
// RELOADING=1: CLOCK_MONOTONIC now, in microseconds.
func MonotonicUsec() string { return "MONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10) }

// Notifier sends notifications to the service manager. The zero value and
// a nil *Notifier send nothing. Safe for concurrent use.
type Notifier struct {
	socket string
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET; Enabled reports false
// when the variable is unset (the process was not started by systemd with
// Type=notify).
func FromEnv() *Notifier {
	return &Notifier{socket: os.Getenv("NOTIFY_SOCKET")}
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Send sends the given KEY=VALUE lines as one datagram. It returns nil
// without doing anything when the Notifier is not enabled.
func (n *Notifier) Send(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	name := n.socket
	if name[0] == '@' {
		name = "\x00" + name[1:] // Linux abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: dial %s: %w", n.socket, err)
	}
	defer conn.Close()
	msg := ""
	for _, l := range lines {
		msg += l + "\n"
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify: send: %w", err)
	}
	return nil
}

// Status is a STATUS= line: free text systemctl status shows.
func Status(text string) string { return "STATUS=" + text }

// WatchdogInterval returns the watchdog timeout systemd asked for
// ($WATCHDOG_USEC, for this process when $WATCHDOG_PID names it), or 0
// when there is none.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// RunWatchdog sends WATCHDOG=1 every timeout/3 for as long as check
// passes, until stop is closed. While serving (serving not yet done),
// check decides: a failing check withholds the ping, so a process whose
// HTTP server has wedged is killed and restarted by systemd. Once serving
// is done (graceful shutdown has begun) it pings without checking, since
// the servers are closing on purpose and TimeoutStopSec bounds the stop.
// failed is called with each check error (for a log line); it may be nil.
func (n *Notifier) RunWatchdog(serving context.Context, stop <-chan struct{}, timeout time.Duration,
	check func(context.Context) error, failed func(error)) {
	if !n.Enabled() || timeout <= 0 {
		return
	}
	every := timeout / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		ok := true
		if serving.Err() == nil {
			cctx, cancel := context.WithTimeout(serving, every)
			if err := check(cctx); err != nil && serving.Err() == nil {
				ok = false
				if failed != nil {
					failed(err)
				}
			}
			cancel()
		}
		if ok {
			_ = n.Send(Watchdog)
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}
