package ship_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/agent/deadletter"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Every test runs the shipper, the spool's checkpoint goroutine and the
// fake aggregator in a synctest bubble: backoffs, busy waits and send
// timeouts run on the fake clock, and synctest.Wait says when everything
// that can happen has happened. No test sleeps on the real clock.

const (
	agentName = "agent-eu-1"
	region    = "eu-west"
)

var discard = slog.New(slog.DiscardHandler)

// spooled is what the test committed: the payload and contributions of
// every seq. The shipper reads it while the test commits, hence mu.
type spooled struct {
	sp *spool.Spool

	mu       sync.Mutex
	payloads map[uint64][]byte
	contribs map[uint64][]wire.Contribution
	lastCID  uint64
	// members, when set before a flush is committed, names each batch's
	// owner, as the Batcher does.
	members []wire.Member
}

// openSpool opens a spool in a temporary directory and commits flushes of
// perFlush contributions split into batches of perBatch, like the
// collector does.
func openSpool(t *testing.T, flushes, perFlush, perBatch int) *spooled {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), spool.Config{MaxBytes: 16 << 20}, discard)
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	s := &spooled{sp: sp, payloads: map[uint64][]byte{}, contribs: map[uint64][]wire.Contribution{}, lastCID: 1 << 32}
	for range flushes {
		s.commitFlush(t, perFlush, perBatch)
	}
	return s
}

// commitFlush commits n contributions in batches of perBatch.
func (s *spooled) commitFlush(t *testing.T, n, perBatch int) {
	t.Helper()
	cs := make([]wire.Contribution, n)
	for i := range cs {
		var st sketch.State
		st.Count = uint64(i + 1)
		st.AddVisitor(uint64(i+1) * 0x9e3779b97f4a7c15)
		enc, err := st.Encode()
		if err != nil {
			t.Fatal(err)
		}
		s.lastCID++
		cs[i] = wire.Contribution{
			Series: sketch.Series{Campaign: fmt.Sprintf("c%d", i), Type: "click", Region: region},
			Minute: 1_700_000_040, CID: s.lastCID, Version: 1, State: enc,
		}
	}
	var batches []spool.Batch
	var groups [][]wire.Contribution
	for i := 0; i < n; i += perBatch {
		g := cs[i:min(i+perBatch, n)]
		b, err := wire.EncodeContributions(g)
		if err != nil {
			t.Fatal(err)
		}
		owner, _ := wire.Owner(s.members, g[0].Series.Campaign)
		batches = append(batches, spool.Batch{Owner: owner.Name, Payload: b})
		groups = append(groups, g)
	}
	s.commit(t, batches, groups)
}

// commitPayloads commits raw payloads that are not contributions.
func (s *spooled) commitPayloads(t *testing.T, payloads [][]byte) []uint64 {
	t.Helper()
	batches := make([]spool.Batch, len(payloads))
	for i, p := range payloads {
		batches[i] = spool.Batch{Payload: p}
	}
	return s.commit(t, batches, nil)
}

// commit records what the seqs will hold, then commits: the shipper may
// send a batch before Commit has returned. Only the test commits, so the
// seqs are NextSeq on.
func (s *spooled) commit(t *testing.T, batches []spool.Batch, groups [][]wire.Contribution) []uint64 {
	t.Helper()
	first := s.sp.Stats().NextSeq
	s.mu.Lock()
	for i, b := range batches {
		s.payloads[first+uint64(i)] = b.Payload
		if groups != nil {
			s.contribs[first+uint64(i)] = groups[i]
		}
	}
	s.mu.Unlock()
	seqs, err := s.sp.Commit(batches, spool.CommitMeta{})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if len(seqs) != len(batches) || (len(seqs) > 0 && seqs[0] != first) {
		t.Fatalf("Commit gave seqs %v, want %d from %d", seqs, len(batches), first)
	}
	return seqs
}

func (s *spooled) payload(seq uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.payloads[seq]
}

func (s *spooled) want(seq uint64) ([]wire.Contribution, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contribs[seq]
	return c, ok
}

