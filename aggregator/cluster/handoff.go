package cluster

import (
	"context"
	"log/slog"
	"time"
)

// Membership is what a handoff follows (*Cluster).
type Membership interface {
	// Name is this node's name.
	Name() string
	// View is the current membership.
	View() View
	// Changes receives a value after membership changes (coalesced).
	Changes() <-chan struct{}
}

// Rebuilder is the merge pipeline's side of a handoff (ingest.Pipeline).
type Rebuilder interface {
	// TakeOver rebuilds the open minutes of the campaigns owns selects
	// from storage and marks them to be written again.
	TakeOver(ctx context.Context, owns func(campaign string) bool) (int, error)
	// DropForeign forgets the clean minutes of the campaigns foreign
	// selects.
	DropForeign(foreign func(campaign string) bool) int
}

// HandoffConfig tunes RunHandoff.
type HandoffConfig struct {
	// Settle is the delay after a membership change before the node
	// rebuilds the campaigns it gained, so the previous owner's last
	// writes land first.
	Settle time.Duration
	// RetryMax caps the backoff between failed rebuilds (default 10s).
	RetryMax time.Duration
	// TookOver, if set, is called after every successful rebuild with the
	// number of contribution points loaded.
	TookOver func(points int)
	Logger   *slog.Logger
}

// RunHandoff follows membership until ctx is done. Once at start and
// after every change, each time after Settle, it compares the current
// view with the one it last handled: it rebuilds the campaigns this node
// gained (owned now, not then) from storage, retrying until that works,
// and then forgets the clean minutes of campaigns it does not own. The
// pass at start treats the node as owning nothing before: a node that
// restarts rebuilds everything it owns, since between its own rebuild
// and rejoining, interim owners went on writing its campaigns. Changes
// that arrive during the settle delay are handled together.
func RunHandoff(ctx context.Context, m Membership, r Rebuilder, cfg HandoffConfig) {
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	changes := m.Changes()
	self := m.Name()
	var prev View // owns nothing: the first pass takes over everything owned
	for {
		if !sleep(ctx, cfg.Settle) {
			return
		}
		// Changes seen during the settle delay are part of this pass.
		select {
		case <-changes:
		default:
		}
		cur := m.View()
		if cur.Epoch != prev.Epoch {
			gained := func(campaign string) bool {
				return cur.Owner(campaign).Name == self && prev.Owner(campaign).Name != self
			}
			start := time.Now()
			for attempt := 1; ; attempt++ {
				n, err := r.TakeOver(ctx, gained)
				if err == nil {
					log.Info("took over campaigns", "contribution_points", n, "members", len(cur.Members),
						"took", time.Since(start).Round(time.Millisecond))
					if cfg.TookOver != nil {
						cfg.TookOver(n)
					}
					break
				}
				if ctx.Err() != nil {
					return
				}
				log.Warn("rebuilding gained campaigns failed; retrying", "reason", "takeover_failed", "err", err, "attempt", attempt)
				if !sleep(ctx, min(time.Duration(attempt)*time.Second, cfg.RetryMax)) {
					return
				}
			}
			dropped := r.DropForeign(func(campaign string) bool { return cur.Owner(campaign).Name != self })
			log.Debug("forgot minutes of campaigns owned elsewhere", "minutes", dropped)
			prev = cur
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
