package aggregator

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/internal/reload"
)

// ReloadableKeys are the configuration keys a reload (SIGHUP) puts in
// force in a running node: API tokens, JWT keys and settings, the sign-in
// links secret and lifetimes, and the log level. The certificate files
// (quic.cert/key, http.tls_cert/key) are read again too, under the same
// names; a change to any other key is logged and waits for a restart.
var ReloadableKeys = []string{"auth", "log_level"}

// identities are the node's certificates, each read again when its files
// change.
type identities struct {
	quic *pki.Identity
	http *pki.Identity // nil without http.tls_cert
}

func loadIdentities(cfg config.Config) (identities, error) {
	var ids identities
	var err error
	if ids.quic, err = pki.LoadIdentity("quic.cert", cfg.QUIC.Cert, cfg.QUIC.Key); err != nil {
		return ids, err
	}
	if cfg.HTTP.TLSCert != "" {
		if ids.http, err = pki.LoadIdentity("http.tls_cert", cfg.HTTP.TLSCert, cfg.HTTP.TLSKey); err != nil {
			return ids, fmt.Errorf("http tls: %w", err)
		}
	}
	return ids, nil
}

// watch checks every certificate's files each interval (0: never) until
// ctx ends.
func (ids identities) watch(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	var wg sync.WaitGroup
	for _, id := range []*pki.Identity{ids.quic, ids.http} {
		if id != nil {
			wg.Go(func() { id.Watch(ctx, interval, logger) })
		}
	}
	wg.Wait()
}

// newReloader returns the node's reloader: each reload prepares the
// authenticator and the certificates from the new file and commits them
// together, or none.
func newReloader(src reload.Source[config.Config], ids identities, authn *auth.Authenticator,
	reg prometheus.Registerer, logger *slog.Logger) *reload.Reloader[config.Config] {
	return &reload.Reloader[config.Config]{
		Source:     src,
		Metrics:    reload.NewMetrics(reg, "tally_aggregator"),
		Logger:     logger,
		LogLevel:   func(c config.Config) string { return c.LogLevel },
		Reloadable: reload.Keys(ReloadableKeys...),
		Apply: func(cfg config.Config) error {
			var steps reload.Steps
			authCfg, err := cfg.Auth.AuthConfig()
			if err == nil {
				commit, perr := authn.Prepare(authCfg)
				steps.Add("auth", commit, perr)
			} else {
				steps.Add("auth", nil, err)
			}
			// Certificates named by the file the node started with: a new
			// path waits for a restart (and is named as such).
			for _, id := range []*pki.Identity{ids.quic, ids.http} {
				if id != nil {
					commit, err := id.Prepare()
					steps.Add(id.Name(), commit, err)
				}
			}
			return steps.Commit()
		},
	}
}