// sent is one Send the fake aggregator received.
type sent struct {
	conn    int
	addr    string
	seq     uint64
	attempt int // earlier sends of the same seq
}

type dial struct {
	addr string
	at   time.Time
	ok   bool
}

// fakeAgg is the aggregator side: a Dialer whose Senders answer as the
// test scripts them. It checks that every batch carries the agent, region,
// protocol version and the contributions committed under its seq.
type fakeAgg struct {
	t   *testing.T
	exp *spooled

	// dialErr, if set, fails dial number n (0-based).
	dialErr func(n int, addr string) error
	// answer, if set, answers a send; nil means AckOK. block makes Send
	// wait for its context instead.
	answer func(s sent) (*wire.Ack, error)
	block  bool

	mu     sync.Mutex
	dials  []dial
	sends  []sent
	closed []int // conn ids
}

func (f *fakeAgg) dial(ctx context.Context, addr string) (ship.Sender, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.dials)
	if f.dialErr != nil {
		if err := f.dialErr(n, addr); err != nil {
			f.dials = append(f.dials, dial{addr: addr, at: time.Now()})
			return nil, err
		}
	}
	f.dials = append(f.dials, dial{addr: addr, at: time.Now(), ok: true})
	return &fakeConn{agg: f, id: n, addr: addr}, nil
}

type fakeConn struct {
	agg    *fakeAgg
	id     int
	addr   string
	broken bool // guarded by agg.mu
}

// errBroken is a connection failure: the fake connection that returns it
// fails every later send too.
var errBroken = errors.New("connection broken")

func (c *fakeConn) Send(ctx context.Context, b *wire.Batch) (*wire.Ack, error) {
	// A real stream fails at once on a dead context.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := c.agg
	f.check(b)
	f.mu.Lock()
	if c.broken {
		// Like a dead QUIC connection: nothing reaches the aggregator.
		f.mu.Unlock()
		return nil, errBroken
	}
	s := sent{conn: c.id, addr: c.addr, seq: b.Seq}
	for _, p := range f.sends {
		if p.seq == b.Seq {
			s.attempt++
		}
	}
	f.sends = append(f.sends, s)
	answer, block := f.answer, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if answer == nil {
		return ok(b.Seq), nil
	}
	ack, err := answer(s)
	if errors.Is(err, errBroken) {
		f.mu.Lock()
		c.broken = true
		f.mu.Unlock()
	}
	return ack, err
}

func (c *fakeConn) Close() error {
	c.agg.mu.Lock()
	c.agg.closed = append(c.agg.closed, c.id)
	c.agg.mu.Unlock()
	return nil
}

func ok(seq uint64) *wire.Ack {
	return &wire.Ack{Version: wire.ProtocolVersion, Seq: seq, Status: wire.AckOK}
}

// check reports a batch that does not carry what was committed under its
// seq. It runs on the shipper's goroutines, so it uses Errorf.
func (f *fakeAgg) check(b *wire.Batch) {
	if b.Version != wire.ProtocolVersion || b.Agent != agentName || b.Region != region {
		f.t.Errorf("batch %d: version %d agent %q region %q, want %d %q %q",
			b.Seq, b.Version, b.Agent, b.Region, wire.ProtocolVersion, agentName, region)
	}
	want, found := f.exp.want(b.Seq)
	if !found {
		f.t.Errorf("batch with seq %d, which was never committed as contributions", b.Seq)
		return
	}
	if len(b.Contributions) != len(want) {
		f.t.Errorf("batch %d has %d contributions, want %d", b.Seq, len(b.Contributions), len(want))
		return
	}
	for i, c := range b.Contributions {
		if c.CID != want[i].CID || c.Version != want[i].Version || c.Series != want[i].Series ||
			c.State.Count != want[i].State.Count || !bytes.Equal(c.State.HLL, want[i].State.HLL) {
			f.t.Errorf("batch %d contribution %d differs from the committed one", b.Seq, i)
		}
	}
}

func (f *fakeAgg) snapshot() ([]dial, []sent, []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dials), slices.Clone(f.sends), slices.Clone(f.closed)
}

