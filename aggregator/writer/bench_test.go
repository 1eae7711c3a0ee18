package writer

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/ingest"
	"github.com/tally-edge/tally/aggregator/quarantine"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// BenchmarkWriteRound measures one write round of a backfill's shape to a
// real InfluxDB: 500 series × 20 minutes, each with one agent's
// contribution of about 70 visitors, all dirty; the round writes the
// merged and contribution points and publishes the live view.
//
//	go test -run='^$' -bench=BenchmarkWriteRound -benchtime=5x ./aggregator/writer/
func BenchmarkWriteRound(b *testing.B) {
	srv := influxtest.Start(b)
	iw, err := influx.NewWriter(influx.Config{URL: srv.URL(), Token: srv.Token(), Bucket: srv.Bucket()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer iw.Close()
	const series, minutes = 500, 20
	now := time.Now().Truncate(time.Minute).Unix()
	var batches []*wire.Batch
	for round := range b.N {
		bt := &wire.Batch{Version: wire.ProtocolVersion, Agent: "edge", Region: "eu", Seq: uint64(round + 1)}
		for s := range series {
			for m := range minutes {
				var regs sketch.Registers
				for v := range 70 {
					regs.Add(uint64(round)<<40 | uint64(s)<<24 | uint64(m)<<16 | uint64(v) + 1)
				}
				st := sketch.State{Count: uint64(70 * (round + 1))}
				enc, _ := st.Encode()
				enc.Registers = regs.AppendUpdates(nil)
				bt.Contributions = append(bt.Contributions, wire.Contribution{Series: sketch.Series{Campaign: fmt.Sprintf("c%d", s/10),
					Source: fmt.Sprintf("s%d", s%10), Medium: "cpc", Type: "pageview", Region: "eu"}, Minute: now - int64(60*m), CID: uint64(s*minutes + m + 1),
					Version: uint64(round + 1), State: enc})
			}
		}
		batches = append(batches, bt)
	}
	cfg := ingest.DefaultConfig()
	cfg.Dir, cfg.Node = b.TempDir(), "a"
	pipe, err := ingest.Open(cfg, loads{}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer pipe.Close()
	if err := pipe.Recover(context.Background()); err != nil {
		b.Fatal(err)
	}
	q, _ := quarantine.Open(b.TempDir(), 1<<30)
	w, err := New(Config{Node: "a", Source: pipe, Storage: iw, Quarantine: q, Publisher: &recorder{}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if ack := pipe.HandleBatch(context.Background(), wire.Peer{CommonName: "edge", ALPN: wire.ALPN}, batches[i]); ack.Status != wire.AckOK {
			b.Fatal(ack)
		}
		b.StartTimer()
		if err := w.Round(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(series*minutes*b.N)/b.Elapsed().Seconds(), "minutes/s")
}
