package spool

import (
	"fmt"
	"time"
)

// Config tunes a Spool. Zero fields take the values of DefaultConfig.
type Config struct {
	// MaxBytes bounds the spool's segment files on disk, in bytes. Commit
	// fails with ErrFull rather than exceed it. Default 1 GiB. Because
	// disk is freed a segment at a time, up to one SegmentSize of acked
	// data may still count against it.
	MaxBytes int64
	// SegmentSize is the size of one segment file, in bytes. Default
	// 16 MiB; at most MaxBytes/2. Smaller segments give disk back sooner
	// after acks, larger ones mean fewer files and directory fsyncs.
	SegmentSize int64
	// MaxBatchSize is the largest batch payload Commit accepts, in bytes.
	// Default 8 MiB.
	MaxBatchSize int
	// CheckpointInterval is how often at most the acked cursor is written
	// (fsynced) to the state file and fully acked segments are deleted,
	// while the spool is less than half full. Default 1 s. A crash
	// re-delivers what was acked in the last interval (the receiver is
	// idempotent); above half full the spool checkpoints after every ack
	// to give disk back at once.
	CheckpointInterval time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxBytes:           1 << 30,
		SegmentSize:        16 << 20,
		MaxBatchSize:       8 << 20,
		CheckpointInterval: time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = min(d.SegmentSize, c.MaxBytes/2)
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = d.MaxBatchSize
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = d.CheckpointInterval
	}
	return c
}

// Validate reports whether the configuration, after defaults are applied
// to zero fields, is usable.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.MaxBytes < 0:
		return fmt.Errorf("spool: MaxBytes %d must not be negative", c.MaxBytes)
	case c.SegmentSize < 1024:
		return fmt.Errorf("spool: SegmentSize %d must be at least 1024", c.SegmentSize)
	case c.SegmentSize > c.MaxBytes/2:
		return fmt.Errorf("spool: SegmentSize %d must be at most MaxBytes/2 (%d) so acked segments can always be freed",
			c.SegmentSize, c.MaxBytes/2)
	case c.MaxBatchSize < 1 || c.MaxBatchSize > 1<<30:
		return fmt.Errorf("spool: MaxBatchSize %d must be in [1, 1 GiB]", c.MaxBatchSize)
	case c.CheckpointInterval < 0:
		return fmt.Errorf("spool: CheckpointInterval %v must not be negative", c.CheckpointInterval)
	}
	return nil
}
