package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// aggRSS returns a process's resident set and its high-water mark, in
// bytes.
func aggRSS(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// TestAggPeerFloodBounded: one agent certificate opens 24 connections
// with 40 streams each, and on every stream announces a 1 MiB batch, sends
// 768 KiB of it and stalls. The first release took every connection and
// read every stream, holding the lot in memory (hundreds of MiB); now the
// peer keeps at most max_conns_per_peer connections (its oldest are
// closed), its streams beyond max_streams_per_peer wait unread, and what
// its streams hold while reading stays within max_decode_bytes_per_peer,
// so the node's memory grows by a bounded amount. A legitimate agent is
// served and counted exactly throughout.
func TestAggPeerFloodBounded(t *testing.T) {
	const (
		conns, streams = 24, 40
		announced      = 1 << 20
		sent           = 768 << 10
	)
	e := aggNewEnv(t, influxtest.Options{}, []string{"attacker", "legit"}, []string{"agg-1"})
	n := e.aggStart("agg-1", aggNodeOptions{})
	tlsConf, err := pki.ClientTLS(pki.DevFiles(e.certs, "attacker"), "localhost", wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	legit := e.aggLegit("legit", n, "legit")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := legit.send(ctx, 5); err != nil { // warm: the baseline includes a served agent
		t.Fatal(err)
	}
	_, base := aggRSS(n.proc.Pid())

	attackCtx, stopAttack := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var cs []*quic.Conn
	var mu sync.Mutex
	payload := make([]byte, sent)
	for range conns {
		c, err := quic.DialAddr(ctx, n.quic, tlsConf, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		cs = append(cs, c)
		mu.Unlock()
		for range streams {
			wg.Go(func() {
				str, err := c.OpenStreamSync(attackCtx)
				if err != nil {
					return
				}
				var hdr [wire.HeaderSize]byte
				copy(hdr[:], wire.Magic)
				hdr[2], hdr[3] = wire.ProtocolVersion, byte(wire.KindBatch)
				binary.BigEndian.PutUint32(hdr[5:], announced)
				context.AfterFunc(attackCtx, func() { str.CancelWrite(0); str.CancelRead(0) })
				if _, err := str.Write(hdr[:]); err != nil {
					return
				}
				_, _ = str.Write(payload) // blocks where the server stops granting credit
				<-attackCtx.Done()
			})
		}
	}
	defer func() {
		for _, c := range cs {
			_ = c.CloseWithError(0, "")
		}
	}()
	truth := aggWithLegit(t, e, n, "legit", "legit", func() { time.Sleep(8 * time.Second) })
	_, peak := aggRSS(n.proc.Pid())
	stopAttack()
	wg.Wait()
	e.aggWaitStored(map[string]uint64{"legit": truth + legit.acked()}, 60*time.Second)
	growth := peak - base
	t.Logf("node RSS high-water mark grew by %d MiB under the flood (attack sent up to %d MiB)", growth>>20, conns*streams*sent>>20)
	if growth > 200<<20 {
		t.Fatalf("node memory grew by %d MiB under one peer's flood; its caps should bound it near 100 MiB", growth>>20)
	}
	if v, _ := aggMetric(n.http, "tally_aggregator_quic_connections_replaced_total"); v < conns-8 {
		t.Fatalf("%v connections replaced, want at least %d (max_conns_per_peer 8)", v, conns-8)
	}
	if v, ok := aggMetric(n.http, "tally_aggregator_quic_decode_bytes_peak"); !ok || v > 64<<20+4<<20 {
		t.Fatalf("decode bytes peaked at %v, want at most the attacker's 64 MiB and the legitimate agent's own", v)
	}
}
