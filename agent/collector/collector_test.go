package collector_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/agent/collector"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/sketch"
)

// The spool runs a checkpoint goroutine per open spool; every test must
// close what it opens.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var discard = slog.New(slog.DiscardHandler)

// bigSpool is a spool far larger than any test fills.
var bigSpool = spool.Config{MaxBytes: 64 << 20}

// agent is one run of the agent's durable path: a spool and a collector
// over the same state directory, with their own metrics registry.
type agent struct {
	sp  *spool.Spool
	col *collector.Collector
	reg *prometheus.Registry
}

// openAgent opens the spool and the collector in dir with the given epoch,
// as the agent does at start. cfg may adjust the collector's config.
func openAgent(t *testing.T, dir string, epoch uint32, scfg spool.Config, cfg func(*collector.Config)) *agent {
	t.Helper()
	sp, err := spool.Open(filepath.Join(dir, "spool"), scfg, discard)
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	c := collector.Config{Dir: dir, Epoch: epoch, FlushInterval: time.Hour, Rollup: rollup.DefaultConfig(),
		JournalMaxBytes: 64 << 20, Batcher: ship.NewBatcher(4, 0, nil)}
	if cfg != nil {
		cfg(&c)
	}
	reg := prometheus.NewRegistry()
	col, err := collector.Open(c, sp, reg, discard)
	if err != nil {
		sp.Close()
		t.Fatalf("open collector: %v", err)
	}
	a := &agent{sp: sp, col: col, reg: reg}
	t.Cleanup(a.crash)
	return a
}

// crash stops the agent the way a kill does as far as the collector is
// concerned: no final flush. Closing the files only releases their locks;
// everything written before is already in the page cache. Safe to call
// twice.
func (a *agent) crash() {
	a.col.Close()
	a.sp.Close()
}

// metric returns the value of the counter or gauge name with the given
// label value ("" for none), or 0 if it has not been set.
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

// mix is SplitMix64's finaliser: visitor hashes must be uniformly
// distributed, as the agent's salted SipHash is.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

var types = []string{"impression", "click", "conversion"}

// makeEvents returns events number from .. from+n-1 over 21 series, in the
// minute of now and the one before, with some conversions carrying a value
// and one event in eleven a bot.
func makeEvents(from, n int, now time.Time) []event.Event {
	minute := now.Truncate(time.Minute).UnixMilli()
	out := make([]event.Event, 0, n)
	for i := from; i < from+n; i++ {
		e := event.Event{
			Series: sketch.Series{Campaign: fmt.Sprintf("c%d", i%7), Source: "google", Medium: "cpc",
				Type: types[i%3], Country: "DE", Device: "mobile", Region: "eu-west"},
			UnixMillis: minute + int64(i%60)*1000 - int64(i%2)*60_000,
			Visitor:    mix(uint64(i) + 1),
		}
		if e.Series.Type == "conversion" {
			e.ValueMicros, e.HasValue = int64(i)*10_000+1, true
		}
		if i%11 == 0 {
			e.Bot = "crawler"
		}
		out = append(out, e)
	}
	return out
}

// totals are the exact numbers a receiver must end up with.
type totals struct {
	Count, Bots uint64
	Value       int64
}

func truth(evs []event.Event) totals {
	var t totals
	for _, e := range evs {
		if e.Bot != "" {
			t.Bots++
			continue
		}
		t.Count++
		t.Value += e.ValueMicros
	}
	return t
}

// receiver applies the aggregator's rules to spooled batches: per CID keep
// the counters of the highest version, and add up the CIDs.
type receiver struct {
	latest map[uint64]wireCounters
	epochs map[uint32]bool // epochs seen in CIDs
}

type wireCounters struct {
	version uint64
	t       totals
}

func newReceiver() *receiver {
	return &receiver{latest: map[uint64]wireCounters{}, epochs: map[uint32]bool{}}
}

func (r *receiver) apply(t *testing.T, payload []byte) {
	t.Helper()
	cs, err := rollup.DecodeBatch(payload)
	if err != nil {
		t.Fatalf("decode spooled batch: %v", err)
	}
	for _, c := range cs {
		r.epochs[uint32(c.CID>>32)] = true
		if c.Version <= r.latest[c.CID].version {
			continue
		}
		st, err := c.State.Decode()
		if err != nil {
			t.Fatalf("decode state of CID %x: %v", c.CID, err)
		}
		r.latest[c.CID] = wireCounters{version: c.Version, t: totals{Count: st.Count, Bots: st.BotTotal(), Value: st.ValueMicros}}
	}
}

