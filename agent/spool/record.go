package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Spool records are seglog records whose payload starts with a kind byte,
// which is also the record's format version:
//
//	batch v1: 0x01 | seq u64 | payload                      (read only)
//	commit:   0x02 | first seq u64 | count u32 | journal pos u64 | meta data
//	batch v2: 0x03 | seq u64 | owner len u8 | owner | payload
//
// Integers are big-endian. A commit record closes the group of batch
// records written just before it: exactly count batches with consecutive
// sequence numbers starting at first seq. Batch v2 adds the owner the
// batch was grouped for (Batch.Owner); a v1 batch has none. Spools written
// before v2 existed are read as they are, and new batches are appended as
// v2 behind them.
const (
	kindBatchV1 byte = 0x01
	kindCommit  byte = 0x02
	kindBatch   byte = 0x03

	batchV1Header = 1 + 8
	batchHeader   = 1 + 8 + 1 // plus the owner
	commitHeader  = 1 + 8 + 4 + 8

	// MaxMetaData is the largest CommitMeta.Data Commit accepts.
	MaxMetaData = 1 << 20
	// MaxOwner is the longest Batch.Owner, in bytes.
	MaxOwner = 255
)

func encodeBatch(seq uint64, b Batch) []byte {
	r := make([]byte, batchHeader+len(b.Owner)+len(b.Payload))
	r[0] = kindBatch
	binary.BigEndian.PutUint64(r[1:], seq)
	r[9] = byte(len(b.Owner))
	n := batchHeader + copy(r[batchHeader:], b.Owner)
	copy(r[n:], b.Payload)
	return r
}

// batchRec is a decoded batch record; owner and payload alias the record.
type batchRec struct {
	seq     uint64
	owner   []byte
	payload []byte
}

// decodeBatch decodes a batch record of either version.
func decodeBatch(rec []byte) (batchRec, error) {
	switch {
	case len(rec) > 0 && rec[0] == kindBatchV1:
		if len(rec) < batchV1Header {
			return batchRec{}, fmt.Errorf("batch record of %d bytes is shorter than its header", len(rec))
		}
		return batchRec{seq: binary.BigEndian.Uint64(rec[1:]), payload: rec[batchV1Header:]}, nil
	case len(rec) > 0 && rec[0] == kindBatch:
		if len(rec) < batchHeader || len(rec) < batchHeader+int(rec[9]) {
			return batchRec{}, fmt.Errorf("batch record of %d bytes is shorter than its header", len(rec))
		}
		end := batchHeader + int(rec[9])
		return batchRec{seq: binary.BigEndian.Uint64(rec[1:]), owner: rec[batchHeader:end], payload: rec[end:]}, nil
	}
	return batchRec{}, errors.New("not a batch record")
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
