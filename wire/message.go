package wire

import (
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/sketch"
)

// ProtocolVersion is the version of the messages defined here. It is carried
// in every frame header and in every message, and named by the ALPN.
const ProtocolVersion = 1

// ALPN is the TLS application protocol agents speak to aggregators.
const ALPN = "tally/1"

// ALPNForward is the TLS application protocol aggregators speak to each
// other when forwarding contributions to their owner.
const ALPNForward = "tally-fwd/1"

// Batch is one flush (or part of one) from an agent: the latest state of
// every (series, minute) that changed since the previous flush.
type Batch struct {
	// Version is ProtocolVersion of the sender.
	Version uint8 `msgpack:"ver"`
	// Agent is the sending agent's stable name. Together with CID it makes
	// a contribution's identity.
	Agent string `msgpack:"agent"`
	// Region is the agent's region label when it sent the batch. The
	// region that counts is the one inside each Series: a batch spooled
	// before an operator renamed the region keeps its old labels.
	Region string `msgpack:"region"`
	// Seq is the agent's spool sequence number of this batch, echoed in the
	// Ack so pipelined acks can be matched.
	Seq uint64 `msgpack:"seq"`
	// Contributions carry the state.
	Contributions []Contribution `msgpack:"contribs"`
}

// RawBatch is a Batch whose contributions are already encoded: the
// msgpack array of Contribution that an agent keeps in its spool. It
// encodes to exactly the bytes of the equivalent Batch (same keys, same
// order), so receivers decode an ordinary Batch; senders skip decoding and
// re-encoding what they spooled.
type RawBatch struct {
	Version       uint8              `msgpack:"ver"`
	Agent         string             `msgpack:"agent"`
	Region        string             `msgpack:"region"`
	Seq           uint64             `msgpack:"seq"`
	Contributions msgpack.RawMessage `msgpack:"contribs"`
}

// Contribution is one agent's state of one series-minute.
//
// CID names the agent-side state object. An agent gives every state object
// it creates a fresh CID (its restart epoch in the high 32 bits, a counter in
// the low 32), so two contributions with different CIDs never overlap and
// their counts add. Version increases with every flush of the same CID: the
// receiver keeps the counters of the highest version and unions every HLL
// delta it has received for that CID.
type Contribution struct {
	Series  sketch.Series `msgpack:"s"`
	Minute  int64         `msgpack:"m"`
	CID     uint64        `msgpack:"id"`
	Version uint64        `msgpack:"v"`
	// State holds cumulative counters and quantiles, and the HLL delta
	// since the previous version.
	State sketch.Encoded `msgpack:"d"`
}

// AckStatus says what the receiver did with a batch.
type AckStatus uint8

const (
	// AckOK means the batch is durable at the receiver; the sender may
	// forget it.
	AckOK AckStatus = 1
	// AckRejected means the batch can never be accepted (bad version,
	// malformed content). Reason says why. Resending it will not help.
	AckRejected AckStatus = 2
	// AckRedirect means another node owns the batch's campaigns; Redirect
	// names it.
	AckRedirect AckStatus = 3
	// AckBusy means the receiver cannot make the batch durable now (its
	// write-ahead log is full, storage is down); retry after RetryAfterMillis.
	AckBusy AckStatus = 4
)

// String names the status for logs and metric labels.
func (s AckStatus) String() string {
	switch s {
	case AckOK:
		return "ok"
	case AckRejected:
		return "rejected"
	case AckRedirect:
		return "redirect"
	case AckBusy:
		return "busy"
	}
	return "unknown"
}

// RejectCode says why a batch was rejected, which decides what the
// sender does next.
type RejectCode string

const (
	// RejectMalformed: this batch can never be accepted (bad content).
	// The sender sets it aside (a dead letter) and goes on with the next.
	RejectMalformed RejectCode = "malformed"
	// RejectIdentity: the receiver refuses the sender itself — its agent
	// name does not match its certificate, or it is not allowed to send
	// this kind of batch. Every batch would be refused alike, so the
	// sender stops shipping and says so, keeping its batches.
	RejectIdentity RejectCode = "identity"
	// RejectVersion: the receiver does not speak the sender's protocol
	// version. The sender stops shipping, as for RejectIdentity.
	RejectVersion RejectCode = "version"
)

// Member is an aggregator node as agents should know it.
type Member struct {
	Name string `msgpack:"name"`
	// Addr is the node's QUIC address (host:port) for agents.
	Addr string `msgpack:"addr"`
}

// Ack answers one Batch on the same stream.
type Ack struct {
	Version uint8     `msgpack:"ver"`
	Seq     uint64    `msgpack:"seq"`
	Status  AckStatus `msgpack:"status"`
	// Reason explains a rejection or a busy answer.
	Reason string `msgpack:"reason,omitempty"`
	// Code classifies an AckRejected for the sender (RejectMalformed,
	// RejectIdentity, RejectVersion; "" is RejectMalformed). Receivers
	// that predate it send none.
	Code RejectCode `msgpack:"code,omitempty"`
	// RetryAfterMillis is the receiver's hint for AckBusy.
	RetryAfterMillis int64 `msgpack:"retry,omitempty"`
	// Redirect is the owner's QUIC address for AckRedirect.
	Redirect string `msgpack:"redirect,omitempty"`
	// Members is the receiver's current view of the cluster, so agents can
	// route to owners directly. Empty from a single node.
	Members []Member `msgpack:"members,omitempty"`
	// Epoch is the receiver's membership epoch; agents re-send open minutes
	// when it changes.
	Epoch uint64 `msgpack:"epoch,omitempty"`
}