func (r *receiver) totals() totals {
	var sum totals
	for _, w := range r.latest {
		sum.Count += w.t.Count
		sum.Bots += w.t.Bots
		sum.Value += w.t.Value
	}
	return sum
}

// drain hands every committed batch out of the spool, acks it and feeds it
// to r (if not nil). It returns the number of batches.
func drain(t *testing.T, sp *spool.Spool, r *receiver) int {
	t.Helper()
	n := 0
	for sp.Stats().PendingBatches > 0 {
		// Committed batches are ready at once; the deadline only keeps a
		// broken spool from hanging the test.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		it, err := sp.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("spool Next with %d batches pending: %v", sp.Stats().PendingBatches, err)
		}
		if r != nil {
			r.apply(t, it.Payload)
		}
		if err := sp.Ack(it.Seq); err != nil {
			t.Fatalf("Ack %d: %v", it.Seq, err)
		}
		n++
	}
	return n
}

func accept(t *testing.T, col *collector.Collector, evs []event.Event) {
	t.Helper()
	if err := col.Accept(evs); err != nil {
		t.Fatalf("Accept %d events: %v", len(evs), err)
	}
}

func flush(t *testing.T, col *collector.Collector) {
	t.Helper()
	if err := col.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func TestNextEpoch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "nested") // created on first use
	for want := uint32(1); want <= 3; want++ {
		got, err := collector.NextEpoch(dir)
		if err != nil {
			t.Fatalf("NextEpoch: %v", err)
		}
		if got != want {
			t.Fatalf("NextEpoch = %d, want %d", got, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "epoch")); err != nil || strings.TrimSpace(string(b)) != "3" {
		t.Fatalf("epoch file %q, %v; want 3", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "epoch.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("epoch.tmp left behind: %v", err)
	}

	// Surrounding white space is tolerated (an operator's editor).
	if err := os.WriteFile(filepath.Join(dir, "epoch"), []byte("  41 \n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if got, err := collector.NextEpoch(dir); err != nil || got != 42 {
		t.Fatalf("NextEpoch after 41 = %d, %v; want 42", got, err)
	}
}

func TestNextEpochRejectsCorruptFile(t *testing.T) {
	tests := []struct {
		name, content, wantErr string
	}{
		{"garbage", "abc\n", "corrupt"},
		{"empty", "", "corrupt"},
		{"negative", "-1\n", "corrupt"},
		{"fraction", "1.5\n", "corrupt"},
		{"two numbers", "1 2\n", "corrupt"},
		{"beyond 32 bits", "4294967296\n", "corrupt"},
		{"exhausted", "4294967295\n", "exhausted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "epoch")
			if err := os.WriteFile(path, []byte(tc.content), 0o640); err != nil {
				t.Fatal(err)
			}
			got, err := collector.NextEpoch(dir)
			if err == nil {
				t.Fatalf("NextEpoch over %q = %d, want an error", tc.content, got)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q should say %q", err, tc.wantErr)
			}
			if tc.wantErr == "corrupt" && !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q should name the file %s", err, path)
			}
			// Refusing to guess means leaving the file for the operator.
			if b, _ := os.ReadFile(path); string(b) != tc.content {
				t.Fatalf("epoch file rewritten to %q after an error", b)
			}
		})
	}
}

