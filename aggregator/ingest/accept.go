package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/aggregator/wal"
	"github.com/tally-edge/tally/wire"
)

// HandleBatch is HandleBatchPayload for a caller that has no payload: it
// encodes the batch to get one. The wire server calls HandleBatchPayload.
func (p *Pipeline) HandleBatch(ctx context.Context, peer wire.Peer, b *wire.Batch) wire.Ack {
	f, err := wire.EncodeBatch(b, wire.EncodeOptions{})
	if err != nil {
		return p.reject(p.ack(b), wire.RejectMalformed, "cannot encode batch: "+err.Error())
	}
	return p.HandleBatchPayload(ctx, peer, b, f[wire.HeaderSize:])
}

// HandleBatchPayload makes a batch durable, merges it and acknowledges it
// (wire.PayloadHandler). payload, the batch as its sender encoded it, is
// what the write-ahead log keeps.
func (p *Pipeline) HandleBatchPayload(_ context.Context, peer wire.Peer, b *wire.Batch, payload []byte) wire.Ack {
	ack := p.ack(b)
	if err := p.Ready(); err != nil {
		return p.answer(ack, wire.AckBusy, "aggregator is not ready: "+err.Error())
	}
	if reason := p.refusePeer(peer, b); reason != "" {
		// The sender itself is refused: every batch it sends would be,
		// so it stops shipping and says why (ship.HaltError).
		return p.reject(ack, wire.RejectIdentity, reason)
	}
	if _, _, pending := p.store.Counts(); pending >= p.cfg.MaxPendingLoads {
		return p.answer(ack, wire.AckBusy, "late data backlog: loading earlier late minutes from storage")
	}
	ds, err := decodeAll(b.Agent, b.Contributions)
	if err != nil {
		return p.reject(ack, wire.RejectMalformed, err.Error())
	}

	p.mu.Lock()
	start, end, err := p.wal.Append(payload)
	var res merge.Applied
	if err == nil {
		res, err = p.store.Apply(ds, uint64(start))
		if err != nil {
			// Decoding checked what Apply needs; this is a bug, and the
			// record replays the same way (and is skipped there).
			err = fmt.Errorf("apply: %w", err)
		}
	}
	p.mu.Unlock()
	if err != nil {
		switch {
		case errors.Is(err, wal.ErrFull):
			return p.answer(ack, wire.AckBusy, "write-ahead log full: InfluxDB is behind")
		case errors.Is(err, wal.ErrBroken):
			p.noteBroken()
			return p.answer(ack, wire.AckBusy, "write-ahead log broken")
		}
		p.log.Error("cannot accept batch", "reason", "wal_append", "agent", b.Agent, "seq", b.Seq, "err", err)
		return p.answer(ack, wire.AckBusy, "write-ahead log error")
	}
	if len(res.Late) > 0 {
		p.kickLoader()
	}
	t0 := time.Now()
	if err := p.wal.Sync(end); err != nil {
		p.noteBroken()
		return p.answer(ack, wire.AckBusy, "write-ahead log error")
	}
	p.m.walSyncSeconds.Observe(time.Since(t0).Seconds())
	if peer.ALPN == wire.ALPNForward {
		p.m.forwardedIn.Add(float64(len(ds)))
	}
	p.m.contributions.Add(float64(len(ds)))
	return p.answer(ack, wire.AckOK, "")
}

// refusePeer returns why peer may not send b, or "".
//
// Agents (ALPN tally/1) send their own batches: the batch's agent must be
// the certificate's name. Nodes (ALPN tally-fwd/1) hand over batches of
// any agent, so forwarding needs a node certificate (one agents cannot
// hold) whose name is a member of the cluster now.
func (p *Pipeline) refusePeer(peer wire.Peer, b *wire.Batch) string {
	if peer.ALPN == wire.ALPNForward {
		switch {
		case p.cfg.NodeCertificate == nil || peer.Certificate == nil || !p.cfg.NodeCertificate(peer.Certificate):
			return fmt.Sprintf("forwarded batch from %q, whose certificate is not a node certificate", peer.CommonName)
		case p.cfg.Cluster == nil && peer.CommonName != p.cfg.Node:
			// A single node takes forwards from itself only (a replay of
			// its quarantine).
			return fmt.Sprintf("forwarded batch from %q; this node runs alone", peer.CommonName)
		case p.cfg.Cluster != nil && !p.cfg.Cluster.IsMember(peer.CommonName):
			return fmt.Sprintf("forwarded batch from %q, which is not a member of this cluster", peer.CommonName)
		}
		return ""
	}
	if p.cfg.RequireAgentCN && peer.CommonName != b.Agent {
		return fmt.Sprintf("agent name %q does not match its certificate (CN %q)", b.Agent, peer.CommonName)
	}
	return ""
}

func (p *Pipeline) ack(b *wire.Batch) wire.Ack {
	ack := wire.Ack{Version: wire.ProtocolVersion, Seq: b.Seq}
	if p.cfg.Cluster != nil {
		ack.Members, ack.Epoch = p.cfg.Cluster.View()
	}
	return ack
}

func (p *Pipeline) answer(ack wire.Ack, status wire.AckStatus, reason string) wire.Ack {
	ack.Status, ack.Reason = status, reason
	if status == wire.AckBusy {
		ack.RetryAfterMillis = p.cfg.BusyRetryAfter.Milliseconds()
	}
	p.m.batches.WithLabelValues(status.String()).Inc()
	return ack
}

// reject answers AckRejected with code, which tells the sender whether
// to set this batch aside (RejectMalformed) or stop (RejectIdentity,
// RejectVersion).
func (p *Pipeline) reject(ack wire.Ack, code wire.RejectCode, reason string) wire.Ack {
	ack = p.answer(ack, wire.AckRejected, reason)
	ack.Code = code
	return ack
}

func decodeAll(agent string, cs []wire.Contribution) ([]merge.Decoded, error) {
	ds := make([]merge.Decoded, 0, len(cs))
	for i := range cs {
		d, err := merge.Decode(agent, &cs[i])
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}
