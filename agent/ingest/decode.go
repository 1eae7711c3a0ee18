package ingest

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/valyala/fastjson"

	"github.com/tally-edge/tally/agent/event"
)

// Events are decoded with fastjson: it parses a body into a tree without
// reflection, and fillRaw maps an object's keys onto event.Raw with a
// switch. Decoding is most of what ingest costs, and the contract is one
// flat object of strings and numbers per event. The rules are those of
// event.Raw's json tags: unknown keys are ignored, the last of a repeated
// key wins, null means absent, and a value of the wrong type rejects the
// event (bad_field, or bad_ts for ts).

// fieldError is a key whose value has the wrong JSON type.
type fieldError struct{ field, want string }

func (e *fieldError) Error() string { return e.field + ": want " + e.want }

// interner hands out one string per distinct value of the fields that
// repeat (types, campaigns, sources, countries, user agents…): no
// allocation for a value seen before, and series that share their strings
// compare by pointer in the rollup. Bounded: it starts over when full.
// Not safe for concurrent use; each request's scratch has its own.
type interner struct {
	m map[string]string
}

const (
	internMaxEntries = 4096
	internMaxLen     = event.MaxUserAgent
)

func (in *interner) get(b []byte) string {
	if s, ok := in.m[string(b)]; ok { // no allocation: the compiler looks up b in place
		return s
	}
	s := string(b)
	if len(b) <= internMaxLen {
		if in.m == nil || len(in.m) >= internMaxEntries {
			in.m = make(map[string]string, 256)
		}
		in.m[s] = s
	}
	return s
}

// alias returns b as a string without copying. Such fields are used only
// while the event is normalised, before the parser that holds their bytes
// parses again: event.Normalize keeps none of them (it maps type, country
// and device to canonical strings, builds vote keys anew, and every cache
// that keeps a user agent clones it).
func alias(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// fillRaw fills r from the object v (which the caller has checked is an
// object), with in for campaign, source and medium, which become series
// labels; r's other strings alias v's bytes (see alias).
func fillRaw(v *fastjson.Value, r *event.Raw, in *interner) error {
	o, _ := v.Object()
	var err error
	o.Visit(func(k []byte, v *fastjson.Value) {
		if err != nil {
			return
		}
		// Only campaign, source and medium become series labels as they
		// are; every other string is read during normalisation only (type,
		// country and device are mapped to canonical strings), so it may
		// alias the parser's bytes.
		var dst *string
		intern := false
		switch string(k) {
		case "type":
			dst = &r.Type
		case "campaign":
			dst, intern = &r.Campaign, true
		case "source":
			dst, intern = &r.Source, true
		case "medium":
			dst, intern = &r.Medium, true
		case "content":
			dst = &r.Content
		case "term":
			dst = &r.Term
		case "visitor":
			dst = &r.Visitor
		case "ip":
			dst = &r.IP
		case "ua":
			dst = &r.UA
		case "url":
			dst = &r.URL
		case "referrer":
			dst = &r.Referrer
		case "country":
			dst = &r.Country
		case "device":
			dst = &r.Device
		case "poll":
			dst = &r.Poll
		case "answer":
			dst = &r.Answer
		case "value":
			err = number(v, &r.Value, "value")
			return
		case "cost":
			err = number(v, &r.Cost, "cost")
			return
		case "ts":
			err = timestamp(v, &r.TS)
			return
		default:
			return
		}
		switch v.Type() {
		case fastjson.TypeString:
			if intern {
				*dst = in.get(v.GetStringBytes())
			} else {
				*dst = alias(v.GetStringBytes())
			}
		case fastjson.TypeNull:
			*dst = ""
		default:
			err = &fieldError{field: string(k), want: "a string"}
		}
	})
	return err
}

func number(v *fastjson.Value, dst **float64, field string) error {
	switch v.Type() {
	case fastjson.TypeNumber:
		f := v.GetFloat64()
		*dst = &f
	case fastjson.TypeNull:
		*dst = nil
	default:
		return &fieldError{field: field, want: "a number"}
	}
	return nil
}

func timestamp(v *fastjson.Value, t *event.Time) error {
	switch v.Type() {
	case fastjson.TypeString:
		return t.SetString(string(v.GetStringBytes()))
	case fastjson.TypeNumber:
		t.SetMillis(v.GetFloat64())
	case fastjson.TypeNull:
		*t = event.Time{}
	default:
		return event.ErrBadTime
	}
	return nil
}

// codeOf names a fillRaw error for metrics and the answer.
func codeOf(err error) (code, text string) {
	var fe *fieldError
	switch {
	case errors.Is(err, event.ErrBadTime):
		return "bad_ts", "ts: " + err.Error()
	case errors.As(err, &fe):
		return "bad_field", fe.Error()
	}
	return "bad_field", fmt.Sprint(err)
}