// TestCrashReplaysUnflushedEventsExactly is the journal's reason to exist:
// events accepted after the last committed flush survive a crash, and are
// counted exactly once together with the flush that was committed but not
// yet shipped.
func TestCrashReplaysUnflushedEventsExactly(t *testing.T) {
	const n, m = 500, 300
	dir := t.TempDir()
	now := time.Now()
	first, second := makeEvents(0, n, now), makeEvents(n, m, now)

	a := openAgent(t, dir, 1, bigSpool, nil)
	for i := 0; i < n; i += 50 {
		accept(t, a.col, first[i:i+50])
	}
	flush(t, a.col)
	committed := a.sp.Stats().CommittedTotal
	if committed < 2 {
		t.Fatalf("first flush committed %d batches; want several (MaxBatchContributions 4)", committed)
	}
	for i := 0; i < m; i += 30 {
		accept(t, a.col, second[i:i+30])
	}
	a.crash()

	b := openAgent(t, dir, 2, bigSpool, nil)
	if got := metric(t, b.reg, "tally_agent_journal_replayed_events_total", ""); got != m {
		t.Fatalf("replayed %v events, want %d", got, m)
	}
	want := truth(second)
	if st := b.col.Stats(); st.Events != want.Count || st.Bots != want.Bots {
		t.Fatalf("rollup after replay has %d events and %d bots, want %d and %d", st.Events, st.Bots, want.Count, want.Bots)
	}
	if st := b.sp.Stats(); st.PendingBatches != int(committed) {
		t.Fatalf("spool after restart holds %d batches, want the %d of the first flush", st.PendingBatches, committed)
	}
	flush(t, b.col)

	r := newReceiver()
	drain(t, b.sp, r)
	want = truth(append(first, second...))
	if got := r.totals(); got != want {
		t.Fatalf("receiver totals %+v, want %+v (N=%d, M=%d)", got, want, n, m)
	}
	if !r.epochs[1] || !r.epochs[2] || len(r.epochs) != 2 {
		t.Fatalf("CIDs carry epochs %v, want 1 (first flush) and 2 (replay)", r.epochs)
	}
}

// TestCrashAfterFlushReplaysNothing: a committed flush moves the replay
// start past its events, so a restart must not count them again.
func TestCrashAfterFlushReplaysNothing(t *testing.T) {
	const n = 400
	dir := t.TempDir()
	evs := makeEvents(0, n, time.Now())

	a := openAgent(t, dir, 1, bigSpool, nil)
	accept(t, a.col, evs)
	flush(t, a.col)
	a.crash()

	b := openAgent(t, dir, 2, bigSpool, nil)
	if got := metric(t, b.reg, "tally_agent_journal_replayed_events_total", ""); got != 0 {
		t.Fatalf("replayed %v events after a committed flush, want 0", got)
	}
	if st := b.col.Stats(); st.Events != 0 || st.Bots != 0 || st.Open != 0 {
		t.Fatalf("rollup after restart: %+v, want empty", st)
	}
	flush(t, b.col) // nothing to flush: commits nothing
	r := newReceiver()
	drain(t, b.sp, r)
	if got, want := r.totals(), truth(evs); got != want {
		t.Fatalf("receiver totals %+v, want %+v", got, want)
	}
	if len(r.epochs) != 1 || !r.epochs[1] {
		t.Fatalf("CIDs carry epochs %v, want only 1", r.epochs)
	}

	// A third start after everything was shipped and acked replays
	// nothing either, although the acked spool segments may be gone.
	b.crash()
	c := openAgent(t, dir, 3, bigSpool, nil)
	if got := metric(t, c.reg, "tally_agent_journal_replayed_events_total", ""); got != 0 {
		t.Fatalf("third start replayed %v events, want 0", got)
	}
}

// fillSpool commits padding batches straight into the spool until it
// refuses one with ErrFull. It returns the number committed.
func fillSpool(t *testing.T, sp *spool.Spool) int {
	t.Helper()
	pad := make([]byte, 4000)
	for n := 0; n < 1000; n++ {
		_, err := sp.Commit([]spool.Batch{{Payload: pad}}, spool.CommitMeta{})
		if errors.Is(err, spool.ErrFull) {
			return n
		}
		if err != nil {
			t.Fatalf("commit padding: %v", err)
		}
	}
	t.Fatalf("spool never filled")
	return 0
}

// smallSpool fills with about 16 padding batches.
var smallSpool = spool.Config{MaxBytes: 64 << 10, SegmentSize: 8 << 10}

func TestAcceptBusyWhenSpoolFull(t *testing.T) {
	a := openAgent(t, t.TempDir(), 1, smallSpool, nil)
	accept(t, a.col, makeEvents(0, 10, time.Now()))
	fillSpool(t, a.sp)
	before := a.col.Stats()

	err := a.col.Accept(makeEvents(10, 10, time.Now()))
	var busy *source.BusyError
	if !errors.As(err, &busy) {
		t.Fatalf("Accept with a full spool = %v, want *source.BusyError", err)
	}
	if busy.RetryAfter != time.Hour {
		t.Fatalf("RetryAfter %v, want the flush interval", busy.RetryAfter)
	}
	if after := a.col.Stats(); after != before {
		t.Fatalf("a refused Accept changed the rollup: %+v -> %+v", before, after)
	}
	if got := metric(t, a.reg, "tally_agent_backpressure_total", "spool_full"); got != 1 {
		t.Fatalf("spool_full backpressure count %v, want 1", got)
	}
}

