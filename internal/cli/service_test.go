package cli

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthzCheck(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	// A daemon listening on every address is asked over loopback.
	check := HealthzCheck("0.0.0.0:"+port, false)
	if err := check(context.Background()); err != nil {
		t.Fatal(err)
	}
	healthy.Store(false)
	if err := check(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("unhealthy: %v", err)
	}
	if err := HealthzCheck("127.0.0.1:1", false)(context.Background()); err == nil {
		t.Fatal("nothing listening: no error")
	}
}

func TestServiceOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	s := newService(nil)
	// No socket: Ready must neither fail nor start anything.
	s.Ready(context.Background(), "x", func(context.Context) error { t.Fatal("checked outside systemd"); return nil })
	s.close()
	s.close() // twice is fine
	var nilSvc *Service
	nilSvc.Ready(context.Background(), "x", nil)
}

// TestStoppingSentOnFastShutdown: a daemon whose shutdown ends as soon as
// its serving context does still tells systemd STOPPING=1, exactly once,
// whichever of the context watcher and close runs first.
func TestStoppingSentOnFastShutdown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "")
	for i := range 40 {
		s := newService(slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		s.Ready(ctx, "serving", nil)
		cancel()
		s.close()
		var got []string
		buf := make([]byte, 4096)
		for {
			if err := conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			got = append(got, strings.Split(string(buf[:n]), "\n")[0])
		}
		if want := []string{"READY=1", "STOPPING=1"}; !slices.Equal(got, want) {
			t.Fatalf("round %d: notifications %q, want %q", i, got, want)
		}
	}
}
