package imports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strconv"
	"unicode/utf8"
)

// format is what a body holds.
type format int

const (
	formatCSV format = iota + 1
	formatJSON
)

func (f format) String() string {
	if f == formatCSV {
		return "csv"
	}
	return "json"
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// detect decides whether body is CSV or JSON: by Content-Type when it
// names one, by content otherwise (curl's default form type, text/plain,
// octet-stream). Its errors explain, for the 400 answer, what the body
// looks like instead. body must have its UTF-8 BOM removed.
func detect(contentType string, body []byte) (format, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return 0, errors.New("empty body: send a CSV report or JSON rows")
	case bytes.HasPrefix(body, []byte{0xFF, 0xFE}) || bytes.HasPrefix(body, []byte{0xFE, 0xFF}):
		return 0, errors.New("body is UTF-16 text (Excel's \"Unicode text\"): export the report as \"CSV UTF-8\"")
	case bytes.HasPrefix(body, []byte("PK\x03\x04")):
		return 0, errors.New("body is a zip file, probably an Excel workbook: export the sheet as \"CSV UTF-8\"")
	case !utf8.Valid(body):
		return 0, errors.New("body is not UTF-8 text: export the report as \"CSV UTF-8\"")
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case "text/csv", "application/csv", "text/comma-separated-values", "text/tab-separated-values",
		"application/vnd.ms-excel": // what browsers on Windows call a .csv upload
		return formatCSV, nil
	case "application/json", "application/x-ndjson", "application/ndjson", "application/jsonl",
		"application/x-jsonlines", "application/jsonlines":
		return formatJSON, nil
	case "multipart/form-data":
		return 0, errors.New("body is a form upload: send the file itself as the body (curl --data-binary @report.csv -H 'Content-Type: text/csv')")
	}
	if trimmed[0] == '[' || trimmed[0] == '{' {
		return formatJSON, nil
	}
	return formatCSV, nil
}

// jsonItem is one element of a JSON body: an array element, an NDJSON
// line or the body's only object.
type jsonItem struct {
	line, index int
	raw         []byte // nil when err is set
	err         error
}

// errNotJSON is a body that fails as a whole (400).
type errNotJSON struct{ msg string }

func (e *errNotJSON) Error() string { return e.msg }

// errTooMany is a body with more than the allowed rows (413).
type errTooMany struct{ limit int }

func (e *errTooMany) Error() string {
	return fmt.Sprintf("more than %d rows in one body (imports.max_rows): split the report", e.limit)
}

// splitJSON splits a JSON array, NDJSON, or a single (possibly
// pretty-printed) object into items, each with the line it starts on. A
// malformed NDJSON line is an item with an error; an array that is not
// valid JSON, or NDJSON of which no line parses, fails as a whole.
func splitJSON(body []byte, maxItems int) ([]jsonItem, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	lead := len(body) - len(trimmed)
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		return splitArray(body, maxItems)
	case len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed):
		return []jsonItem{{line: 1 + bytes.Count(body[:lead], nl), raw: bytes.TrimSpace(trimmed)}}, nil
	}
	var items []jsonItem
	malformed := 0
	for line, rest := 1, body; len(rest) > 0; line++ {
		l := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			l, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		if len(items) == maxItems {
			return nil, &errTooMany{maxItems}
		}
		it := jsonItem{line: line, index: len(items), raw: l}
		if !json.Valid(l) {
			it.raw, it.err = nil, errors.New("malformed JSON")
			malformed++
		}
		items = append(items, it)
	}
	if len(items) > 0 && malformed == len(items) {
		return nil, &errNotJSON{"body is neither a JSON array nor NDJSON (no line parses)"}
	}
	return items, nil
}

var nl = []byte{'\n'}

func splitArray(body []byte, maxItems int) ([]jsonItem, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	lineAt := lineCounter(body)
	if _, err := dec.Token(); err != nil { // the '['
		return nil, &errNotJSON{"body is not a valid JSON array: " + err.Error()}
	}
	var items []jsonItem
	for dec.More() {
		if len(items) == maxItems {
			return nil, &errTooMany{maxItems}
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			at := int(dec.InputOffset())
			var se *json.SyntaxError
			switch {
			case errors.As(err, &se):
				at = int(se.Offset)
			case errors.Is(err, io.ErrUnexpectedEOF):
				at = len(body)
			}
			return nil, &errNotJSON{fmt.Sprintf("body is not a valid JSON array (line %d): %v", lineAt(at), err)}
		}
		start := int(dec.InputOffset()) - len(raw)
		items = append(items, jsonItem{line: lineAt(start), index: len(items), raw: raw})
	}
	if _, err := dec.Token(); err != nil { // the ']'
		return nil, &errNotJSON{"body is not a valid JSON array: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &errNotJSON{fmt.Sprintf("data after the JSON array (line %d)", lineAt(int(dec.InputOffset())))}
	}
	return items, nil
}

// lineCounter returns a function giving the 1-based line of a byte offset.
// Offsets must not decrease between calls, which keeps it linear.
func lineCounter(body []byte) func(off int) int {
	pos, line := 0, 1
	return func(off int) int {
		off = min(off, len(body))
		if off > pos {
			line += bytes.Count(body[pos:off], nl)
			pos = off
		}
		return line
	}
}

// stringValue turns a JSON scalar into the text a CSV cell would hold:
// strings unquoted, numbers as written. ok is false for null.
func stringValue(raw json.RawMessage) (s string, ok bool, err error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", false, nil
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, err
		}
		return s, true, nil
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		if bytes.ContainsAny(raw, "eE") { // 1.2e3: write it out, the row parsers take plain decimals
			f, err := strconv.ParseFloat(string(raw), 64)
			if err != nil {
				return "", false, err
			}
			return strconv.FormatFloat(f, 'f', -1, 64), true, nil
		}
		return string(raw), true, nil
	}
	return "", false, errScalar
}

var errScalar = errors.New("want a string or a number")