// TestFlushRetriedAfterSpoolFull: a flush the spool refuses is kept and
// committed first once there is room, and nothing is lost or doubled.
func TestFlushRetriedAfterSpoolFull(t *testing.T) {
	now := time.Now()
	first, second := makeEvents(0, 60, now), makeEvents(60, 40, now)
	a := openAgent(t, t.TempDir(), 1, smallSpool, nil)
	accept(t, a.col, first)
	padding := fillSpool(t, a.sp)

	err := a.col.Flush()
	if !errors.Is(err, spool.ErrFull) {
		t.Fatalf("Flush into a full spool = %v, want spool.ErrFull", err)
	}
	if got := metric(t, a.reg, "tally_agent_flushes_total", "retry"); got != 1 {
		t.Fatalf("retry flushes %v, want 1", got)
	}
	var busy *source.BusyError
	if err := a.col.Accept(second); !errors.As(err, &busy) {
		t.Fatalf("Accept with a full spool = %v, want *source.BusyError", err)
	}

	// The aggregator catches up: the padding is acked, and the next flush
	// commits the one that was refused (Commit frees acked segments itself).
	if got := drain(t, a.sp, nil); got != padding {
		t.Fatalf("drained %d padding batches, want %d", got, padding)
	}
	flush(t, a.col)
	if a.sp.Full() {
		t.Fatalf("spool still full after the acked padding was freed")
	}
	accept(t, a.col, second)
	flush(t, a.col)

	r := newReceiver()
	drain(t, a.sp, r)
	if got, want := r.totals(), truth(append(first, second...)); got != want {
		t.Fatalf("receiver totals %+v, want %+v", got, want)
	}
}

// fillJournal accepts batches of 500 events until the journal is full. It
// returns the busy error, the number of events accepted and the batch that
// was refused.
func fillJournal(t *testing.T, col *collector.Collector, now time.Time) (*source.BusyError, int, []event.Event) {
	t.Helper()
	const per = 500
	for i := 0; i < 10_000; i++ {
		evs := makeEvents(i*per, per, now)
		err := col.Accept(evs)
		if err == nil {
			continue
		}
		var busy *source.BusyError
		if !errors.As(err, &busy) {
			t.Fatalf("Accept into a filling journal = %v, want nil or *source.BusyError", err)
		}
		return busy, i * per, evs
	}
	t.Fatalf("journal never filled")
	return nil, 0, nil
}

// journalMin is the smallest journal the agent's config allows
// (journal.max_bytes, at least 1MiB).
const journalMin = 1 << 20

func TestAcceptBusyWhenJournalFull(t *testing.T) {
	now := time.Now()
	a := openAgent(t, t.TempDir(), 1, bigSpool, func(c *collector.Config) { c.JournalMaxBytes = journalMin })
	busy, accepted, refused := fillJournal(t, a.col, now)
	if accepted == 0 {
		t.Fatalf("the first Accept was refused")
	}
	if !strings.Contains(busy.Reason, "journal full") {
		t.Fatalf("busy reason %q, want it to name the journal", busy.Reason)
	}
	before := a.col.Stats()
	if before.Events+before.Bots != uint64(accepted) {
		t.Fatalf("rollup holds %d events, %d were accepted", before.Events+before.Bots, accepted)
	}
	// Nothing of a refused Accept is applied: all or nothing.
	var again *source.BusyError
	if err := a.col.Accept(refused); !errors.As(err, &again) {
		t.Fatalf("second Accept into a full journal = %v, want *source.BusyError", err)
	}
	if after := a.col.Stats(); after != before {
		t.Fatalf("refused Accepts changed the rollup: %+v -> %+v", before, after)
	}
	if got := metric(t, a.reg, "tally_agent_backpressure_total", "journal_full"); got != 2 {
		t.Fatalf("journal_full backpressure count %v, want 2", got)
	}
	if used := metric(t, a.reg, "tally_agent_journal_bytes", ""); used <= 0 || used > journalMin {
		t.Fatalf("journal bytes gauge %v, want in (0, %d]", used, journalMin)
	}
}