// sendsOf returns the sends of seq.
func sendsOf(sends []sent, seq uint64) []sent {
	var out []sent
	for _, s := range sends {
		if s.seq == seq {
			out = append(out, s)
		}
	}
	return out
}

// newShipper returns a shipper over exp's spool and agg's dialer, with
// small backoffs. cfg may adjust its config.
func newShipper(t *testing.T, exp *spooled, agg *fakeAgg, cfg func(*ship.Config)) (*ship.Shipper, *prometheus.Registry) {
	t.Helper()
	dead, err := deadletter.Open(deadletter.Config{Dir: filepath.Join(t.TempDir(), "dead"), MaxBatches: 100, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := ship.Config{Agent: agentName, Region: region, Addrs: []string{"agg-1:7400"}, InFlight: 1,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 80 * time.Millisecond, SendTimeout: 5 * time.Second,
		DeadLetters: dead, SpoolName: "live"}
	if cfg != nil {
		cfg(&c)
	}
	reg := prometheus.NewRegistry()
	return ship.New(c, exp.sp, agg.dial, reg, discard), reg
}

// run starts sh.Run and returns a function that cancels it and returns its
// result.
func run(sh *ship.Shipper) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// metric returns the value of a counter or gauge, selected by its one
// label value ("" for none).
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// checkAllAcked fails unless every committed batch is acked.
func checkAllAcked(t *testing.T, sp *spool.Spool) {
	t.Helper()
	st := sp.Stats()
	if st.PendingBatches != 0 || st.InflightBatches != 0 || st.AckedTotal != st.CommittedTotal {
		t.Fatalf("spool: %d pending, %d in flight, %d of %d acked; want everything acked",
			st.PendingBatches, st.InflightBatches, st.AckedTotal, st.CommittedTotal)
	}
}

func TestShipsEveryBatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, inFlight := range []int{1, 4} {
		t.Run(fmt.Sprintf("inflight=%d", inFlight), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				exp := openSpool(t, 3, 10, 3) // 3 flushes of 4 batches
				defer exp.sp.Close()
				agg := &fakeAgg{t: t, exp: exp}
				sh, reg := newShipper(t, exp, agg, func(c *ship.Config) { c.InFlight = inFlight })
				stop := run(sh)

				synctest.Wait()
				checkAllAcked(t, exp.sp)
				if !sh.Connected() {
					t.Fatalf("Connected() = false while serving")
				}
				// Batches committed while the shipper waits go out too.
				exp.commitFlush(t, 5, 2)
				synctest.Wait()
				checkAllAcked(t, exp.sp)

				if err := stop(); err != nil {
					t.Fatalf("Run = %v, want nil", err)
				}
				if sh.Connected() {
					t.Fatalf("Connected() = true after Run returned")
				}
				dials, sends, closed := agg.snapshot()
				committed := exp.sp.Stats().CommittedTotal
				if committed != 15 || uint64(len(sends)) != committed {
					t.Fatalf("%d sends for %d committed batches (want 15, each once)", len(sends), committed)
				}
				for seq := uint64(1); seq <= committed; seq++ {
					if n := len(sendsOf(sends, seq)); n != 1 {
						t.Fatalf("batch %d sent %d times, want once", seq, n)
					}
				}
				if len(dials) != 1 || len(closed) != 1 {
					t.Fatalf("%d dials and %d closes, want one of each", len(dials), len(closed))
				}
				if got := metric(t, reg, "tally_agent_batches_sent_total", "ok"); got != 15 {
					t.Fatalf("ok sends metric %v, want 15", got)
				}
				if got := metric(t, reg, "tally_agent_connects_total", ""); got != 1 {
					t.Fatalf("connects metric %v, want 1", got)
				}
			})
		})
	}
}

