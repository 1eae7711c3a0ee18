package linkemu

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo starts a UDP server on loopback that sends every datagram back.
func echo(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = c.WriteToUDP(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().String()
}

func start(t *testing.T, cfg Config) (*Link, *net.UDPConn) {
	t.Helper()
	l, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, err := net.Dial("udp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c.(*net.UDPConn)
}

// numbered numbers a payload of size bytes.
func numbered(i, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

// receive reads echoes until none comes for quiet, returning their
// numbers and arrival times.
func receive(t *testing.T, c *net.UDPConn, quiet time.Duration) (seqs []int, at []time.Time) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(quiet))
		n, err := c.Read(buf)
		if err != nil {
			return seqs, at
		}
		if n >= 4 {
			seqs = append(seqs, int(binary.BigEndian.Uint32(buf)))
			at = append(at, time.Now())
		}
	}
}

// TestRateAndTailDrop: a burst into a 64 kbit/s path with a 2 s queue
// comes out at 64 kbit/s, and what would wait longer than 2 s is dropped
// at the tail.
func TestRateAndTailDrop(t *testing.T) {
	const size = 1000 - HeaderBytes // 1000 bytes on the link: 125 ms at 64 kbit/s
	l, c := start(t, Config{Upstream: echo(t), Up: Path{Rate: 64_000, MaxQueue: 2 * time.Second}})
	for i := range 60 {
		if _, err := c.Write(numbered(i, size)); err != nil {
			t.Fatal(err)
		}
	}
	seqs, at := receive(t, c, time.Second)
	st := l.Stats()
	// Datagram k waits k*125 ms for the bottleneck: 0..16 fit in 2 s
	// (one more if the burst took a moment to write).
	if n := len(seqs); n < 17 || n > 18 {
		t.Fatalf("%d datagrams came through, want 17 or 18 (stats %+v)", n, st)
	}
	if st.Up.QueueDropped != uint64(60-len(seqs)) || st.Up.Delivered != uint64(len(seqs)) || st.Up.Datagrams != 60 {
		t.Fatalf("stats %+v, %d came through", st, len(seqs))
	}
	for i, s := range seqs {
		if s != i {
			t.Fatalf("datagram %d came through as number %d: the queue reorders or drops from its head", s, i)
		}
	}
	// k datagrams after the first take k*125 ms.
	span := at[len(at)-1].Sub(at[0])
	want := time.Duration(len(seqs)-1) * 125 * time.Millisecond
	if span < want-50*time.Millisecond || span > want+250*time.Millisecond {
		t.Fatalf("%d datagrams of 1000 bytes came through over %v, want about %v at 64 kbit/s", len(seqs), span, want)
	}
}