// TestJournalFreesSpaceAfterFlush: once a flush has put the journal's
// events in the spool, the journal must take events again; otherwise a
// full journal answers 503 for ever (the config promises "when full,
// ingest answers 503", not that it stays full).
func TestJournalFreesSpaceAfterFlush(t *testing.T) {
	now := time.Now()
	a := openAgent(t, t.TempDir(), 1, bigSpool, func(c *collector.Config) { c.JournalMaxBytes = journalMin })
	_, accepted, refused := fillJournal(t, a.col, now)
	flush(t, a.col)
	if st := a.sp.Stats(); st.CommittedTotal == 0 {
		t.Fatalf("flush committed nothing")
	}
	// The batch refused before the flush must fit now.
	if err := a.col.Accept(refused); err != nil {
		t.Fatalf("Accept after a flush covered all %d journaled events (JournalMaxBytes %d, journal gauge %v bytes): %v",
			accepted, journalMin, metric(t, a.reg, "tally_agent_journal_bytes", ""), err)
	}
}

// TestRunFlushesOnIntervalAndOnCancel runs the flush loop on a fake clock:
// it flushes at the interval boundary, and once more when its context is
// cancelled so nothing accepted stays only in the journal.
func TestRunFlushesOnIntervalAndOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const iv = 10 * time.Second
		a := openAgent(t, t.TempDir(), 1, bigSpool, func(c *collector.Config) { c.FlushInterval = iv })
		defer a.crash() // before the bubble ends; Cleanup would be too late
		first := makeEvents(0, 100, time.Now())
		accept(t, a.col, first)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.col.Run(ctx) }()

		synctest.Wait()
		if got := a.sp.Stats().CommittedTotal; got != 0 {
			t.Fatalf("Run flushed %d batches before the interval boundary", got)
		}
		time.Sleep(iv) // the fake clock passes the next boundary
		synctest.Wait()
		st := a.sp.Stats()
		if st.CommittedTotal == 0 {
			t.Fatalf("Run did not flush at the interval boundary")
		}

		second := makeEvents(100, 50, time.Now())
		accept(t, a.col, second)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if got := a.sp.Stats().CommittedTotal; got <= st.CommittedTotal {
			t.Fatalf("no final flush on cancel: %d batches committed before, %d after", st.CommittedTotal, got)
		}
		if got := metric(t, a.reg, "tally_agent_flushes_total", "ok"); got != 2 {
			t.Fatalf("ok flushes %v, want 2 (interval and final)", got)
		}
		r := newReceiver()
		drain(t, a.sp, r)
		if got, want := r.totals(), truth(append(first, second...)); got != want {
			t.Fatalf("receiver totals %+v, want %+v", got, want)
		}
	})
}

// TestRunWaitsForALinkThatIsBehind: while Behind says the link is behind,
// a flush that comes due waits, and goes as soon as the link catches up
// (within a second) or once it has waited MaxFlushDelay. What the waits
// fold together arrives exactly.
func TestRunWaitsForALinkThatIsBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const iv, maxDelay = 10 * time.Second, 25 * time.Second
		var behind atomic.Bool
		a := openAgent(t, t.TempDir(), 1, bigSpool, func(c *collector.Config) {
			c.FlushInterval, c.MaxFlushDelay = iv, maxDelay
			c.Behind = behind.Load
		})
		defer a.crash()
		var all []event.Event
		add := func(n int) {
			evs := makeEvents(len(all), n, time.Now())
			accept(t, a.col, evs)
			all = append(all, evs...)
		}
		committed := func() uint64 { synctest.Wait(); return a.sp.Stats().CommittedTotal }
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.col.Run(ctx) }()

		// Behind: the flush due at the boundary waits while it lasts.
		add(100)
		behind.Store(true)
		time.Sleep(iv)
		if n := committed(); n != 0 {
			t.Fatalf("%d batches committed at the boundary while the link is behind", n)
		}
		time.Sleep(5 * time.Second)
		add(50) // folds into the waiting flush
		if n := committed(); n != 0 {
			t.Fatalf("%d batches committed 5 s into the wait", n)
		}
		behind.Store(false)
		time.Sleep(time.Second)
		first := committed()
		if first == 0 {
			t.Fatal("the waiting flush did not go within a second of the link catching up")
		}
		if got := metric(t, a.reg, "tally_agent_flushes_delayed_total", ""); got != 1 {
			t.Fatalf("tally_agent_flushes_delayed_total %v, want 1", got)
		}

		// Behind for good: the flush goes once it has waited maxDelay.
		behind.Store(true)
		add(80)
		next := time.Now().Truncate(iv).Add(iv)
		time.Sleep(time.Until(next) + maxDelay - 2*time.Second)
		if n := committed(); n != first {
			t.Fatalf("a flush went %v into its wait, before MaxFlushDelay %v", maxDelay-2*time.Second, maxDelay)
		}
		time.Sleep(3 * time.Second)
		second := committed()
		if second == first {
			t.Fatalf("no flush after waiting MaxFlushDelay %v", maxDelay)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
		r := newReceiver()
		drain(t, a.sp, r)
		if got, want := r.totals(), truth(all); got != want {
			t.Fatalf("receiver totals %+v, want %+v", got, want)
		}
	})
}

