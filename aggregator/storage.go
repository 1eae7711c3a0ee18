package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/influx"
)

// storageSetup runs influx.Reader.Setup at start: it checks the InfluxDB
// the node is given (reachable, version, query language, database and
// retention policy) and creates what is missing when allowed. A
// temporary failure (InfluxDB unreachable or answering 5xx) is retried,
// and /readyz says what the node waits for, in the SetupError's words; a
// failure that needs the operator ends the process with that message,
// which names the setting to change.
type storageSetup struct {
	reader *influx.Reader
	url    string
	create bool
	log    *slog.Logger
	info   *prometheus.GaugeVec

	mu      sync.Mutex
	waiting error // nil once set up
}

func newStorageSetup(reader *influx.Reader, cfg influx.Config, create bool, reg prometheus.Registerer, logger *slog.Logger) *storageSetup {
	s := &storageSetup{reader: reader, url: cfg.URL, create: create, log: logger.With("component", "storage"),
		waiting: fmt.Errorf("checking InfluxDB at %s", cfg.URL),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_aggregator_storage_info",
			Help: "1 once the node has checked its InfluxDB: the version it reports, the query language the node reads with, and the bucket."},
			[]string{"version", "query_language", "bucket"})}
	reg.MustRegister(s.info)
	return s
}

// run sets up the storage, retrying temporary failures with a backoff of
// 1 s growing to 10 s, until it succeeds, fails for good, or ctx ends.
func (s *storageSetup) run(ctx context.Context) (influx.ServerInfo, error) {
	var last string
	for attempt := 0; ; attempt++ {
		info, err := s.reader.Setup(ctx, s.create)
		if err == nil {
			s.setWaiting(nil)
			s.info.WithLabelValues(info.Version, info.QueryLanguage, info.Bucket).Set(1)
			s.log.Info("storage ready", "influxdb", info.String(), "version", info.Version, "query_language", info.QueryLanguage,
				"bucket", info.Bucket, "created", info.Created)
			return info, nil
		}
		var serr *influx.SetupError
		if !errors.As(err, &serr) || !serr.Temporary {
			s.setWaiting(err)
			return info, fmt.Errorf("storage: %w", err)
		}
		s.setWaiting(err)
		if msg := err.Error(); msg != last || attempt%10 == 0 {
			s.log.Warn("waiting for InfluxDB", "err", msg, "attempt", attempt+1)
			last = msg
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("storage: %w (%v)", ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 10*time.Second)):
		}
	}
}

func (s *storageSetup) setWaiting(err error) {
	s.mu.Lock()
	s.waiting = err
	s.mu.Unlock()
}

// ready is /readyz's check: what the storage setup waits for, if
// anything, else next (the pipeline's own readiness).
func (s *storageSetup) ready(next func() error) func() error {
	return func() error {
		s.mu.Lock()
		err := s.waiting
		s.mu.Unlock()
		if err != nil {
			return err
		}
		return next()
	}
}
