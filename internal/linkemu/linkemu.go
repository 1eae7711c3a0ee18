// Package linkemu emulates a long, thin, lossy network path for tests: a
// UDP relay on loopback that gives each direction a bottleneck rate, a
// queue with tail drop, random loss, and a one-way delay with jitter, and
// that can cut the path altogether.
//
// It exists because the machines the tests run on have no netem qdisc;
// everything happens in this process, so the tests need neither root nor
// network namespaces, and a seed makes the loss pattern repeatable (for a
// given sequence of datagrams).
//
// A datagram going one way meets, in order:
//
//  1. the cut: while the link is cut, everything is dropped;
//  2. the bottleneck queue: it leaves the queue after every datagram ahead
//     of it has been serialised at Rate (counting 28 bytes of IPv4 and UDP
//     headers per datagram, as a real link carries them); one that would
//     wait longer than MaxQueue is dropped at the tail, as a router with
//     a queue of MaxQueue would;
//  3. random loss with probability Loss (it has used the bottleneck's
//     capacity: lost on the far side of it);
//  4. the delay: Delay plus a uniform jitter in [-Jitter, +Jitter], never
//     overtaking the datagram before it (the path keeps order, so jitter
//     stretches gaps rather than reordering).
//
// Bytes offered (what the sender put on the link) and the fate of each
// datagram are counted per direction in Stats.
package linkemu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// HeaderBytes is what the emulated link adds to a UDP payload: IPv4 (20)
// and UDP (8) headers. Rates count it.
const HeaderBytes = 28

// Path is one direction of the link.
type Path struct {
	// Rate is the bottleneck's capacity in bits per second; 0: unlimited.
	Rate int64
	// Delay is the one-way delay every datagram gets after the
	// bottleneck.
	Delay time.Duration
	// Jitter spreads Delay uniformly over [Delay-Jitter, Delay+Jitter]
	// (order kept).
	Jitter time.Duration
	// Loss is the probability, in [0, 1), that a datagram is lost.
	Loss float64
	// MaxQueue is the longest a datagram may wait for the bottleneck
	// before the queue drops it; default 2 s. Only used with a Rate.
	MaxQueue time.Duration
}

// Config describes a link.
type Config struct {
	// Listen is the address clients send to; default "127.0.0.1:0".
	Listen string
	// Upstream is the address the relay forwards to.
	Upstream string
	// Up is the path from clients to Upstream, Down the way back.
	Up, Down Path
	// Seed makes the loss and jitter of each direction repeatable.
	Seed uint64
}

// PathStats counts one direction's datagrams.
type PathStats struct {
	// Datagrams and Bytes are what senders offered to the link (UDP
	// payload bytes; add HeaderBytes per datagram for what a real link
	// carries).
	Datagrams, Bytes uint64
	// Delivered counts datagrams that reached the other side.
	Delivered uint64
	// Lost, QueueDropped and CutDropped count datagrams dropped by
	// random loss, by the full bottleneck queue, and while cut.
	Lost, QueueDropped, CutDropped uint64
}

// Stats counts both directions.
type Stats struct {
	Up, Down PathStats
}

// Link is a running emulated link.
type Link struct {
	ln       *net.UDPConn
	upstream *net.UDPAddr
	up, down *direction

	mu       sync.Mutex
	sessions map[string]*net.UDPConn // per client address
	closed   bool
	wg       sync.WaitGroup
}

// Start opens the link's listening socket and starts relaying.
func Start(cfg Config) (*Link, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	for _, p := range []Path{cfg.Up, cfg.Down} {
		if err := p.validate(); err != nil {
			return nil, err
		}
	}
	upAddr, err := net.ResolveUDPAddr("udp", cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("linkemu: upstream: %w", err)
	}
	laddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen: %w", err)
	}
	ln, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen: %w", err)
	}
	l := &Link{ln: ln, upstream: upAddr, sessions: map[string]*net.UDPConn{},
		up:   newDirection(cfg.Up, cfg.Seed),
		down: newDirection(cfg.Down, cfg.Seed^0x5bd1e995)}
	l.wg.Go(l.up.run)
	l.wg.Go(l.down.run)
	l.wg.Go(l.serve)
	return l, nil
}

func (p Path) validate() error {
	switch {
	case p.Rate < 0:
		return fmt.Errorf("linkemu: rate %d must not be negative", p.Rate)
	case p.Loss < 0 || p.Loss >= 1:
		return fmt.Errorf("linkemu: loss %v must be in [0, 1)", p.Loss)
	case p.Delay < 0 || p.Jitter < 0 || p.Jitter > p.Delay:
		return fmt.Errorf("linkemu: delay %v and jitter %v: want 0 <= jitter <= delay", p.Delay, p.Jitter)
	case p.MaxQueue < 0:
		return fmt.Errorf("linkemu: max queue %v must not be negative", p.MaxQueue)
	}
	return nil
}

// Addr is the address clients send to.
func (l *Link) Addr() string { return l.ln.LocalAddr().String() }