func TestBusyIsRetriedAndNotAckedBeforeOK(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 2, 1) // seqs 1 and 2
		defer exp.sp.Close()
		const retry = 50 * time.Millisecond
		agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
			if s.seq == 1 && s.attempt < 2 {
				return &wire.Ack{Version: wire.ProtocolVersion, Seq: s.seq, Status: wire.AckBusy,
					Reason: "wal full", RetryAfterMillis: retry.Milliseconds()}, nil
			}
			return ok(s.seq), nil
		}}
		sh, reg := newShipper(t, exp, agg, nil)
		stop := run(sh)
		defer stop()

		for want := 1; want <= 2; want++ {
			synctest.Wait() // the shipper is waiting out the busy answer
			if st := exp.sp.Stats(); st.AckedTotal != 0 || st.PendingBatches != 2 {
				t.Fatalf("after %d busy answers: %d acked, %d pending; want nothing acked", want, st.AckedTotal, st.PendingBatches)
			}
			if _, sends, _ := agg.snapshot(); len(sends) != want {
				t.Fatalf("%d sends after %d busy answers; the retry came early or not at all", len(sends), want)
			}
			time.Sleep(retry) // jitter keeps the wait in [retry/2, retry)
		}
		synctest.Wait()
		checkAllAcked(t, exp.sp)

		_, sends, _ := agg.snapshot()
		if n := len(sendsOf(sends, 1)); n != 3 {
			t.Fatalf("batch 1 sent %d times, want 3 (busy, busy, ok)", n)
		}
		if n := len(sendsOf(sends, 2)); n != 1 {
			t.Fatalf("batch 2 sent %d times, want once", n)
		}
		if got := metric(t, reg, "tally_agent_batches_sent_total", "busy"); got != 2 {
			t.Fatalf("busy metric %v, want 2", got)
		}
		// Busy is the aggregator's backpressure, not a broken connection.
		if dials, _, _ := agg.snapshot(); len(dials) != 1 {
			t.Fatalf("%d dials, want 1: a busy answer must not reconnect", len(dials))
		}
	})
}

func TestSendErrorRedialsAndResends(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, inFlight := range []int{1, 4} {
		t.Run(fmt.Sprintf("inflight=%d", inFlight), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				exp := openSpool(t, 2, 6, 2) // seqs 1..6
				defer exp.sp.Close()
				// The first send of batch 3 breaks the connection.
				agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
					if s.seq == 3 && s.attempt == 0 {
						return nil, errBroken
					}
					return ok(s.seq), nil
				}}
				sh, reg := newShipper(t, exp, agg, func(c *ship.Config) { c.InFlight = inFlight })
				stop := run(sh)
				defer stop()

				synctest.Wait() // connection 0 broke; the shipper backs off
				if sh.Connected() {
					t.Fatalf("Connected() = true after the connection broke")
				}
				if st := exp.sp.Stats(); st.InflightBatches != 0 {
					t.Fatalf("%d batches still in flight on a broken connection", st.InflightBatches)
				}
				time.Sleep(time.Second) // well past BackoffMax
				synctest.Wait()
				checkAllAcked(t, exp.sp)

				dials, sends, closed := agg.snapshot()
				if len(dials) != 2 || !dials[0].ok || !dials[1].ok {
					t.Fatalf("dials %+v, want two successful ones", dials)
				}
				if !slices.Contains(closed, 0) {
					t.Fatalf("the broken connection was not closed (closed: %v)", closed)
				}
				b3 := sendsOf(sends, 3)
				if len(b3) != 2 || b3[0].conn != 0 || b3[1].conn != 1 {
					t.Fatalf("batch 3 sends %+v, want one on each connection", b3)
				}
				// Nothing lost: every batch was answered OK on some connection.
				for seq := uint64(1); seq <= 6; seq++ {
					if len(sendsOf(sends, seq)) == 0 {
						t.Fatalf("batch %d never sent", seq)
					}
				}
				if got := metric(t, reg, "tally_agent_connects_total", ""); got != 2 {
					t.Fatalf("connects metric %v, want 2", got)
				}
			})
		})
	}
}

