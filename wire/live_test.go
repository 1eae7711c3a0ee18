package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// liveTruth is what a receiver should hold: the last counters sent for
// every campaign-minute.
type liveTruth map[liveKey]LiveCounters

// randomLive returns a message over keys: some records changed from
// truth (counts only grow; money moves both ways), the rest as they were.
func randomLive(rng *rand.Rand, truth liveTruth, keys []liveKey, seq uint64) *Live {
	m := &Live{Epoch: 7, Seq: seq, Flush: 15 * time.Second}
	for _, k := range keys {
		c := truth[k]
		if rng.IntN(3) > 0 {
			c.AddCount([]string{"impression", "click", "conversion", "pageview", "cost"}[rng.IntN(5)], rng.Uint64N(200))
			c.ValueMicros += rng.Int64N(2e10) - 1e9
			if rng.IntN(4) == 0 {
				c.Bots += rng.Uint64N(3)
			}
		}
		m.Records = append(m.Records, LiveRecord{Campaign: k.campaign, Minute: k.minute, Counters: c})
	}
	return m
}

func TestLiveEncodingRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	enc, dec := NewLiveEncoder(), NewLiveDecoder()
	truth := liveTruth{}
	var keys []liveKey
	for c := range 12 {
		for m := range 3 {
			keys = append(keys, liveKey{fmt.Sprintf("campaign-%02d", c), baseMinute + 60*int64(m)})
		}
	}
	for seq := uint64(1); seq <= 200; seq++ {
		if seq%50 == 0 {
			// Retire a minute and open the next one.
			old := keys[0]
			enc.Retire(old.campaign, old.minute)
			delete(truth, old)
			keys = append(keys[1:], liveKey{old.campaign, old.minute + 180})
		}
		m := randomLive(rng, truth, keys, seq)
		frame, ok, err := enc.AppendFrame(nil, m, seq%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		want := map[liveKey]LiveCounters{}
		for _, r := range m.Records {
			k := liveKey{r.Campaign, r.Minute}
			if truth[k] != r.Counters {
				want[k] = r.Counters
			}
			truth[k] = r.Counters
		}
		if !ok {
			if len(want) > 0 {
				t.Fatalf("message %d: nothing sent, %d records changed", seq, len(want))
			}
			continue
		}
		f, err := ReadFrame(bytes.NewReader(frame), MaxLiveFrameSize)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dec.Decode(f)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if got.Epoch != 7 || got.Seq != seq || got.Flush != 15*time.Second {
			t.Fatalf("message %d: header %d %d %s", seq, got.Epoch, got.Seq, got.Flush)
		}
		gotMap := map[liveKey]LiveCounters{}
		for _, r := range got.Records {
			gotMap[liveKey{r.Campaign, r.Minute}] = r.Counters
		}
		if !reflect.DeepEqual(gotMap, want) {
			t.Fatalf("message %d decodes to\n%v\nwant\n%v", seq, gotMap, want)
		}
	}
	if enc.Known() != dec.Known() {
		t.Fatalf("encoder names %d campaign-minutes, decoder %d", enc.Known(), dec.Known())
	}
}

// TestLiveMessagesAreSmall pins the cost the bandwidth budget rests on:
// ten campaigns whose five counts move by a few dozen a second and whose
// revenue moves by thousands cost about 12 bytes each.
func TestLiveMessagesAreSmall(t *testing.T) {
	enc := NewLiveEncoder()
	truth := map[int]LiveCounters{}
	var size int
	for seq := uint64(1); seq <= 61; seq++ {
		m := &Live{Epoch: 3, Seq: seq, Flush: 15 * time.Second}
		for c := range 10 {
			cs := truth[c]
			cs.Impressions += 33
			cs.Clicks += 34
			cs.Conversions += 33
			cs.Pageviews += 32
			cs.Other += 35
			cs.ValueMicros += 5_123_450_000
			truth[c] = cs
			m.Records = append(m.Records, LiveRecord{Campaign: fmt.Sprintf("campaign_%02d", c), Minute: baseMinute, Counters: cs})
		}
		frame, _, err := enc.AppendFrame(nil, m, true)
		if err != nil {
			t.Fatal(err)
		}
		if seq > 1 {
			size += len(frame)
		}
	}
	if per := size / 60; per > 150 {
		t.Fatalf("a steady message of 10 campaigns costs %d bytes, want at most 150", per)
	}
}

