package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
)

// DeadLetter is one delivery that failed for good.
type DeadLetter struct {
	Time     time.Time   `json:"time"`
	Target   string      `json:"target"`
	Reason   string      `json:"reason"`
	Attempts int         `json:"attempts"`
	Alert    alert.Alert `json:"alert"`
}

// Dead letter file names: the current one and the previous half.
const (
	deadLetterFile    = "dead-letters.jsonl"
	deadLetterOldFile = "dead-letters.1.jsonl"
)

// deadLetters appends JSON lines to dir/dead-letters.jsonl; when it would
// pass half of max bytes it becomes dead-letters.1.jsonl (replacing the
// older half), so the two never hold more than max.
type deadLetters struct {
	mu   sync.Mutex
	dir  string
	max  int64
	f    *os.File
	size int64
}

func openDeadLetters(dir string, max int64) (*deadLetters, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	d := &deadLetters{dir: dir, max: max}
	if err := d.open(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *deadLetters) open() error {
	f, err := os.OpenFile(filepath.Join(d.dir, deadLetterFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("dead letters: %w", err)
	}
	d.f, d.size = f, st.Size()
	return nil
}

// add appends one dead letter.
func (d *deadLetters) add(dl DeadLetter) error {
	b, err := json.Marshal(dl)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return fmt.Errorf("dead letters: closed")
	}
	half := d.max / 2
	if int64(len(b)) > half {
		return fmt.Errorf("dead letter of %d bytes exceeds half the bound", len(b))
	}
	if d.size+int64(len(b)) > half {
		d.f.Close()
		d.f = nil
		if err := os.Rename(filepath.Join(d.dir, deadLetterFile), filepath.Join(d.dir, deadLetterOldFile)); err != nil {
			return fmt.Errorf("dead letters: rotate: %w", err)
		}
		if err := d.open(); err != nil {
			return err
		}
	}
	n, err := d.f.Write(b)
	d.size += int64(n)
	return err
}

func (d *deadLetters) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// ReadDeadLetters returns the dead letters in dir, oldest first.
func ReadDeadLetters(dir string) ([]DeadLetter, error) {
	var out []DeadLetter
	for _, name := range []string{deadLetterOldFile, deadLetterFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		for dec.More() {
			var dl DeadLetter
			if err := dec.Decode(&dl); err != nil {
				return out, fmt.Errorf("%s: %w", name, err)
			}
			out = append(out, dl)
		}
	}
	return out, nil
}