// SetCut cuts the link (both ways, datagrams already in flight
// included) or restores it.
func (l *Link) SetCut(cut bool) {
	l.up.setCut(cut)
	l.down.setCut(cut)
}

// SetPaths changes both directions' conditions from now on.
func (l *Link) SetPaths(up, down Path) error {
	for _, p := range []Path{up, down} {
		if err := p.validate(); err != nil {
			return err
		}
	}
	l.up.setPath(up)
	l.down.setPath(down)
	return nil
}

// Stats returns the counters so far.
func (l *Link) Stats() Stats { return Stats{Up: l.up.stats(), Down: l.down.stats()} }

// Close stops relaying and closes every socket. Datagrams still queued
// are dropped.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.ln.Close()
	for _, s := range l.sessions {
		s.Close()
	}
	l.mu.Unlock()
	l.up.close()
	l.down.close()
	l.wg.Wait()
	return err
}

// serve reads what clients send and queues it on the up path, with one
// upstream socket per client so answers find their way back.
func (l *Link) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, client, err := l.ln.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s := l.session(client)
		if s == nil {
			return
		}
		l.up.send(buf[:n], func(b []byte) { _, _ = s.Write(b) })
	}
}

// session returns the upstream socket of client, opening it (and the
// goroutine relaying its answers) on first use; nil once closed.
func (l *Link) session(client *net.UDPAddr) *net.UDPConn {
	key := client.String()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if s := l.sessions[key]; s != nil {
		return s
	}
	s, err := net.DialUDP("udp", nil, l.upstream)
	if err != nil {
		return nil
	}
	l.sessions[key] = s
	l.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			l.down.send(buf[:n], func(b []byte) { _, _ = l.ln.WriteToUDP(b, client) })
		}
	})
	return s
}

// direction is one way of the link: the bottleneck's schedule, the
// datagrams on their way, and a goroutine that delivers them when due.
type direction struct {
	mu       sync.Mutex
	path     Path
	rng      *rand.Rand
	cut      bool
	freeAt   time.Time // when the bottleneck has sent everything queued
	lastDue  time.Time // delivery time of the last datagram queued
	queue    []datagram
	wake     chan struct{} // capacity 1
	done     chan struct{}
	counters PathStats
}

type datagram struct {
	due     time.Time
	data    []byte
	deliver func([]byte)
}

func newDirection(p Path, seed uint64) *direction {
	return &direction{path: p, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (d *direction) setCut(cut bool) {
	d.mu.Lock()
	d.cut = cut
	d.mu.Unlock()
}

func (d *direction) setPath(p Path) {
	d.mu.Lock()
	d.path = p
	d.mu.Unlock()
}

func (d *direction) stats() PathStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counters
}

func (d *direction) close() { close(d.done) }

// send schedules one datagram (copying b) or drops it.
func (d *direction) send(b []byte, deliver func([]byte)) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.counters.Datagrams++
	d.counters.Bytes += uint64(len(b))
	if d.cut {
		d.counters.CutDropped++
		return
	}
	depart := now
	if p := d.path; p.Rate > 0 {
		start := now
		if d.freeAt.After(start) {
			start = d.freeAt
		}
		maxQueue := p.MaxQueue
		if maxQueue == 0 {
			maxQueue = 2 * time.Second
		}
		if start.Sub(now) > maxQueue {
			d.counters.QueueDropped++
			return
		}
		bits := int64(len(b)+HeaderBytes) * 8
		d.freeAt = start.Add(time.Duration(bits * int64(time.Second) / p.Rate))
		depart = d.freeAt
	}
	if d.path.Loss > 0 && d.rng.Float64() < d.path.Loss {
		d.counters.Lost++
		return
	}
	due := depart.Add(d.path.Delay)
	if j := d.path.Jitter; j > 0 {
		due = due.Add(time.Duration(d.rng.Int64N(int64(2*j)+1)) - j)
	}
	if due.Before(d.lastDue) {
		due = d.lastDue
	}
	d.lastDue = due
	d.queue = append(d.queue, datagram{due: due, data: append([]byte(nil), b...), deliver: deliver})
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run delivers queued datagrams when they are due, in order.
func (d *direction) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d.mu.Lock()
		var next datagram
		var wait time.Duration = time.Hour
		have := false
		if len(d.queue) > 0 {
			if wait = time.Until(d.queue[0].due); wait <= 0 {
				next, have = d.queue[0], true
				d.queue[0] = datagram{}
				d.queue = d.queue[1:]
				if d.cut {
					d.counters.CutDropped++
					have = false
				} else {
					d.counters.Delivered++
				}
				wait = 0
			}
		}
		d.mu.Unlock()
		if have {
			next.deliver(next.data)
		}
		if wait == 0 {
			continue
		}
		t.Reset(wait)
		select {
		case <-d.done:
			return
		case <-d.wake:
			t.Stop() // since Go 1.23 a stopped timer delivers nothing stale
		case <-t.C:
		}
	}
}