func TestLiveDecoderRefuses(t *testing.T) {
	first := func() []byte {
		b := appendMapLen(nil, 4)
		b = append(b, 0xa1, 'e', 5, 0xa1, 's', 1, 0xa1, 'k')
		b = appendArrayLen(b, 2)
		b = appendString(b, "spring")
		b = appendInt(b, baseMinute)
		b = append(b, 0xa1, 'd')
		return appendBytes(b, []byte{0, 1, 2}) // ref 0, impressions +1
	}
	next := func(fields ...any) []byte {
		b := appendMapLen(nil, len(fields)/2)
		for i := 0; i < len(fields); i += 2 {
			b = appendString(b, fields[i].(string))
			switch v := fields[i+1].(type) {
			case int:
				b = appendInt(b, int64(v))
			case []byte:
				b = appendBytes(b, v)
			case []any:
				b = appendArrayLen(b, len(v))
				for _, x := range v {
					switch x := x.(type) {
					case string:
						b = appendString(b, x)
					case int:
						b = appendInt(b, int64(x))
					}
				}
			}
		}
		return b
	}
	for _, tc := range []struct {
		name     string
		payloads [][]byte
		want     Reason
	}{
		{"no epoch", [][]byte{next("s", 1, "d", []byte{})}, ErrInvalid},
		{"backfill epoch", [][]byte{next("e", 1<<31, "s", 1, "d", []byte{})}, ErrInvalid},
		{"unknown ref", [][]byte{first(), next("s", 2, "d", []byte{1, 1, 2})}, ErrInvalid},
		{"seq repeats", [][]byte{first(), next("s", 1, "d", []byte{0, 1, 2})}, ErrInvalid},
		{"epoch changes", [][]byte{first(), next("e", 6, "s", 2, "d", []byte{0, 1, 2})}, ErrInvalid},
		{"count below zero", [][]byte{first(), next("s", 2, "d", []byte{0, 1, 5})}, ErrInvalid},
		{"empty mask", [][]byte{first(), next("s", 2, "d", []byte{0, 0})}, ErrInvalid},
		{"cut record", [][]byte{first(), next("s", 2, "d", []byte{0, 3, 2})}, ErrMalformed},
		{"minute not a minute", [][]byte{next("e", 5, "s", 1, "k", []any{"a", baseMinute + 1}, "d", []byte{})}, ErrInvalid},
		{"empty campaign", [][]byte{next("e", 5, "s", 1, "k", []any{"", baseMinute}, "d", []byte{})}, ErrInvalid},
		{"odd keys", [][]byte{next("e", 5, "s", 1, "k", []any{"a"}, "d", []byte{})}, ErrInvalid},
		{"key of numbers", [][]byte{next("e", 5, "s", 1, "k", []any{1, baseMinute}, "d", []byte{})}, ErrInvalid},
		{"overflow", [][]byte{first(), next("s", 2, "d", append([]byte{0, 1 << 5}, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)),
			next("s", 3, "d", append([]byte{0, 1 << 5}, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := NewLiveDecoder()
			var err error
			for i, p := range tc.payloads {
				if _, err = dec.Decode(Frame{Version: ProtocolVersion, Kind: KindLive, Payload: p}); err != nil {
					if i != len(tc.payloads)-1 {
						t.Fatalf("payload %d refused: %v", i, err)
					}
					break
				}
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := NewLiveDecoder().Decode(Frame{Kind: KindBatch, Payload: []byte{0x80}}); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("a batch on a live stream: %v", err)
	}
}

func TestLiveRefsBounded(t *testing.T) {
	enc := NewLiveEncoder()
	m := &Live{Epoch: 1, Seq: 1}
	for i := range MaxLiveRefs + 1 {
		m.Records = append(m.Records, LiveRecord{Campaign: fmt.Sprint("c", i), Minute: baseMinute, Counters: LiveCounters{Clicks: 1}})
	}
	if _, _, err := enc.AppendFrame(nil, m, false); err == nil {
		t.Fatal("encoder named more campaign-minutes than a stream may")
	}
	// A decoder refuses the same from a sender that does not check.
	b := appendMapLen(nil, 4)
	b = append(b, 0xa1, 'e', 5, 0xa1, 's', 1, 0xa1, 'k')
	b = appendArrayLen(b, 2*(MaxLiveRefs+1))
	for i := range MaxLiveRefs + 1 {
		b = appendString(b, fmt.Sprint("c", i))
		b = appendInt(b, baseMinute)
	}
	b = append(b, 0xa1, 'd')
	b = appendBytes(b, nil)
	if _, err := NewLiveDecoder().Decode(Frame{Kind: KindLive, Payload: b}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("decoder took %d campaign-minutes: %v", MaxLiveRefs+1, err)
	}
}

// liveStreamGolden returns the two messages of testdata/live-stream.bin.
func liveStreamGolden() []*Live {
	c := LiveCounters{Impressions: 120, Clicks: 7, Conversions: 1, ValueMicros: 19_990_000, Bots: 3}
	m1 := &Live{Epoch: 42, Seq: 1, Flush: 15 * time.Second, Records: []LiveRecord{
		{Campaign: "spring-sale", Minute: baseMinute, Counters: c},
		{Campaign: "newsletter-03", Minute: baseMinute + 60, Counters: LiveCounters{Other: 4, CostMicros: 2_500_000}},
	}}
	c.Impressions, c.Clicks, c.ValueMicros = 180, 9, 9_990_000 // a refund
	m2 := &Live{Epoch: 42, Seq: 2, Flush: 15 * time.Second, Records: []LiveRecord{
		{Campaign: "spring-sale", Minute: baseMinute, Counters: c},
		{Campaign: "newsletter-03", Minute: baseMinute + 60, Counters: LiveCounters{Other: 4, CostMicros: 2_500_000}},
	}}
	return []*Live{m1, m2}
}

// TestLiveGolden pins the bytes of a two-message live stream; regenerate
// with -update (see golden_test.go) only for a deliberate change.
func TestLiveGolden(t *testing.T) {
	msgs := liveStreamGolden()
	enc := NewLiveEncoder()
	var stream []byte
	for _, m := range msgs {
		var err error
		if stream, _, err = enc.AppendFrame(stream, m, false); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join("testdata", "live-stream.bin")
	if *update {
		if err := os.WriteFile(path, stream, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join("testdata", "fuzz", "FuzzDecodeLive"), 0o755); err != nil {
			t.Fatal(err)
		}
		seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", stream)
		if err := os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzDecodeLive", "golden-live-stream"), []byte(seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden stream (run with -update to create it): %v", err)
	}
	if !bytes.Equal(stream, want) {
		t.Fatalf("live stream encodes to different bytes:\n got %x\nwant %x", stream, want)
	}
	dec := NewLiveDecoder()
	r := bytes.NewReader(want)
	for i, m := range msgs {
		f, err := ReadFrame(r, MaxLiveFrameSize)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dec.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		// The second message carries only the record that changed.
		wantRecs := m.Records
		if i == 1 {
			wantRecs = m.Records[:1]
		}
		if got.Epoch != m.Epoch || got.Seq != m.Seq || got.Flush != m.Flush || !reflect.DeepEqual(got.Records, wantRecs) {
			t.Fatalf("message %d decodes to %+v, want %+v", i, got, m)
		}
	}
}

// liveRecorder is a handler that takes batches and live messages.
type liveRecorder struct {
	recorder
	mu    sync.Mutex
	live  []*Live
	peers []Peer
}

func (r *liveRecorder) HandleLive(_ context.Context, p Peer, m *Live) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = append(r.live, m)
	r.peers = append(r.peers, p)
}

func (r *liveRecorder) messages() ([]*Live, []Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Live(nil), r.live...), append([]Peer(nil), r.peers...)
}

func TestLiveOverQUIC(t *testing.T) {
	p := newTestPKI(t)
	rec := &liveRecorder{}
	srv := startServer(t, p, rec, nil)
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{Compress: true})
	ls, err := c.OpenLive(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	truth := liveTruth{}
	keys := []liveKey{{"a", baseMinute}, {"b", baseMinute}, {"c", baseMinute + 60}}
	var sent uint64
	for seq := uint64(1); seq <= 20; seq++ {
		m := randomLive(rng, truth, keys, seq)
		n, err := ls.Send(m, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		sent += uint64(n)
		for _, r := range m.Records {
			truth[liveKey{r.Campaign, r.Minute}] = r.Counters
		}
	}
	// A batch on the same connection still works beside the live stream.
	if ack, err := c.Send(testCtx(t), buildBatch(t, 3, 9)); err != nil || ack.Status != AckOK {
		t.Fatalf("batch beside a live stream: %v %v", ack, err)
	}
	waitFor(t, "live messages", func() bool { return srv.Stats().LiveBytesIn == sent })
	msgs, peers := rec.messages()
	got := liveTruth{}
	for i, m := range msgs {
		if peers[i].CommonName != "agent1" || peers[i].ALPN != ALPN {
			t.Fatalf("peer %+v", peers[i])
		}
		for _, r := range m.Records {
			got[liveKey{r.Campaign, r.Minute}] = r.Counters
		}
	}
	if !reflect.DeepEqual(got, truth) {
		t.Fatalf("receiver holds %v, want %v", got, truth)
	}
	st := srv.Stats()
	if st.LiveStreams != 1 || st.LiveMessages != uint64(len(msgs)) || st.LiveRefused != 0 || ls.BytesSent() != sent {
		t.Fatalf("stats %+v, %d messages, %d bytes sent", st, len(msgs), sent)
	}

	// A stream that sends garbage is refused; the connection and a new
	// stream carry on.
	bad, err := c.OpenLive(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.str.Write([]byte("TL\x01\x03\x00\x00\x00\x00\x01\xc1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bad.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a refused live stream was not stopped")
	}
	waitFor(t, "refusal", func() bool { return srv.Stats().LiveRefused == 1 })
	ls.Abort()
	again, err := c.OpenLive(testCtx(t))
	if err != nil {
		t.Fatalf("a third live stream (after two ended): %v", err)
	}
	if _, err := again.Send(&Live{Epoch: 7, Seq: 100, Records: []LiveRecord{{Campaign: "a", Minute: baseMinute, Counters: LiveCounters{Clicks: 1}}}},
		time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "message on a new stream", func() bool { m, _ := rec.messages(); return len(m) == len(msgs)+1 })
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNoLiveFromOldServersOrNodes(t *testing.T) {
	p := newTestPKI(t)
	// A server whose handler takes no live counters grants no stream.
	srv := startServer(t, p, okHandler, nil)
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.OpenLive(short); !errors.Is(err, ErrNoLive) {
		t.Fatalf("OpenLive on a server without live counters: %v", err)
	}
	// Live counters come from agents, not from forwarding nodes.
	rec := &liveRecorder{}
	srv2 := startServer(t, p, rec, func(c *ServerConfig) { c.TLS = p.serverTLS(t, ALPN, ALPNForward) })
	fc := dialServer(t, srv2, p.clientTLS(t, "agg1", ALPNForward), ClientConfig{})
	ls, err := fc.OpenLive(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Send(&Live{Epoch: 1, Seq: 1, Records: []LiveRecord{{Campaign: "a", Minute: baseMinute, Counters: LiveCounters{Clicks: 1}}}},
		time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ls.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a node's live stream was not refused")
	}
	if m, _ := rec.messages(); len(m) != 0 {
		t.Fatalf("a forwarding connection's live message was handled: %+v", m)
	}
}
