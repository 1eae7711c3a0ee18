package aggregator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/wire"
)

// serverCollector exports wire.Server's counters, one snapshot per scrape.
type serverCollector struct {
	s                                          *wire.Server
	conns, activeConns, handshakeFail, streams *prometheus.Desc
	streamErrors, bytesIn, bytesOut            *prometheus.Desc
	acks, frameErrors                          *prometheus.Desc
}

func newServerCollector(s *wire.Server) *serverCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tally_aggregator_quic_"+name, help, labels, nil)
	}
	return &serverCollector{s: s,
		conns:         d("connections_total", "QUIC connections accepted (handshake completed)."),
		activeConns:   d("connections_active", "QUIC connections open now."),
		handshakeFail: d("handshake_failures_total", "Connection attempts whose TLS handshake failed (no or untrusted client certificate, wrong ALPN)."),
		streams:       d("streams_total", "Batch exchanges started."),
		streamErrors:  d("stream_errors_total", "Exchanges that ended without an answer (deadline, reset, connection lost)."),
		bytesIn:       d("bytes_received_total", "Frame bytes received."),
		bytesOut:      d("bytes_sent_total", "Ack bytes sent."),
		acks:          d("acks_total", "Answers sent, by status.", "status"),
		frameErrors:   d("frame_errors_total", "Frames refused by the protocol layer, by reason.", "reason"),
	}
}

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.activeConns, c.handshakeFail, c.streams, c.streamErrors, c.bytesIn, c.bytesOut, c.acks, c.frameErrors} {
		ch <- d
	}
}

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.conns, st.Connections)
	ch <- prometheus.MustNewConstMetric(c.activeConns, prometheus.GaugeValue, float64(st.ActiveConnections))
	counter(c.handshakeFail, st.HandshakeFailures)
	counter(c.streams, st.Streams)
	counter(c.streamErrors, st.StreamErrors)
	counter(c.bytesIn, st.BytesIn)
	counter(c.bytesOut, st.BytesOut)
	for status, n := range st.Acks {
		counter(c.acks, n, status.String())
	}
	for reason, n := range st.FrameErrors {
		counter(c.frameErrors, n, reason.String())
	}
}
