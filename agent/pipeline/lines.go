package pipeline

import (
	"errors"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/agent/source"
)

// LineDecoder turns access-log lines into events: parse, then normalise
// exactly as HTTP events are, with the pipeline's Env. One per goroutine:
// parsers are not shared.
type LineDecoder struct {
	parser *logparse.Parser
	ctx    event.Context // Now is set per line
	raw    event.Raw
}

// NewLineDecoder returns a decoder of lines spec describes.
func NewLineDecoder(spec logparse.Spec, env *source.Env) (*LineDecoder, error) {
	p, err := logparse.Compile(spec)
	if err != nil {
		return nil, err
	}
	// A log line carries the visitor's own address and user agent.
	return &LineDecoder{parser: p, ctx: env.Context(time.Time{})}, nil
}

// Decode appends the event of line to dst. For a line that is no event it
// returns dst and an error matching logparse.ErrSkip; for a malformed line
// dst and the parse or validation error.
func (d *LineDecoder) Decode(line []byte, dst []event.Event, now time.Time) ([]event.Event, error) {
	if err := d.parser.Parse(line, &d.raw); err != nil {
		return dst, err
	}
	d.ctx.Now = now
	dst = append(dst, event.Event{})
	if err := event.Normalize(&d.raw, &d.ctx, &dst[len(dst)-1]); err != nil {
		return dst[:len(dst)-1], err
	}
	return dst, nil
}

// LineReason names why a line was rejected, for counts.
func LineReason(err error) string {
	var ee *event.Error
	if errors.As(err, &ee) && ee.Code != "" {
		return ee.Code
	}
	return logparse.Reason(err)
}
