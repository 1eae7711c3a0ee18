package cli

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
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
