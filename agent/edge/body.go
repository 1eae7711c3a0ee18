package edge

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

var (
	// ErrTooLarge is a body over the route's limit (HTTP 413).
	ErrTooLarge = errors.New("body too large")
	// ErrBusy is a body that would take the bytes in flight over their
	// bound (HTTP 503).
	ErrBusy = errors.New("too many request bytes in flight")
)

// reserveStep is how much ReadBody reserves at a time when the request
// does not say its length.
const reserveStep = 64 << 10

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Body is a request body read into a pooled buffer and counted against an
// InFlight bound until Release.
type Body struct {
	Bytes    []byte
	reserved int64
	inflight *InFlight
	buf      *[]byte
}

// Release returns the buffer to the pool and the bytes to the bound.
// Bytes must not be used after; calling Release twice does nothing.
func (b *Body) Release() {
	if b.buf == nil {
		return
	}
	b.inflight.Release(b.reserved)
	if cap(b.Bytes) <= 16<<20 {
		*b.buf = b.Bytes[:0]
		bodyPool.Put(b.buf)
	}
	b.buf, b.Bytes, b.reserved = nil, nil, 0
}

// ReadBody reads r's body, at most limit bytes, reserving them in f as it
// goes: all at once when the request states its length, else in steps.
// It fails with ErrTooLarge beyond limit and ErrBusy when f has no room;
// either way nothing stays reserved. The caller must Release the Body.
func ReadBody(r *http.Request, limit int64, f *InFlight) (*Body, error) {
	if r.ContentLength > limit {
		return nil, ErrTooLarge
	}
	bp := bodyPool.Get().(*[]byte)
	b := &Body{Bytes: (*bp)[:0], inflight: f, buf: bp}
	if r.ContentLength > 0 {
		// One extra byte to notice a body longer than announced.
		if !f.Acquire(r.ContentLength + 1) {
			b.Release()
			return nil, ErrBusy
		}
		b.reserved = r.ContentLength + 1
	}
	for {
		if int64(len(b.Bytes)) >= b.reserved {
			step := min(int64(reserveStep), limit+1-b.reserved)
			if !f.Acquire(step) {
				b.Release()
				return nil, ErrBusy
			}
			b.reserved += step
		}
		if len(b.Bytes) == cap(b.Bytes) {
			b.Bytes = append(b.Bytes, 0)[:len(b.Bytes)]
		}
		room := min(int64(cap(b.Bytes)), b.reserved)
		n, err := r.Body.Read(b.Bytes[len(b.Bytes):room])
		b.Bytes = b.Bytes[:len(b.Bytes)+n]
		if int64(len(b.Bytes)) > limit {
			b.Release()
			return nil, ErrTooLarge
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			b.Release()
			return nil, err
		}
	}
}
