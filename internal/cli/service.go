package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/tally-edge/tally/internal/reload"
	"github.com/tally-edge/tally/internal/sdnotify"
)

// Service reports the daemon's life to systemd when systemd started it
// with Type=notify: READY=1 once the daemon serves, WATCHDOG=1 while its
// health check passes (when the unit sets WatchdogSec=), STOPPING=1 when a
// graceful shutdown begins. Outside systemd every method does nothing.
type Service struct {
	notifier *sdnotify.Notifier
	logger   *slog.Logger
	stop     chan struct{}
	once     sync.Once
	stopping sync.Once // STOPPING=1 is sent once, by whichever comes first
	wg       sync.WaitGroup

	// Set by Main: what ReloadSource needs.
	configPath string
	requests   <-chan struct{}
	level      *reload.Level
	status     atomic.Value // string: the last READY=1's STATUS=
}

func newService(logger *slog.Logger) *Service {
	return &Service{notifier: sdnotify.FromEnv(), logger: logger, stop: make(chan struct{})}
}

// Ready tells systemd the daemon serves, and starts feeding the watchdog
// with health as its check for as long as ctx (the daemon's serving
// context) lives; after that the watchdog is fed unconditionally until the
// process is done, so a slow graceful shutdown is bounded by
// TimeoutStopSec and not cut short by the watchdog. Call it at most once.
func (s *Service) Ready(ctx context.Context, status string, health func(context.Context) error) {
	if s == nil || !s.notifier.Enabled() {
		return
	}
	s.status.Store(status)
	if err := s.notifier.Send(sdnotify.Ready, sdnotify.Status(status)); err != nil {
		s.logger.Warn("cannot notify systemd", "err", err)
		return
	}
	if timeout := sdnotify.WatchdogInterval(); timeout > 0 {
		s.logger.Info("systemd watchdog enabled", "timeout", timeout)
		s.wg.Go(func() {
			s.notifier.RunWatchdog(ctx, s.stop, timeout, health, func(err error) {
				s.logger.Warn("health check failed; withholding the systemd watchdog ping", "err", err)
			})
		})
	}
	go func() {
		select {
		case <-ctx.Done():
			s.notifyStopping()
		case <-s.stop:
		}
	}()
}

// notifyStopping tells systemd a shutdown began, once: when the serving
// context ends, or at the latest when the process is about to exit (a
// shutdown can finish before the goroutine watching the context runs).
func (s *Service) notifyStopping() {
	s.stopping.Do(func() { _ = s.notifier.Send(sdnotify.Stopping, sdnotify.Status("shutting down")) })
}

// ReloadSource returns the reloads of the daemon svc runs: one per SIGHUP,
// each reading the configuration file again with load, the log level Main
// set up, and systemd told RELOADING=1 and then READY=1 around each.
func ReloadSource[C any](svc *Service, load func(path string) (C, error)) reload.Source[C] {
	if svc == nil || svc.requests == nil {
		return reload.Source[C]{}
	}
	return reload.Source[C]{Requests: svc.requests, Level: svc.level,
		Load:   func() (C, error) { return load(svc.configPath) },
		Notify: svc.reloading}
}

// reloading tells systemd a reload began or ended.
func (s *Service) reloading(on bool) {
	if !s.notifier.Enabled() {
		return
	}
	var err error
	if on {
		err = s.notifier.Send(sdnotify.Reloading, sdnotify.MonotonicUsec(), sdnotify.Status("reloading the configuration"))
	} else {
		status, _ := s.status.Load().(string)
		err = s.notifier.Send(sdnotify.Ready, sdnotify.Status(status))
	}
	if err != nil {
		s.logger.Warn("cannot notify systemd", "err", err)
	}
}

// close tells systemd the daemon is stopping (if nothing did yet) and
// stops the watchdog; the process is about to exit.
func (s *Service) close() {
	s.notifyStopping()
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// HealthzCheck returns a check that GETs /healthz of the HTTP listener at
// addr (as the daemon reported it once listening) over loopback, with
// HTTPS when useTLS. The daemon's own certificate is not verified: the
// check asks the process itself whether it still serves, not the network.
func HealthzCheck(addr string, useTLS bool) func(context.Context) error {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			if ip != nil && ip.To4() == nil {
				host = "::1"
			} else {
				host = "127.0.0.1"
			}
		}
		addr = net.JoinHostPort(host, port)
	}
	scheme := "http"
	tr := &http.Transport{DisableKeepAlives: true}
	if useTLS {
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // self check of this very process
	}
	client := &http.Client{Transport: tr}
	url := scheme + "://" + addr + "/healthz"
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}