func TestSendTimeoutResends(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 1, 1)
		defer exp.sp.Close()
		// The first connection never answers.
		agg := &fakeAgg{t: t, exp: exp}
		agg.answer = func(s sent) (*wire.Ack, error) { return ok(s.seq), nil }
		agg.block = true
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) { c.SendTimeout = time.Second })
		stop := run(sh)
		defer stop()

		synctest.Wait()
		if st := exp.sp.Stats(); st.AckedTotal != 0 || st.InflightBatches != 1 {
			t.Fatalf("while the send hangs: %+v", st)
		}
		agg.mu.Lock()
		agg.block = false
		agg.mu.Unlock()
		time.Sleep(2 * time.Second) // past SendTimeout and the backoff
		synctest.Wait()
		checkAllAcked(t, exp.sp)
		if dials, sends, _ := agg.snapshot(); len(dials) != 2 || len(sends) != 2 {
			t.Fatalf("%d dials, %d sends; want a timed-out send to be retried on a new connection", len(dials), len(sends))
		}
	})
}

func TestRejectedBatchGoesToDeadLetter(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 4, 1) // seqs 1..4
		defer exp.sp.Close()
		// A payload that is not a batch at all is dead-lettered without
		// being sent.
		garbage := exp.commitPayloads(t, [][]byte{[]byte("not msgpack \xc1")})[0]
		exp.commitFlush(t, 2, 1) // seqs 6, 7 behind it
		agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
			if s.seq == 2 {
				return &wire.Ack{Version: wire.ProtocolVersion, Seq: s.seq, Status: wire.AckRejected,
					Reason: "invalid message: empty campaign"}, nil
			}
			return ok(s.seq), nil
		}}
		dead := filepath.Join(t.TempDir(), "dead")
		sh, reg := newShipper(t, exp, agg, func(c *ship.Config) {
			c.DeadLetters, _ = deadletter.Open(deadletter.Config{Dir: dead, MaxBatches: 10, MaxBytes: 1 << 20})
		})
		stop := run(sh)
		defer stop()

		synctest.Wait()
		checkAllAcked(t, exp.sp) // the dead letters left the spool; 3..7 still flowed

		letters, err := deadletter.List(dead)
		if err != nil || len(letters) != 2 {
			t.Fatalf("dead letters %+v, %v; want 2", letters, err)
		}
		for i, seq := range []uint64{2, garbage} {
			l, b, err := deadletter.Read(letters[i].Path)
			if err != nil || l.Seq != seq || l.Spool != "live" || l.Agent != agentName || l.Reason == "" {
				t.Fatalf("dead letter %d: %+v, %v", seq, l, err)
			}
			if !bytes.Equal(b, exp.payload(seq)) {
				t.Fatalf("dead letter of batch %d holds %d bytes, not the spooled payload", seq, len(b))
			}
		}
		_, sends, _ := agg.snapshot()
		if n := len(sendsOf(sends, 2)); n != 1 {
			t.Fatalf("rejected batch sent %d times, want once (resending cannot help)", n)
		}
		if n := len(sendsOf(sends, garbage)); n != 0 {
			t.Fatalf("undecodable batch sent %d times, want never", n)
		}
		for _, seq := range []uint64{1, 3, 4, 6, 7} {
			if n := len(sendsOf(sends, seq)); n != 1 {
				t.Fatalf("batch %d sent %d times, want once", seq, n)
			}
		}
		if got := metric(t, reg, "tally_agent_dead_letter_batches_total", ""); got != 2 {
			t.Fatalf("dead-letter metric %v, want 2", got)
		}
		if got := metric(t, reg, "tally_agent_batches_sent_total", "rejected"); got != 1 {
			t.Fatalf("rejected metric %v, want 1", got)
		}
	})
}

