package spool

import (
	"encoding/binary"
	"fmt"
)

// Spool records are seglog records whose payload starts with a kind byte.
//
//	batch:  0x01 | seq u64 | payload
//	commit: 0x02 | first seq u64 | count u32 | journal pos u64 | meta data
//
// Integers are big-endian. A commit record closes the group of batch
// records written just before it: exactly count batches with consecutive
// sequence numbers starting at first seq.
const (
	kindBatch  byte = 0x01
	kindCommit byte = 0x02

	batchHeader  = 1 + 8
	commitHeader = 1 + 8 + 4 + 8

	// MaxMetaData is the largest CommitMeta.Data Commit accepts.
	MaxMetaData = 64 << 10
)

func encodeBatch(seq uint64, payload []byte) []byte {
	b := make([]byte, batchHeader+len(payload))
	b[0] = kindBatch
	binary.BigEndian.PutUint64(b[1:], seq)
	copy(b[batchHeader:], payload)
	return b
}

type commitRec struct {
	first uint64
	count uint32
	meta  CommitMeta
}

func encodeCommit(c commitRec) []byte {
	b := make([]byte, commitHeader+len(c.meta.Data))
	b[0] = kindCommit
	binary.BigEndian.PutUint64(b[1:], c.first)
	binary.BigEndian.PutUint32(b[9:], c.count)
	binary.BigEndian.PutUint64(b[13:], c.meta.JournalPos)
	copy(b[commitHeader:], c.meta.Data)
	return b
}

// decodeBatch returns the sequence number of a batch record; the payload
// is rec[batchHeader:].
func decodeBatch(rec []byte) (uint64, error) {
	if len(rec) < batchHeader {
		return 0, fmt.Errorf("batch record of %d bytes is shorter than its header", len(rec))
	}
	return binary.BigEndian.Uint64(rec[1:]), nil
}

// decodeCommit decodes a commit record; meta.Data is copied.
func decodeCommit(rec []byte) (commitRec, error) {
	if len(rec) < commitHeader {
		return commitRec{}, fmt.Errorf("commit record of %d bytes is shorter than its header", len(rec))
	}
	c := commitRec{
		first: binary.BigEndian.Uint64(rec[1:]),
		count: binary.BigEndian.Uint32(rec[9:]),
		meta:  CommitMeta{JournalPos: binary.BigEndian.Uint64(rec[13:])},
	}
	if len(rec) > commitHeader {
		c.meta.Data = append([]byte(nil), rec[commitHeader:]...)
	}
	return c, nil
}
