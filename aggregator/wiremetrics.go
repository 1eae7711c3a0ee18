package aggregator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/wire"
)

// serverCollector exports wire.Server's counters, one snapshot per scrape.
type serverCollector struct {
	s                                          *wire.Server
	conns, activeConns, handshakeFail, streams *prometheus.Desc
	streamErrors, bytesIn, bytesOut            *prometheus.Desc
	acks, frameErrors                          *prometheus.Desc
	connsRefused, connsReplaced                *prometheus.Desc
	streamWaits, decodeBusy                    *prometheus.Desc
	decodeBytes, decodePeak                    *prometheus.Desc
	liveStreams, liveMessages, liveRefused     *prometheus.Desc
	liveBytes                                  *prometheus.Desc
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
		connsRefused:  d("connections_refused_total", "Connections closed at once because the node held quic.max_conns."),
		connsReplaced: d("connections_replaced_total", "Connections closed because their peer opened more than quic.max_conns_per_peer."),
		streamWaits:   d("stream_waits_total", "Batches that waited for a slot of their peer (quic.max_streams_per_peer)."),
		decodeBusy:    d("decode_budget_refusals_total", "Batches reset because their peer's decode memory budget had no room."),
		decodeBytes:   d("decode_bytes", "Memory batches hold while being read and decompressed."),
		decodePeak:    d("decode_bytes_peak", "The most memory batches held at once while being read and decompressed."),
		liveStreams:   d("live_streams_total", "Live-counter streams agents opened."),
		liveMessages:  d("live_stream_messages_total", "Live-counter messages read from agents."),
		liveRefused:   d("live_streams_refused_total", "Live-counter streams ended because a message was refused (also in frame_errors_total)."),
		liveBytes:     d("live_bytes_received_total", "Bytes read from live-counter streams (not in bytes_received_total)."),
	}
}

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.activeConns, c.handshakeFail, c.streams, c.streamErrors, c.bytesIn, c.bytesOut, c.acks, c.frameErrors,
		c.connsRefused, c.connsReplaced, c.streamWaits, c.decodeBusy, c.decodeBytes, c.decodePeak,
		c.liveStreams, c.liveMessages, c.liveRefused, c.liveBytes} {
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
	counter(c.connsRefused, st.ConnsRefused)
	counter(c.connsReplaced, st.ConnsReplaced)
	counter(c.streamWaits, st.StreamWaits)
	counter(c.decodeBusy, st.DecodeBusy)
	counter(c.liveStreams, st.LiveStreams)
	counter(c.liveMessages, st.LiveMessages)
	counter(c.liveRefused, st.LiveRefused)
	counter(c.liveBytes, st.LiveBytesIn)
	ch <- prometheus.MustNewConstMetric(c.decodeBytes, prometheus.GaugeValue, float64(st.DecodeBytes))
	ch <- prometheus.MustNewConstMetric(c.decodePeak, prometheus.GaugeValue, float64(st.DecodeBytesPeak))
}

// fanoutCollector exports the live fan-out's messages between nodes.
type fanoutCollector struct {
	f    *live.Fanout
	msgs *prometheus.Desc
}

func newFanoutCollector(f *live.Fanout) *fanoutCollector {
	return &fanoutCollector{f: f, msgs: prometheus.NewDesc("tally_aggregator_live_messages_total",
		"Live-update messages between nodes: sent, send_error (missed a node), received, refused (failed a signature, membership, age or replay check).",
		[]string{"result"}, nil)}
}

func (c *fanoutCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.msgs }

func (c *fanoutCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.f.Stats()
	for result, n := range map[string]uint64{"sent": st.Sent, "send_error": st.SendErrors, "received": st.Received, "refused": st.Refused} {
		ch <- prometheus.MustNewConstMetric(c.msgs, prometheus.CounterValue, float64(n), result)
	}
}