// TestRunDoesNotWaitWithTheJournalHalfFull: however far behind the link,
// a flush does not wait once the journal holds half its bound, so waiting
// never turns into refused events.
func TestRunDoesNotWaitWithTheJournalHalfFull(t *testing.T) {
	evs := makeEvents(0, 200, time.Now())
	probe := openAgent(t, t.TempDir(), 1, bigSpool, nil)
	accept(t, probe.col, evs)
	held := int64(metric(t, probe.reg, "tally_agent_journal_bytes", ""))
	probe.crash()
	if held == 0 {
		t.Fatal("the journal holds nothing after 200 events")
	}
	synctest.Test(t, func(t *testing.T) {
		const iv = 10 * time.Second
		a := openAgent(t, t.TempDir(), 1, bigSpool, func(c *collector.Config) {
			c.FlushInterval, c.MaxFlushDelay = iv, time.Minute
			c.Behind = func() bool { return true }
			c.JournalMaxBytes = held * 3 / 2 // 200 events fill two thirds of it
		})
		defer a.crash()
		accept(t, a.col, evs)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.col.Run(ctx) }()
		time.Sleep(iv)
		synctest.Wait()
		if a.sp.Stats().CommittedTotal == 0 {
			t.Fatal("the flush waited for the link with the journal past half its bound")
		}
		if got := metric(t, a.reg, "tally_agent_flushes_delayed_total", ""); got != 0 {
			t.Fatalf("tally_agent_flushes_delayed_total %v, want 0", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
	})
}

// journalBytes sums the journal's segment files on disk.
func journalBytes(t *testing.T, dir string) int64 {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "journal", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no journal segments in %s: %v", dir, err)
	}
	var n int64
	for _, s := range segs {
		fi, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestJournalForgetsCoveredEventsOfAQuietAgent: the journal's active
// segment is never released, so without a bound a quiet agent would keep
// flushed events (salted visitor hashes with their times) on disk until
// 8 MiB of later events filled the segment. Once the segment is older
// than JournalMaxAge, a flush (even one with nothing new to ship) seals
// and deletes it; events accepted since stay until a flush covers them.
func TestJournalForgetsCoveredEventsOfAQuietAgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxAge = 10 * time.Minute
		dir := t.TempDir()
		a := openAgent(t, dir, 1, bigSpool, func(c *collector.Config) { c.JournalMaxAge = maxAge })
		defer a.crash() // before the bubble ends; Cleanup would be too late
		accept(t, a.col, makeEvents(0, 100, time.Now()))
		flush(t, a.col)
		if n := journalBytes(t, dir); n == 0 {
			t.Fatal("journal empty right after the flush: the test would prove nothing")
		}
		time.Sleep(maxAge / 2)
		flush(t, a.col) // nothing new; the segment is not old yet
		if n := journalBytes(t, dir); n == 0 {
			t.Fatal("journal sealed before JournalMaxAge")
		}
		time.Sleep(maxAge / 2)
		flush(t, a.col) // nothing new; the segment is JournalMaxAge old
		if n := journalBytes(t, dir); n != 0 {
			t.Fatalf("journal still holds %d bytes of flushed events %s after they were accepted", n, maxAge)
		}

		// Events accepted after a seal stay until a flush covers them,
		// and are replayed after a crash.
		late := makeEvents(100, 50, time.Now())
		accept(t, a.col, late)
		time.Sleep(maxAge)
		a.crash()
		b := openAgent(t, dir, 2, bigSpool, nil)
		defer b.crash()
		if got := metric(t, b.reg, "tally_agent_journal_replayed_events_total", ""); got != float64(len(late)) {
			t.Fatalf("replayed %v events after the crash, want %d", got, len(late))
		}
	})
}
