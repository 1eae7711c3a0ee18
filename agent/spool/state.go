package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const (
	stateName    = "spool.state"
	stateVersion = 1
)

// state is what the spool keeps outside the log: the acked cursor, the
// next sequence number and the newest commit meta, which must all outlive
// the segments they came from.
type state struct {
	Version      int    `json:"version"`
	AckedThrough uint64 `json:"acked_through"` // every seq <= it is acked
	NextSeq      uint64 `json:"next_seq"`      // no batch ever had a seq >= it
	HasMeta      bool   `json:"has_meta"`
	JournalPos   uint64 `json:"journal_pos"`
	MetaData     []byte `json:"meta_data,omitempty"`
	// MetaLogPos is the log position after the commit record the meta
	// came from; it orders the meta against commit records in the log.
	MetaLogPos uint64 `json:"meta_log_pos"`
}

// readState reads dir's state file; a missing file is the zero state.
func readState(dir string) (state, error) {
	path := filepath.Join(dir, stateName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return state{Version: stateVersion}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("read state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var st state
	if err := dec.Decode(&st); err != nil {
		return state{}, fmt.Errorf("decode state %q: %w", path, err)
	}
	if st.Version != stateVersion {
		return state{}, fmt.Errorf("state %q has version %d, this build reads %d", path, st.Version, stateVersion)
	}
	return st, nil
}

// writeState replaces dir's state file atomically and durably: write a
// temporary file, fsync it, rename it over the old one, fsync the
// directory. A crash leaves either the old or the new state.
func writeState(dir string, st state) error {
	st.Version = stateVersion
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	path := filepath.Join(dir, stateName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write state %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write state: sync dir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write state: sync dir %q: %w", dir, err)
	}
	return nil
}
