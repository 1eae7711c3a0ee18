// Package wire is the protocol agents use to ship per-minute sketches to
// aggregators, and aggregators use to forward them to a campaign's owner:
// msgpack messages in small binary frames, one exchange per QUIC stream,
// over mutually authenticated TLS 1.3.
//
// # Frames
//
// A frame is a fixed 9-byte header followed by the payload. Multi-byte
// integers are big-endian.
//
//	offset  size  field
//	     0     2  magic, the ASCII bytes "TL" (0x54 0x4c)
//	     2     1  protocol version, 1 (ProtocolVersion)
//	     3     1  message kind: 1 = Batch, 2 = Ack, 3 = Live
//	     4     1  flags: bit 0 set = payload is zstd-compressed;
//	              bits 1-7 are zero
//	     5     4  payload length in bytes, as sent (after compression)
//	     9     n  payload
//
// The payload is the msgpack encoding of the message: a Batch or an Ack as
// declared in message.go, each struct a map keyed by the short names in its
// msgpack tags. Integers use their smallest encoding. When flag bit 0 is
// set, the payload is a single zstd frame; the decompressed msgpack is what
// the rest of this description calls the payload. Senders compress only
// payloads of 256 bytes or more, for which one-shot zstd compressors
// declare the content size; a frame without a declared size is accepted
// only while it decompresses to at most 64 KiB.
//
// A receiver refuses, before reading or allocating anything more:
//   - a payload length above its MaxFrameSize (DefaultMaxFrameSize, 16 MiB,
//     unless configured), and a zstd frame declaring more than that;
//   - unknown kinds and flag bits, a bad magic, an unknown version.
//
// It then refuses msgpack that is not exactly one well-formed value, that
// nests deeper than 16 containers, or whose arrays hold more than
// MaxContributions elements or maps more than 1024 entries: the decoder
// allocates what lengths declare, so the lengths are checked against the
// bytes present first. Finally the message must pass its Validate method.
//
// # Streams
//
// Every exchange has its own bidirectional QUIC stream, which makes frames
// self-delimiting without any resynchronisation story, keeps a slow or bad
// batch from holding up the others, and lets a sender pipeline as many
// batches as the receiver grants streams:
//
//  1. The sender opens a stream, writes one Batch frame and closes its
//     side of the stream (FIN).
//  2. The receiver reads the frame and then the stream to its end: a
//     second frame, or any byte after the first, is a malformed exchange.
//     (Reading to the end also matters to quic-go: a stream's credit goes
//     back to the sender only once the receiving side has seen the FIN.)
//  3. The receiver answers with one Ack frame carrying the batch's Seq and
//     closes its side. (Acks are small and sent plain; a reader accepts
//     either form of any frame.)
//
// An Ack with AckOK means the batch is durable at the receiver. Any other
// status, and any failure before an Ack arrives, means the sender keeps the
// batch; since contributions are versioned cumulative state, sending it
// again never double counts.
//
// A frame the receiver cannot accept (bad magic, unknown version or kind,
// too large, truncated, malformed or invalid message) is answered on its
// own stream with an AckRejected whose Reason says what was wrong, e.g.
// "unknown protocol version: frame has version 2, this node speaks 1
// (ALPN "tally/1")"; the receiver then stops reading that stream with
// STOP_SENDING (code StreamCodeRejected). Only that stream ends: the
// connection and its other streams carry on. When the frame could not be
// read far enough to know the batch's Seq, the rejection carries Seq 0; a
// sender takes it as the answer to that stream and sets the batch aside,
// since resending the same bytes cannot succeed. Each stream has a deadline
// (ServerConfig.StreamTimeout); a stream that misses it is reset with
// StreamCodeTimeout and gets no Ack.
//
// # Live counters
//
// Besides batches, an agent sends live counters: about once a second, the
// cumulative counts of every campaign-minute that changed (per event
// type: impressions, clicks, conversions, pageviews, every other type;
// value and cost sums; bots), for the live view only. They are never
// acknowledged and never stored; durable contributions supersede them.
//
// They travel on a unidirectional stream of their own (QUIC urgency 1,
// ahead of the batches' default 3), which carries a sequence of frames
// of kind 3 for as long as the connection lasts; the server reads them in
// order and answers nothing. A server grants agents' connections (ALPN
// "tally/1") two such streams when its handler takes live counters
// (LiveHandler), none otherwise, so an agent meeting a server that
// predates them simply cannot open one (OpenLive returns ErrNoLive); a
// kind-3 frame on a batch stream is the wrong kind and rejected like any.
//
// Because the stream is ordered and reliable, its frames are encoded
// against what the stream carried before. Each payload is a msgpack map:
//
//	"e"  the agent's restart epoch (first message of a stream only)
//	"f"  the agent's flush interval in ms (first message only)
//	"s"  sequence number, increasing over all the epoch's messages
//	"k"  campaign-minutes named for the first time: a flat array
//	     campaign, minute, campaign, minute…; they get the refs
//	     0, 1, 2… in the order the stream names them (omitted if none)
//	"x"  refs the receiver may forget (omitted if none)
//	"d"  the records, as bytes: for each changed campaign-minute its
//	     ref (uvarint), a byte whose bit i says field i changed, and for
//	     each such field the difference from the value the stream last
//	     carried for it (zigzag varint); fields in order: impressions,
//	     clicks, conversions, pageviews, other, value µ, cost µ, bots
//
// The receiver turns differences back into absolute, cumulative values
// (Live); a counter that would go below zero or overflow, a ref the
// stream never named, an unchanged record, more than MaxLiveRefs named
// at once, or a sequence that does not increase refuses the stream, which
// the receiver then stops reading: the sender opens another and starts
// from zero again. Ten campaigns that all change every second cost about
// 130 bytes a message. The receiver's rules for cumulative values (the
// highest sequence wins, the durable contribution supersedes) live in
// aggregator/liveview.
//
// # Connections and ALPN
//
// QUIC runs TLS 1.3 only. Both sides present certificates signed by the
// cluster CA (see internal/pki); the receiver reads the sender's identity
// from its verified certificate's CommonName (Peer.CommonName). The TLS
// application protocol (ALPN) names the protocol and its major version:
// "tally/1" (ALPN) from agents to aggregators, "tally-fwd/1" (ALPNForward)
// between aggregators. A client that offers no ALPN the server knows fails
// the handshake. Connections are long-lived; the client sends keep-alives,
// and reconnecting after a ConnError is the caller's decision.
//
// A process should use one Endpoint (one UDP socket, one quic.Transport)
// for everything it serves and dials: an aggregator accepts agents and
// dials its peers from the same port.
//
// # Per-peer limits
//
// A server bounds what one peer — one certificate identity, over all its
// connections — may hold (see limits.go): connections (a new one beyond
// MaxConnsPerPeer closes the peer's oldest with CONNECTION_CLOSE code
// ConnCodeReplaced; beyond MaxConns a new one is closed with ConnCodeBusy),
// exchanges in progress (further streams wait unread until a slot frees),
// and the bytes its streams hold while reading and decompressing frames (a
// stream waits for room for its payload; one that finds no room to
// decompress is reset with StreamCodeBusy, and the sender sends the batch
// again). Receive windows are capped at 2 MiB per stream and 4 MiB per
// connection, so streams that wait unread hold little. A handler that
// implements PayloadHandler also gets each batch's decompressed payload,
// byte for byte as the sender encoded it.
//
// # Versions
//
// The first three header bytes, magic and version, mean the same in every
// version, so any receiver can name the version of a frame it does not
// understand; everything after them is defined by that version. Within a
// version, a message may gain optional fields (old receivers skip unknown
// map keys; new ones see zero values from old senders) and nothing else.
// Renaming or retyping a field, changing the header, adding a flag bit, a
// kind or an Ack status that old receivers must understand, all need the
// next version: a new ProtocolVersion and a new ALPN ("tally/2"), served
// side by side with the old one until every agent has moved. The golden
// frames in testdata/ fail to match on any change of the encoding, so such
// a change is always deliberate.
package wire
