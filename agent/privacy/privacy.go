// Package privacy turns visitor identities into salted hashes, so raw IPs
// and visitor ids never leave the agent (ARCHITECTURE invariant 7).
//
// The salt of a period is HMAC-SHA256(secret, "tally-salt/v1:" + period
// label), where the label names the UTC day, ISO week or month of the
// event's time (or is the constant "never" for the period Never), so
// every agent of a deployment that shares the secret derives the same
// salt and the same visitor is one unique across regions. Hashes are
// SipHash-2-4 under that salt: a keyed pseudo-random function built for
// short inputs, fast enough for the per-event path, and not reversible
// without the secret.
package privacy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dchest/siphash"
)

// Period is how long one salt lives.
type Period string

// Supported salt periods. A longer period counts a returning visitor as one
// unique over a longer span, at the cost of a longer-lived linkable hash.
// Periods are UTC: a day starts at 00:00 UTC, a week on Monday 00:00 UTC
// (ISO 8601 weeks), a month on its first day.
const (
	Day   Period = "day"
	Week  Period = "week"
	Month Period = "month"
	// Never keeps one salt for the life of the deployment (derived from
	// the secret alone, until the secret changes): a visitor's hash is the
	// same on every day, so uniques over any span count a returning
	// visitor once, and the hash links that visitor's sketches forever.
	Never Period = "never"
)

// Validate reports an unknown period.
func (p Period) Validate() error {
	switch p {
	case Day, Week, Month, Never:
		return nil
	}
	return fmt.Errorf("salt period %q: want day, week, month or never", string(p))
}

// label names the period that contains t (UTC), e.g. "day:2026-11-22".
func (p Period) label(t time.Time) string {
	t = t.UTC()
	switch p {
	case Never:
		return "never"
	case Week:
		y, w := t.ISOWeek()
		return fmt.Sprintf("week:%04d-W%02d", y, w)
	case Month:
		return fmt.Sprintf("month:%04d-%02d", t.Year(), int(t.Month()))
	}
	return "day:" + t.Format("2006-01-02")
}

// Hasher derives salted visitor hashes. It is safe for concurrent use.
type Hasher struct {
	secret []byte
	period Period

	// last is the period most recently used: events come in time order
	// nearly always, so most lookups end here without a lock.
	last atomic.Pointer[periodKey]

	mu   sync.Mutex
	keys map[string][2]uint64 // period label → SipHash key
}

// periodKey is the SipHash key of the period [from, to) (unix ms).
type periodKey struct {
	from, to int64
	k0, k1   uint64
}

// maxCachedPeriods bounds the salt cache; late events may touch a few
// old periods, never many.
const maxCachedPeriods = 64

// NewHasher returns a Hasher for a deployment secret and salt period.
func NewHasher(secret string, period Period) (*Hasher, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("privacy secret must be at least 16 bytes, got %d", len(secret))
	}
	if err := period.Validate(); err != nil {
		return nil, err
	}
	return &Hasher{secret: []byte(secret), period: period, keys: make(map[string][2]uint64)}, nil
}

func (h *Hasher) key(unixMillis int64) (k0, k1 uint64) {
	if p := h.last.Load(); p != nil && p.from <= unixMillis && unixMillis < p.to {
		return p.k0, p.k1
	}
	t := time.UnixMilli(unixMillis).UTC()
	label := h.period.label(t)
	from, to := h.period.boundsMillis(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	k, ok := h.keys[label]
	if !ok {
		m := hmac.New(sha256.New, h.secret)
		m.Write([]byte("tally-salt/v1:" + label))
		sum := m.Sum(nil)
		k = [2]uint64{binary.LittleEndian.Uint64(sum[0:8]), binary.LittleEndian.Uint64(sum[8:16])}
		if len(h.keys) >= maxCachedPeriods {
			clear(h.keys)
		}
		h.keys[label] = k
	}
	h.last.Store(&periodKey{from: from, to: to, k0: k[0], k1: k[1]})
	return k[0], k[1]
}

// boundsMillis returns the period containing t as [from, to) in unix ms;
// Never covers every representable time.
func (p Period) boundsMillis(t time.Time) (from, to int64) {
	if p == Never {
		return math.MinInt64, math.MaxInt64
	}
	f, e := p.bounds(t)
	return f.UnixMilli(), e.UnixMilli()
}

// bounds returns the start and end of the period containing t (UTC).
func (p Period) bounds(t time.Time) (from, to time.Time) {
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch p {
	case Week:
		// ISO weeks start on Monday.
		from = day.AddDate(0, 0, -((int(day.Weekday()) + 6) % 7))
		return from, from.AddDate(0, 0, 7)
	case Month:
		from = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return from, from.AddDate(0, 1, 0)
	}
	return day, day.AddDate(0, 0, 1)
}

// Visitor hashes an explicit visitor id. The result is never 0.
func (h *Hasher) Visitor(unixMillis int64, id string) uint64 {
	k0, k1 := h.key(unixMillis)
	return nonZero(siphash.Hash(k0, k1, []byte("v\x00"+id)))
}

// Anonymous hashes (ip, ua, site) for a visitor without an id. The result
// is never 0.
func (h *Hasher) Anonymous(unixMillis int64, ip, ua, site string) uint64 {
	k0, k1 := h.key(unixMillis)
	var stack [512]byte
	buf := stack[:0]
	buf = append(buf, 'a', 0)
	buf = append(buf, ip...)
	buf = append(buf, 0)
	buf = append(buf, ua...)
	buf = append(buf, 0)
	buf = append(buf, site...)
	return nonZero(siphash.Hash(k0, k1, buf))
}

func nonZero(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}
