package sdnotify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen opens a unixgram socket like systemd's and returns its name and a
// function that reads one datagram (or "" after a timeout).
func listen(t *testing.T, name string) func(time.Duration) string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func(d time.Duration) string {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(d))
		n, err := conn.Read(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
}

func TestSendPathAndAbstract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	read := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	n := FromEnv()
	if !n.Enabled() {
		t.Fatal("not enabled with NOTIFY_SOCKET set")
	}
	if err := n.Send(Ready, Status("serving")); err != nil {
		t.Fatal(err)
	}
	if got := read(5 * time.Second); got != "READY=1\nSTATUS=serving\n" {
		t.Fatalf("datagram %q", got)
	}

	abstract := "tally-sdnotify-test-" + strconv.Itoa(os.Getpid())
	readAbs := listen(t, "\x00"+abstract)
	t.Setenv("NOTIFY_SOCKET", "@"+abstract)
	if err := FromEnv().Send(Stopping); err != nil {
		t.Fatal(err)
	}
	if got := readAbs(5 * time.Second); got != "STOPPING=1\n" {
		t.Fatalf("abstract datagram %q", got)
	}
}

func TestDisabledIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := FromEnv()
	if n.Enabled() {
		t.Fatal("enabled without NOTIFY_SOCKET")
	}
	if err := n.Send(Ready); err != nil {
		t.Fatal(err)
	}
	var nilN *Notifier
	if err := nilN.Send(Ready); err != nil || nilN.Enabled() {
		t.Fatal("nil notifier must be a no-op")
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	if got := WatchdogInterval(); got != 30*time.Second {
		t.Fatalf("interval %v", got)
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if got := WatchdogInterval(); got != 0 {
		t.Fatalf("interval for another pid %v", got)
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("WATCHDOG_USEC", "junk")
	if got := WatchdogInterval(); got != 0 {
		t.Fatalf("interval from junk %v", got)
	}
}

// The watchdog pings while the check passes, withholds the ping while it
// fails, and pings unconditionally once serving has ended.
func TestRunWatchdog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	read := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	n := FromEnv()

	var healthy atomic.Bool
	healthy.Store(true)
	var failures atomic.Int32
	serving, endServing := context.WithCancel(context.Background())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.RunWatchdog(serving, stop, 150*time.Millisecond, func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("wedged")
		}, func(error) { failures.Add(1) })
	}()
	if got := read(5 * time.Second); !strings.Contains(got, Watchdog) {
		t.Fatalf("no ping while healthy: %q", got)
	}
	healthy.Store(false)
	// Drain pings sent before the switch, then expect silence while the
	// check fails.
	for read(100*time.Millisecond) != "" {
	}
	for failures.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if got := read(300 * time.Millisecond); got != "" {
		t.Fatalf("pinged while the check failed: %q", got)
	}
	endServing()
	if got := read(5 * time.Second); !strings.Contains(got, Watchdog) {
		t.Fatalf("no ping during shutdown: %q", got)
	}
	close(stop)
	<-done
}