func TestRedirectReconnectsToOwner(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 2, 1)
		defer exp.sp.Close()
		agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
			if s.addr != "owner:7400" {
				return &wire.Ack{Version: wire.ProtocolVersion, Seq: s.seq, Status: wire.AckRedirect, Redirect: "owner:7400"}, nil
			}
			return ok(s.seq), nil
		}}
		sh, _ := newShipper(t, exp, agg, nil)
		stop := run(sh)
		defer stop()

		synctest.Wait()
		checkAllAcked(t, exp.sp)
		dials, _, _ := agg.snapshot()
		if len(dials) != 2 || dials[0].addr != "agg-1:7400" || dials[1].addr != "owner:7400" {
			t.Fatalf("dials %+v, want agg-1 then the owner", dials)
		}
		if gap := dials[1].at.Sub(dials[0].at); gap != 0 {
			t.Fatalf("redirect waited %v before redialling; it is not a failure", gap)
		}
	})
}

func TestDialFailuresBackOffAndRotate(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 3, 1)
		defer exp.sp.Close()
		const failures = 6
		agg := &fakeAgg{t: t, exp: exp, dialErr: func(n int, addr string) error {
			if n < failures {
				return fmt.Errorf("dial %s: connection refused", addr)
			}
			return nil
		}}
		const bmin, bmax = 10 * time.Millisecond, 40 * time.Millisecond
		addrs := []string{"a:1", "b:2", "c:3"}
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) {
			c.Addrs, c.BackoffMin, c.BackoffMax = addrs, bmin, bmax
		})
		stop := run(sh)
		defer stop()

		synctest.Wait()
		if sh.Connected() {
			t.Fatalf("Connected() = true before any dial succeeded")
		}
		if st := exp.sp.Stats(); st.PendingBatches != 3 || st.InflightBatches != 0 {
			t.Fatalf("spool while unreachable: %+v", st)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		checkAllAcked(t, exp.sp)

		dials, _, _ := agg.snapshot()
		if len(dials) != failures+1 {
			t.Fatalf("%d dials, want %d", len(dials), failures+1)
		}
		for i, d := range dials {
			if want := addrs[i%len(addrs)]; d.addr != want {
				t.Fatalf("dial %d to %s, want %s (rotation)", i, d.addr, want)
			}
			if i == 0 {
				continue
			}
			// Exponential from BackoffMin, capped at BackoffMax, with
			// equal jitter: in [d/2, d).
			b := min(bmin<<(i-1), bmax)
			if gap := dials[i].at.Sub(dials[i-1].at); gap < b/2 || gap >= b {
				t.Fatalf("wait before dial %d was %v, want in [%v, %v)", i, gap, b/2, b)
			}
		}
	})
}

func TestRunReturnsWhenCancelledWhileUnreachable(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 2, 1)
		defer exp.sp.Close()
		agg := &fakeAgg{t: t, exp: exp, dialErr: func(int, string) error { return errors.New("no route to host") }}
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) { c.BackoffMax = time.Hour })
		stop := run(sh)
		time.Sleep(10 * time.Second) // deep into backoff
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if st := exp.sp.Stats(); st.PendingBatches != 2 || st.AckedTotal != 0 {
			t.Fatalf("spool after cancel: %+v, want both batches kept", st)
		}
	})
}

// TestCancelLeavesUnackedBatchesInSpool cancels Run while sends hang: the
// batches stay in the spool, nothing in flight, and the next run ships
// them all.
func TestCancelLeavesUnackedBatchesInSpool(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 2, 4, 2) // seqs 1..4
		defer exp.sp.Close()
		agg := &fakeAgg{t: t, exp: exp, block: true}
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) { c.InFlight = 3 })
		stop := run(sh)

		synctest.Wait()
		if _, sends, _ := agg.snapshot(); len(sends) != 3 {
			t.Fatalf("%d sends hanging, want InFlight = 3", len(sends))
		}
		if err := stop(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		st := exp.sp.Stats()
		if st.PendingBatches != 4 || st.AckedTotal != 0 || st.InflightBatches != 0 {
			t.Fatalf("spool after cancel: %d pending, %d acked, %d in flight; want 4, 0, 0",
				st.PendingBatches, st.AckedTotal, st.InflightBatches)
		}

		// A new shipper (as after a restart of the loop) delivers them.
		agg2 := &fakeAgg{t: t, exp: exp}
		sh2, _ := newShipper(t, exp, agg2, nil)
		stop2 := run(sh2)
		synctest.Wait()
		checkAllAcked(t, exp.sp)
		if err := stop2(); err != nil {
			t.Fatalf("Run = %v", err)
		}
	})
}

