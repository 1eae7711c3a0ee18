package browser

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// tallyJS is the readable source of t.js; compact strips it for serving.
//
//go:embed tally.js
var tallyJS []byte

// MaxScriptBytes bounds the served t.js: it sits on the critical path of
// every page of every site that pastes the snippet.
const MaxScriptBytes = 3 << 10

// script is t.js prepared once: compacted, gzipped, hashed.
type script struct {
	plain, gz    []byte
	etag         string
	cacheControl string
}

func newScript(src []byte, maxAge time.Duration) (script, error) {
	plain := compact(src)
	if len(plain) > MaxScriptBytes {
		return script{}, fmt.Errorf("t.js is %d bytes after compaction, over the budget of %d", len(plain), MaxScriptBytes)
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression) // the level is valid
	zw.Write(plain)
	if err := zw.Close(); err != nil {
		return script{}, fmt.Errorf("gzip t.js: %w", err)
	}
	sum := sha256.Sum256(plain)
	// Weak: the identity and gzip bodies are the same script, so one
	// validator serves both (a strong one would have to differ).
	return script{plain: plain, gz: gz.Bytes(), etag: `W/"` + hex.EncodeToString(sum[:12]) + `"`,
		cacheControl: "public, max-age=" + strconv.Itoa(int(maxAge/time.Second))}, nil
}

// compact drops indentation, blank lines and full-line // comments. It
// keeps line breaks, so automatic semicolon insertion is unaffected; the
// source must not use template literals (tally.js says so at its top).
func compact(src []byte) []byte {
	var out bytes.Buffer
	for line := range bytes.Lines(src) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || bytes.HasPrefix(line, []byte("//")) {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func (h *Handlers) serveScript(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.m.script.WithLabelValues("405").Inc()
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	s := &h.script
	hdr := w.Header()
	hdr.Set("Cache-Control", s.cacheControl)
	hdr.Set("ETag", s.etag)
	hdr.Set("Vary", "Accept-Encoding")
	// Sites that set Cross-Origin-Embedder-Policy may still load it.
	hdr.Set("Cross-Origin-Resource-Policy", "cross-origin")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if sr, ok := h.env.Bots.(scriptRecorder); ok && r.Method == http.MethodGet {
		sr.ScriptFetched(h.env.Proxies.ClientIP(r), event.TruncateUserAgent(r.UserAgent()))
	}
	if etagMatch(r.Header.Get("If-None-Match"), s.etag) {
		h.m.script.WithLabelValues("304").Inc()
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := s.plain
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body = s.gz
		hdr.Set("Content-Encoding", "gzip")
	}
	hdr.Set("Content-Type", "text/javascript; charset=utf-8")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	h.m.script.WithLabelValues("200").Inc()
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// scriptRecorder is a bot filter that remembers which clients fetched
// t.js (botfilter's no_script signal).
type scriptRecorder interface {
	ScriptFetched(ip, ua string)
}

// etagMatch implements If-None-Match's weak comparison: a list of
// validators, or "*".
func etagMatch(header, etag string) bool {
	if header == "" {
		return false
	}
	want := strings.TrimPrefix(etag, "W/")
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || strings.TrimPrefix(tag, "W/") == want {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip with
// a non-zero quality; an explicit gzip entry wins over "*".
func acceptsGzip(header string) bool {
	star := false
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.TrimSpace(coding)
		isGzip := strings.EqualFold(coding, "gzip")
		if !isGzip && coding != "*" {
			continue
		}
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		if isGzip {
			return q > 0
		}
		star = q > 0
	}
	return star
}