// TestDelayJitterAndOrder: every round trip takes the two delays, give or
// take the jitter, and jitter never reorders.
func TestDelayJitterAndOrder(t *testing.T) {
	p := Path{Delay: 100 * time.Millisecond, Jitter: 30 * time.Millisecond}
	_, c := start(t, Config{Upstream: echo(t), Up: p, Down: p, Seed: 3})
	sent := map[int]time.Time{}
	for i := range 50 {
		sent[i] = time.Now()
		if _, err := c.Write(numbered(i, 100)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	seqs, at := receive(t, c, time.Second)
	if len(seqs) != 50 {
		t.Fatalf("%d of 50 came back without loss configured", len(seqs))
	}
	var minRTT, maxRTT time.Duration = time.Hour, 0
	for i, s := range seqs {
		if s != i {
			t.Fatalf("datagram %d arrived in place %d: jitter reordered", s, i)
		}
		rtt := at[i].Sub(sent[s])
		minRTT, maxRTT = min(minRTT, rtt), max(maxRTT, rtt)
	}
	// 200 ms ± 60 ms of jitter; scheduling adds a little on a busy machine.
	if minRTT < 140*time.Millisecond || maxRTT > 400*time.Millisecond {
		t.Fatalf("round trips %v to %v, want within 140-260 ms (plus scheduling)", minRTT, maxRTT)
	}
	if maxRTT-minRTT < 10*time.Millisecond {
		t.Fatalf("round trips %v to %v: no jitter", minRTT, maxRTT)
	}
}

// TestLossIsNearItsRateAndRepeatable: 10 % loss each way drops about 19 %
// of round trips, and the same seed drops the same datagrams.
func TestLossIsNearItsRateAndRepeatable(t *testing.T) {
	run := func(seed uint64) (map[int]bool, Stats) {
		p := Path{Loss: 0.10}
		l, c := start(t, Config{Upstream: echo(t), Up: p, Down: p, Seed: seed})
		// Read while writing, or the socket buffers overflow.
		got := make(chan []int)
		go func() {
			seqs, _ := receive(t, c, 500*time.Millisecond)
			got <- seqs
		}()
		for i := range 2000 {
			if _, err := c.Write(numbered(i, 50)); err != nil {
				t.Fatal(err)
			}
			if i%10 == 9 {
				time.Sleep(time.Millisecond) // paced: loopback drops what a busy reader misses
			}
		}
		seqs := <-got
		back := map[int]bool{}
		for _, s := range seqs {
			back[s] = true
		}
		return back, l.Stats()
	}
	a, st := run(42)
	b, _ := run(42)
	c, _ := run(43)
	// Up: binomial(2000, 0.1), mean 200, sd 13.4.
	if st.Up.Lost < 140 || st.Up.Lost > 260 || st.Down.Lost < 120 || st.Down.Lost > 240 {
		t.Fatalf("lost %d up and %d down of 2000, want about 200 and 180", st.Up.Lost, st.Down.Lost)
	}
	if len(a) != int(st.Up.Delivered-st.Down.Lost) {
		t.Fatalf("%d came back, stats say %d", len(a), st.Up.Delivered-st.Down.Lost)
	}
	if len(a) != len(b) {
		t.Fatalf("same seed: %d and %d came back", len(a), len(b))
	}
	for s := range a {
		if !b[s] {
			t.Fatalf("same seed: datagram %d came back once only", s)
		}
	}
	same := 0
	for s := range a {
		if c[s] {
			same++
		}
	}
	if same == len(a) && len(a) == len(c) {
		t.Fatal("another seed lost exactly the same datagrams")
	}
}

// TestCut: nothing passes while cut, datagrams in flight included, and
// everything does again once restored.
func TestCut(t *testing.T) {
	p := Path{Delay: 200 * time.Millisecond}
	l, c := start(t, Config{Upstream: echo(t), Up: p, Down: p})
	if _, err := c.Write(numbered(1, 10)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	l.SetCut(true) // datagram 1 is on its way up
	if _, err := c.Write(numbered(2, 10)); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := receive(t, c, 600*time.Millisecond); len(seqs) != 0 {
		t.Fatalf("datagrams %v came through a cut link", seqs)
	}
	l.SetCut(false)
	if _, err := c.Write(numbered(3, 10)); err != nil {
		t.Fatal(err)
	}
	seqs, _ := receive(t, c, time.Second)
	if len(seqs) != 1 || seqs[0] != 3 {
		t.Fatalf("after restoring, got %v, want [3]", seqs)
	}
	if st := l.Stats(); st.Up.CutDropped != 2 {
		t.Fatalf("stats %+v, want 2 dropped by the cut on the way up", st)
	}
}

func TestRejectsImpossiblePaths(t *testing.T) {
	for _, p := range []Path{{Rate: -1}, {Loss: 1}, {Loss: -0.1}, {Delay: time.Second, Jitter: 2 * time.Second}, {MaxQueue: -1}} {
		if _, err := Start(Config{Upstream: "127.0.0.1:9", Up: p}); err == nil {
			t.Errorf("path %+v accepted", p)
		}
	}
}