// TestMembershipChangeTriggersResend: the first epoch seen is no change;
// a different one calls OnMembershipChange once per change.
func TestMembershipChangeTriggersResend(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 2, 3, 1) // seqs 1..6
		defer exp.sp.Close()
		epochs := map[uint64]uint64{1: 7, 2: 7, 3: 9, 4: 9, 5: 9, 6: 11}
		agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
			return &wire.Ack{Version: wire.ProtocolVersion, Seq: s.seq, Status: wire.AckOK, Epoch: epochs[s.seq]}, nil
		}}
		var mu sync.Mutex
		var changes []uint64
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) {
			c.OnMembershipChange = func(e uint64) {
				mu.Lock()
				changes = append(changes, e)
				mu.Unlock()
			}
		})
		stop := run(sh)
		time.Sleep(time.Second)
		synctest.Wait()
		stop()
		checkAllAcked(t, exp.sp)
		if !slices.Equal(changes, []uint64{9, 11}) {
			t.Fatalf("membership changes reported %v, want [9 11]", changes)
		}
	})
}

// TestDrainRateIsCapped: with MaxBatchesPerSecond a backlog drains no
// faster than the cap (synctest's clock makes the rate exact).
func TestDrainRateIsCapped(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 4, 10, 1) // 40 batches
		defer exp.sp.Close()
		agg := &fakeAgg{t: t, exp: exp}
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) { c.MaxBatchesPerSecond = 10; c.InFlight = 4 })
		start := time.Now()
		stop := run(sh)
		for exp.sp.Stats().AckedTotal < 40 {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		stop()
		// 10 at once (the burst), then 10 per second: 30 more take 3 s.
		if took < 2900*time.Millisecond || took > 3500*time.Millisecond {
			t.Fatalf("40 batches at 10/s drained in %v, want about 3s", took)
		}
	})
}

// TestBatchesGoStraightToTheirOwner: once acks report the members, each
// batch is sent to the owner of its campaign; an owner that cannot be
// dialled is bypassed through the connected node, and nothing is lost.
func TestBatchesGoStraightToTheirOwner(t *testing.T) {
	for _, ownerDown := range []bool{false, true} {
		t.Run(fmt.Sprintf("ownerDown=%v", ownerDown), func(t *testing.T) {
			defer goleak.VerifyNone(t)
			synctest.Test(t, func(t *testing.T) {
				members := []wire.Member{{Name: "agg-1", Addr: "agg-1:7400"}, {Name: "agg-2", Addr: "agg-2:7400"}}
				exp := openSpool(t, 0, 0, 1)
				exp.members = members
				exp.commitFlush(t, 40, 1) // 40 batches, campaigns c0..c39, each with its owner
				defer exp.sp.Close()
				agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
					return &wire.Ack{Version: wire.ProtocolVersion, Seq: s.seq, Status: wire.AckOK, Members: members, Epoch: 5}, nil
				}}
				if ownerDown {
					agg.dialErr = func(_ int, addr string) error {
						if addr == "agg-2:7400" {
							return errors.New("unreachable")
						}
						return nil
					}
				}
				routes := &ship.Membership{}
				sh, _ := newShipper(t, exp, agg, func(c *ship.Config) { c.RouteToOwner, c.Membership = true, routes })
				stop := run(sh)
				time.Sleep(2 * time.Second)
				synctest.Wait()
				stop()
				checkAllAcked(t, exp.sp)
				_, sends, _ := agg.snapshot()
				direct := 0
				for i, s := range sends {
					campaign := exp.contribs[s.seq][0].Series.Campaign
					owner, _ := wire.Owner(members, campaign)
					switch {
					case i == 0 || ownerDown:
						if s.addr != "agg-1:7400" {
							t.Fatalf("send %d (%s) went to %s before routing was possible", i, campaign, s.addr)
						}
					case s.addr != owner.Addr:
						t.Fatalf("batch of %s went to %s, its owner is %s", campaign, s.addr, owner.Addr)
					}
					if s.addr == "agg-2:7400" {
						direct++
					}
				}
				if !ownerDown && direct == 0 {
					t.Fatal("no batch went to agg-2")
				}
				if want, _ := wire.Owner(members, "c1"); routes.Owner("c1") != want.Name {
					t.Fatalf("Membership.Owner(c1) = %q after acks reported members, want %q", routes.Owner("c1"), want.Name)
				}
			})
		})
	}
}

