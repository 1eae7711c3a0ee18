package auth

import (
	"context"
	"net/http"
	"sync/atomic"
)

// UntilRevoked returns r with a context that also ends when p is revoked
// by a configuration reload (Principal.Revoked), for long requests such as
// streams; revoked reports whether that is why it ended. Call stop when
// the request is done.
func UntilRevoked(r *http.Request, p *Principal) (_ *http.Request, revoked func() bool, stop func()) {
	rv := p.Revoked()
	if rv == nil {
		return r, func() bool { return false }, func() {}
	}
	ctx, cancel := context.WithCancel(r.Context())
	var hit atomic.Bool
	go func() {
		select {
		case <-rv:
			hit.Store(true)
			cancel()
		case <-ctx.Done():
		}
	}()
	return r.WithContext(ctx), hit.Load, cancel
}
