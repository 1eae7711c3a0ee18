package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/wal"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStorage holds contribution points and records what was asked.
type fakeStorage struct {
	mu      sync.Mutex
	stored  []influx.ContribPoint
	queries []loadCall
	block   chan struct{} // if set, loads wait for it
}

type loadCall struct {
	from, to  time.Time
	campaigns []string
}

func (s *fakeStorage) LoadContributions(_ context.Context, from, to time.Time) ([]influx.ContribPoint, error) {
	return s.load(from, to, nil, nil)
}

func (s *fakeStorage) LoadContributionsOf(ctx context.Context, from, to time.Time, campaigns []string) ([]influx.ContribPoint, error) {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	s.queries = append(s.queries, loadCall{from, to, slices.Clone(campaigns)})
	s.mu.Unlock()
	return s.load(from, to, campaigns, nil)
}

func (s *fakeStorage) LoadContributionsFunc(_ context.Context, from, to time.Time, keep func(sketch.Series) bool) ([]influx.ContribPoint, error) {
	return s.load(from, to, nil, keep)
}

func (s *fakeStorage) load(from, to time.Time, campaigns []string, keep func(sketch.Series) bool) ([]influx.ContribPoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []influx.ContribPoint
	for _, p := range s.stored {
		if p.Minute < from.Unix() || p.Minute >= to.Unix() {
			continue
		}
		if campaigns != nil && !slices.Contains(campaigns, p.Series.Campaign) {
			continue
		}
		if keep != nil && !keep(p.Series) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// fakeMembership has members a and b.
type fakeMembership struct{}

func (fakeMembership) IsMember(name string) bool { return name == "a" || name == "b" }
func (fakeMembership) View() ([]wire.Member, uint64) {
	return []wire.Member{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:2"}}, 42
}

func contribution(t *testing.T, campaign string, minute int64, cid, count uint64) wire.Contribution {
	t.Helper()
	st := sketch.State{Count: count}
	st.AddVisitor(cid*7919 + count)
	enc, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return wire.Contribution{Series: sketch.Series{Campaign: campaign, Type: "click", Region: "eu"}, Minute: minute,
		CID: cid, Version: 1, State: enc}
}

func batch(agent string, seq uint64, cs ...wire.Contribution) *wire.Batch {
	return &wire.Batch{Version: wire.ProtocolVersion, Agent: agent, Region: "eu", Seq: seq, Contributions: cs}
}

func open(t *testing.T, dir string, st Storage, cluster Membership) *Pipeline {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Node, cfg.Cluster, cfg.NodeCertificate = dir, "a", cluster, pki.IsNodeCertificate
	p, err := Open(cfg, st, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// certs returns the certificates of agent "edge" and nodes "a" and "b".
func certs(t *testing.T) map[string]*x509.Certificate {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.GenerateDev(dir, pki.DevOptions{Agents: []string{"edge", "other"}, Aggregators: []string{"a", "b", "stranger"}}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*x509.Certificate{}
	for _, n := range []string{"edge", "other", "a", "b", "stranger"} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = pair.Leaf
	}
	return out
}

func peer(c *x509.Certificate, alpn string) wire.Peer {
	return wire.Peer{CommonName: c.Subject.CommonName, ALPN: alpn, Certificate: c}
}

var minute = time.Now().Truncate(time.Minute).Unix()

// TestAckedBatchIsInTheLogAsSent: an acknowledged batch is in the
// write-ahead log byte for byte as its sender encoded it, and a node
// restarted on the log (without storage) has it again.
func TestAckedBatchIsInTheLogAsSent(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir, &fakeStorage{}, nil)
	if ack := p.HandleBatch(context.Background(), peer(certs(t)["edge"], wire.ALPN), batch("edge", 1)); ack.Status != wire.AckBusy {
		t.Fatalf("a batch before Recover answered %+v, want busy", ack)
	}
	if err := p.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := batch("edge", 7, contribution(t, "c", minute, 1, 5), contribution(t, "c", minute-60, 2, 3))
	f, err := wire.EncodeBatch(b, wire.EncodeOptions{Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := wire.ReadFrame(strings.NewReader(string(f)), 0)
	if err != nil {
		t.Fatal(err)
	}
	ack := p.HandleBatchPayload(context.Background(), peer(certs(t)["edge"], wire.ALPN), b, fr.Payload)
	if ack.Status != wire.AckOK {
		t.Fatalf("ack %+v", ack)
	}
	p.Close()

	log, _, err := wal.Open(filepath.Join(dir, "wal"), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []*wire.Batch
	if err := log.Replay(func(_ wal.Pos, b *wire.Batch) error { got = append(got, b); return nil }); err != nil {
		t.Fatal(err)
	}
	log.Close()
	if len(got) != 1 || !reflect.DeepEqual(got[0], b) {
		t.Fatalf("the log holds %+v, want the batch as sent", got)
	}

	p2 := open(t, dir, &fakeStorage{}, nil)
	if err := p2.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	sn, _, err := p2.Cut(nil)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, m := range sn.Minutes {
		total += m.State.Count
	}
	if total != 8 {
		t.Fatalf("after a restart the store holds %d events, want 8", total)
	}
}

// TestForwardingNeedsANodeCertificateOfAMember: only node certificates
// of current members may forward (batches of any agent); an agent
// certificate can neither forward nor send under another agent's name.
func TestForwardingNeedsANodeCertificateOfAMember(t *testing.T) {
	p := open(t, t.TempDir(), &fakeStorage{}, fakeMembership{})
	if err := p.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := certs(t)
	fwd := batch("someone", 2, contribution(t, "c", minute, 1, 1))
	for _, tc := range []struct {
		name string
		peer wire.Peer
		b    *wire.Batch
		want wire.AckStatus
	}{
		{"agent forwards", peer(c["edge"], wire.ALPNForward), fwd, wire.AckRejected},
		{"agent sends as another agent", peer(c["other"], wire.ALPN), batch("edge", 3, contribution(t, "c", minute, 1, 1)), wire.AckRejected},
		{"node of another cluster forwards", peer(c["stranger"], wire.ALPNForward), fwd, wire.AckRejected},
		{"member forwards", peer(c["b"], wire.ALPNForward), fwd, wire.AckOK},
		{"agent sends its own", peer(c["edge"], wire.ALPN), batch("edge", 4, contribution(t, "c", minute, 1, 1)), wire.AckOK},
	} {
		ack := p.HandleBatch(context.Background(), tc.peer, tc.b)
		if ack.Status != tc.want {
			t.Fatalf("%s: answered %s (%s), want %s", tc.name, ack.Status, ack.Reason, tc.want)
		}
		if ack.Epoch != 42 || len(ack.Members) != 2 {
			t.Fatalf("%s: ack without the membership: %+v", tc.name, ack)
		}
	}
}

// TestLateDataLoadsOnlyWhatItTouches: a batch with minutes a week apart
// is acknowledged without waiting for storage; its minutes are written
// only after their own campaign-minutes were loaded, each query naming
// only the touched campaigns and covering only runs of nearby minutes.
func TestLateDataLoadsOnlyWhatItTouches(t *testing.T) {
	week := minute - 7*24*3600
	yesterday := minute - 24*3600
	st := &fakeStorage{block: make(chan struct{})}
	// Storage holds another agent's contribution to one late minute, and
	// data of an untouched campaign in the same minutes.
	st.stored = []influx.ContribPoint{
		{Series: sketch.Series{Campaign: "old", Type: "click", Region: "eu"}, Minute: week, Agent: "edge-2", Contribs: []wire.Contribution{contribution(t, "old", week, 9, 10)}},
		{Series: sketch.Series{Campaign: "untouched", Type: "click", Region: "eu"}, Minute: week, Agent: "edge-2", Contribs: []wire.Contribution{contribution(t, "untouched", week, 9, 10)}},
	}
	p := open(t, t.TempDir(), st, nil)
	if err := p.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	edge := peer(certs(t)["edge"], wire.ALPN)
	b := batch("edge", 1, contribution(t, "old", week, 1, 1), contribution(t, "old", yesterday, 2, 2),
		contribution(t, "other", yesterday+60, 3, 3), contribution(t, "now", minute, 4, 4))
	done := make(chan wire.Ack, 1)
	go func() { done <- p.HandleBatch(context.Background(), edge, b) }()
	select {
	case ack := <-done:
		if ack.Status != wire.AckOK {
			t.Fatalf("ack %+v", ack)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the ack waited for storage")
	}
	sn, _, _ := p.Cut(func(string) bool { return false })
	if sn.Len() != 1 || sn.Minutes[0].Series.Campaign != "now" {
		t.Fatalf("cut before the load has %d minutes (%+v), want only the current one", sn.Len(), sn.Minutes)
	}
	close(st.block)
	n, err := p.LoadPending(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("LoadPending = %d, %v; want the 3 late campaign-minutes", n, err)
	}
	for _, q := range st.queries {
		if len(q.campaigns) != 1 || q.to.Sub(q.from) > time.Hour {
			t.Fatalf("query %+v names more than the touched campaign or spans more than a run", q)
		}
		if q.campaigns[0] == "old" && q.from.Unix() == week && q.to.Unix() != week+60 {
			t.Fatalf("query %+v spans the week between the minutes", q)
		}
	}
	if len(st.queries) != 3 {
		t.Fatalf("%d queries, want 3 (old: two runs a week apart; other: one)", len(st.queries))
	}
	sn, _, _ = p.Cut(func(string) bool { return false })
	counts := map[string]uint64{}
	for _, m := range sn.Minutes {
		counts[m.Series.Campaign] += m.State.Count
	}
	if counts["old"] != 1+2+10 || counts["other"] != 3 || counts["untouched"] != 0 {
		t.Fatalf("written after the load: %v; want old 13 (stored 10 merged in), other 3, untouched never", counts)
	}
}

// TestTakeOverRewritesFromStorage: a gained campaign is rebuilt from the
// contribution points of every node and rewritten.
func TestTakeOverRewritesFromStorage(t *testing.T) {
	st := &fakeStorage{stored: []influx.ContribPoint{
		{Series: sketch.Series{Campaign: "gained", Type: "click", Region: "eu"}, Minute: minute, Agent: "edge", Node: "b",
			Contribs: []wire.Contribution{contribution(t, "gained", minute, 1, 5)}},
		{Series: sketch.Series{Campaign: "kept", Type: "click", Region: "eu"}, Minute: minute, Agent: "edge", Node: "b",
			Contribs: []wire.Contribution{contribution(t, "kept", minute, 2, 6)}},
	}}
	p := open(t, t.TempDir(), st, fakeMembership{})
	if err := p.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sn, _, _ := p.Cut(nil); sn.Len() != 0 {
		t.Fatalf("minutes rebuilt at start are dirty: %+v", sn.Minutes)
	}
	n, err := p.TakeOver(context.Background(), func(c string) bool { return c == "gained" })
	if err != nil || n != 1 {
		t.Fatalf("TakeOver = %d, %v", n, err)
	}
	sn, _, _ := p.Cut(nil)
	if sn.Len() != 1 || sn.Minutes[0].Series.Campaign != "gained" || sn.Minutes[0].State.Count != 5 {
		t.Fatalf("after a takeover the cut holds %+v, want the gained minute", sn.Minutes)
	}
	if d := p.DropForeign(func(c string) bool { return c == "kept" }); d != 1 {
		t.Fatalf("DropForeign dropped %d", d)
	}
}

// TestRecoverRewritesWhatTheLogHolds: a write round sends contribution
// points and merged points in separate requests; a node that dies
// between them finds its contributions in storage at the next start. The
// minutes its log holds must be written again all the same, those whose
// contributions bring no visitors (bots, spend) too: replaying them
// changes nothing in the store, and their merged points would otherwise
// keep missing the last change for good.
func TestRecoverRewritesWhatTheLogHolds(t *testing.T) {
	dir, st := t.TempDir(), &fakeStorage{}
	p := open(t, dir, st, nil)
	if err := p.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	bots := sketch.State{Bots: map[string]uint64{"crawler": 70}}
	spend := sketch.State{Count: 2, CostMicros: 2_500_000}
	var cs []wire.Contribution
	for _, c := range []struct {
		typ, device string
		st          sketch.State
	}{{"click", "bot", bots}, {"cost", "unknown", spend}} {
		enc, err := c.st.Encode()
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, wire.Contribution{Series: sketch.Series{Campaign: "c", Type: c.typ, Device: c.device, Region: "eu"},
			Minute: minute, CID: 9, Version: 3, State: enc})
	}
	cs = append(cs, contribution(t, "c", minute, 10, 4)) // with a visitor
	if ack := p.HandleBatch(context.Background(), peer(certs(t)["edge"], wire.ALPN), batch("edge", 1, cs...)); ack.Status != wire.AckOK {
		t.Fatalf("ack %+v", ack)
	}
	sn, _, err := p.Cut(nil)
	if err != nil || sn.Len() != 3 {
		t.Fatalf("cut %d minutes, %v; want 3", sn.Len(), err)
	}
	// The round's first request stores the contribution points; the
	// node dies before the merged points are sent.
	for _, ac := range sn.Contribs {
		st.stored = append(st.stored, influx.ContribPoint{Series: ac.Key.Series, Minute: ac.Key.Minute, Agent: ac.Agent, Node: "a", Contribs: ac.Contribs})
	}
	p.Close()

	p2 := open(t, dir, st, nil)
	if err := p2.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	sn, _, err = p2.Cut(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got sketch.State
	for _, m := range sn.Minutes {
		got.MergeCounters(m.State)
	}
	if sn.Len() != 3 || got.Count != 6 || got.CostMicros != 2_500_000 || got.BotTotal() != 70 {
		t.Fatalf("after a restart the cut writes %d minutes with %d events, %d bots, %d µ spend; want 3 minutes, 6 events, 70 bots, 2500000 µ",
			sn.Len(), got.Count, got.BotTotal(), got.CostMicros)
	}
}
