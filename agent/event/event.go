// Package event defines the agent's ingest contract (ARCHITECTURE §2): the
// JSON event a client sends, its validation and normalisation into the
// compact Event the minute aggregator consumes, and the binary form the
// journal keeps.
package event

import (
	"bytes"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Types lists every accepted event type.
var Types = []string{
	"impression", "click", "pageview", "conversion", "cost", "email_open",
	"email_click", "bounce", "video_play", "form_submit", "poll_vote",
}

// knownType reports whether t is an accepted type and returns its canonical
// (interned) string so series keys share one copy.
func knownType(t string) (string, bool) {
	for _, k := range Types {
		if k == t {
			return k, true
		}
	}
	return "", false
}

// Raw is one event as a client sends it. Empty fields mean "absent".
type Raw struct {
	Type     string   `json:"type"`
	TS       Time     `json:"ts"`
	Campaign string   `json:"campaign"`
	Source   string   `json:"source"`
	Medium   string   `json:"medium"`
	Content  string   `json:"content"`
	Term     string   `json:"term"`
	Visitor  string   `json:"visitor"`
	IP       string   `json:"ip"`
	UA       string   `json:"ua"`
	URL      string   `json:"url"`
	Referrer string   `json:"referrer"`
	Value    *float64 `json:"value"`
	Cost     *float64 `json:"cost"`
	Country  string   `json:"country"`
	Device   string   `json:"device"`
	Poll     string   `json:"poll"`
	Answer   string   `json:"answer"`
}

// Reset clears r for reuse without releasing its memory.
func (r *Raw) Reset() { *r = Raw{} }

// Time is an event timestamp given either as an RFC 3339 string or as unix
// milliseconds. The zero value means absent.
type Time struct {
	// UnixMillis is the time in unix milliseconds; valid when Set.
	UnixMillis int64
	// Set is true when the field was present.
	Set bool
}

// ErrBadTime reports a timestamp that is neither RFC 3339 nor a number.
var ErrBadTime = errors.New(`ts must be an RFC 3339 string or unix milliseconds`)

// UnmarshalJSON accepts a string (RFC 3339) or a number (unix ms).
func (t *Time) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*t = Time{}
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return ErrBadTime
		}
		return t.SetString(s)
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return ErrBadTime
	}
	t.SetMillis(f)
	return nil
}

// SetString sets t from an RFC 3339 string, or returns ErrBadTime.
func (t *Time) SetString(s string) error {
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return ErrBadTime
	}
	*t = Time{UnixMillis: ts.UnixMilli(), Set: true}
	return nil
}

// SetMillis sets t from unix milliseconds.
func (t *Time) SetMillis(ms float64) { *t = Time{UnixMillis: int64(ms), Set: true} }

// Error is a per-event validation error; it names the offending field.
type Error struct {
	// Field is the JSON field at fault ("" for the event as a whole).
	Field string
	// Code is a short stable label for metrics, e.g. "unknown_type".
	Code string
	// Reason is the human-readable explanation.
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func fieldErr(field, code, format string, args ...any) *Error {
	return &Error{Field: field, Code: code, Reason: fmt.Sprintf(format, args...)}
}

// maxDim is the longest dimension value kept; longer values are cut so a
// client cannot blow up series keys.
const maxDim = 128

// PollVote is the event type of a poll vote, the one type whose events
// carry a poll and an answer.
const PollVote = "poll_vote"

// NoPoll is the poll of a vote that names none.
const NoPoll = "(none)"

// cleanVoteLabel is cleanDim for a poll or an answer, with control
// characters (which sketch.VoteKey uses as a separator) made spaces.
func cleanVoteLabel(s, def string) string {
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		s = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, s)
	}
	return cleanDim(s, def)
}

// cleanDim trims and bounds a dimension value; empty becomes def.
func cleanDim(s, def string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return def
	}
	return cutUTF8(s, maxDim)
}