// TestDeadLetterThatCannotBeKeptStaysInTheSpool: when the dead-letter
// store is full, a rejected batch is not acknowledged away: it stays in
// the spool, shipping reports the problem, and once room is made it is
// kept and the batches behind it flow.
func TestDeadLetterThatCannotBeKeptStaysInTheSpool(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 3, 1) // seqs 1..3
		defer exp.sp.Close()
		agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
			if s.seq == 1 {
				return &wire.Ack{Version: wire.ProtocolVersion, Seq: s.seq, Status: wire.AckRejected, Reason: "bad"}, nil
			}
			return ok(s.seq), nil
		}}
		dir := filepath.Join(t.TempDir(), "dead")
		store, err := deadletter.Open(deadletter.Config{Dir: dir, MaxBatches: 1, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Put(deadletter.Letter{Spool: "live", Seq: 99}, []byte("an older letter")); err != nil {
			t.Fatal(err)
		}
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) { c.DeadLetters = store })
		stop := run(sh)
		defer stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if st := exp.sp.Stats(); st.AckedThrough != 0 || st.PendingBatches == 0 {
			t.Fatalf("spool %+v: the rejected batch left it without a dead letter", st)
		}
		if sh.Problem() == "" {
			t.Fatal("no problem reported while rejected batches cannot be kept")
		}
		letters, _ := deadletter.List(dir)
		if err := store.Remove(letters[0]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		checkAllAcked(t, exp.sp)
		if sh.Problem() != "" {
			t.Fatalf("problem %q after room was made", sh.Problem())
		}
		if letters, _ := deadletter.List(dir); len(letters) != 1 || letters[0].Seq != 1 {
			t.Fatalf("dead letters %+v, want batch 1", letters)
		}
	})
}

// TestIdentityRejectionStopsShipping: a rejection of the agent itself
// (its name does not match its certificate) stops shipping with one error
// instead of dead-lettering batch after batch; every batch stays.
func TestIdentityRejectionStopsShipping(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 5, 1)
		defer exp.sp.Close()
		agg := &fakeAgg{t: t, exp: exp, answer: func(s sent) (*wire.Ack, error) {
			return &wire.Ack{Version: wire.ProtocolVersion, Seq: s.seq, Status: wire.AckRejected, Code: wire.RejectIdentity,
				Reason: `agent name "a" does not match its certificate (CN "b")`}, nil
		}}
		dir := filepath.Join(t.TempDir(), "dead")
		sh, _ := newShipper(t, exp, agg, func(c *ship.Config) {
			c.DeadLetters, _ = deadletter.Open(deadletter.Config{Dir: dir, MaxBatches: 10, MaxBytes: 1 << 20})
		})
		done := make(chan error, 1)
		go func() { done <- sh.Run(context.Background()) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			t.Fatal("Run did not stop")
		}
		var halt *ship.HaltError
		if !errors.As(err, &halt) || halt.Code != wire.RejectIdentity || sh.Problem() == "" {
			t.Fatalf("Run = %v, problem %q; want a HaltError", err, sh.Problem())
		}
		if st := exp.sp.Stats(); st.PendingBatches != 5 {
			t.Fatalf("%d batches pending, want all 5 kept", st.PendingBatches)
		}
		if letters, _ := deadletter.List(dir); len(letters) != 0 {
			t.Fatalf("%d dead letters, want none", len(letters))
		}
		if _, sends, _ := agg.snapshot(); len(sends) != 1 {
			t.Fatalf("%d sends, want 1", len(sends))
		}
	})
}
