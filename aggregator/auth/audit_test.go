package auth

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// auditLines reads every JSON line of the files given, in order.
func auditLines(t *testing.T, paths ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if len(sc.Bytes()) > MaxAuditLineBytes {
				t.Fatalf("%s: a line of %d bytes, more than %d", p, len(sc.Bytes()), MaxAuditLineBytes)
			}
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: line %q: %v", p, sc.Text(), err)
			}
			out = append(out, m)
		}
		f.Close()
	}
	return out
}

func guarded(t *testing.T, audit *Audit) http.Handler {
	t.Helper()
	a, err := New(Config{Tokens: []StaticToken{
		{Token: adminToken, Subject: "root", Role: Admin},
		{Token: viewerToken, Subject: "alice", Role: Viewer, Campaigns: []string{"spring"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	g := &Guard{Auth: a, Audit: audit}
	mux := http.NewServeMux()
	mux.Handle("GET /data", g.Wrap(Route{Name: "data", Roles: AllRoles}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		NoteCampaigns(r, r.URL.Query()["c"]...)
		w.Write([]byte("ok"))
	})))
	mux.Handle("GET /stream", g.Wrap(Route{Name: "stream", Roles: AllRoles}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		NoteCampaigns(r, "spring")
		StreamStarted(r)
		<-r.Context().Done()
		NoteOutcome(r, "client_gone")
	})))
	return mux
}

func request(h http.Handler, target, token string) int {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	h.ServeHTTP(w, r)
	return w.Code
}

// TestAuditLinesBounded: whatever a request carries, its line stays under
// MaxAuditLineBytes, and an unauthenticated request's query is not
// written at all.
func TestAuditLinesBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	audit, err := OpenAudit(AuditConfig{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := guarded(t, audit)
	junk := strings.Repeat("%E2%82%AC", 20000) // 60 KB of query
	if code := request(h, "/data?x="+junk, ""); code != 401 {
		t.Fatalf("unauthenticated: %d", code)
	}
	many := "/data?x=" + junk
	for i := range 500 {
		many += "&c=" + strings.Repeat("c", 200) + strconv.Itoa(i) // distinct: a campaign read twice is named once
	}
	if code := request(h, many, adminToken); code != 200 {
		t.Fatalf("authenticated: %d", code)
	}
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	lines := auditLines(t, path)
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2", len(lines))
	}
	if _, ok := lines[0]["params"]; ok || lines[0]["params_bytes"].(float64) < 60000 {
		t.Fatalf("unauthenticated line: %v", lines[0])
	}
	if p := lines[1]["params"].(string); len(p) > maxAuditParamBytes || !strings.Contains(p, "…(+") {
		t.Fatalf("params not clipped: %d bytes", len(p))
	}
	if more := lines[1]["campaigns_more"].(float64); more < 400 {
		t.Fatalf("campaigns_more = %v", more)
	}
}

// TestAuditSamplesRefusals: a flood of 401s writes RefusedPerSecond
// lines each second and one summary line with the count of the rest;
// authenticated requests are always written.
func TestAuditSamplesRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	c := &clock{t: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	audit, err := OpenAudit(AuditConfig{Path: path, RefusedPerSecond: 5, Now: c.now}, reg)
	if err != nil {
		t.Fatal(err)
	}
	h := guarded(t, audit)
	for range 1000 {
		request(h, "/data", "")
	}
	for range 3 {
		request(h, "/data", adminToken)
	}
	c.add(1100 * time.Millisecond)
	for range 1000 {
		request(h, "/data", "wrong-token-0123456789")
	}
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	lines := auditLines(t, path)
	var refused, ok, summarized int
	for _, l := range lines {
		switch {
		case l["msg"] == "refused_suppressed":
			summarized += int(l["count"].(float64))
		case l["status"] == 401.0:
			refused++
		case l["status"] == 200.0:
			ok++
		}
	}
	// 5 of the burst, ~5 more after 1.1 s of refill (5.5 tokens).
	if ok != 3 || refused < 10 || refused > 11 || refused+summarized != 2000 {
		t.Fatalf("%d lines: %d refused written, %d summarized, %d ok", len(lines), refused, summarized, ok)
	}
	if got := testutil.ToFloat64(audit.suppressedTotal); int(got) != summarized {
		t.Fatalf("suppressed counter %v, summary lines %d", got, summarized)
	}
}

// TestAuditRotatesBySize: the file never grows past MaxBytes; MaxFiles
// old files are kept and the oldest dropped; every line is whole.
func TestAuditRotatesBySize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	reg := prometheus.NewRegistry()
	audit, err := OpenAudit(AuditConfig{Path: path, MaxBytes: 64 << 10, MaxFiles: 2}, reg)
	if err != nil {
		t.Fatal(err)
	}
	h := guarded(t, audit)
	for i := range 2000 {
		if code := request(h, "/data?q="+strings.Repeat("z", 100+i%50), adminToken); code != 200 {
			t.Fatal(code)
		}
	}
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("files %v, want audit.jsonl, .1 and .2", entries)
	}
	total := 0
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 64<<10 || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %d bytes, mode %v", p, st.Size(), st.Mode())
		}
		total += len(auditLines(t, p))
	}
	if rot := testutil.ToFloat64(audit.file.rotations); rot < 3 || total >= 2000 {
		t.Fatalf("%v rotations, %d lines kept of 2000", rot, total)
	}
	// Reopening appends to the current file and keeps rotating.
	audit, err = OpenAudit(AuditConfig{Path: path, MaxBytes: 64 << 10, MaxFiles: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	request(guarded(t, audit), "/data", adminToken)
	audit.Close()
	if st, _ := os.Stat(path); st.Size() > 64<<10 {
		t.Fatalf("reopened file %d bytes", st.Size())
	}
}

// TestAuditStreamStartAndWriteErrors: a stream has a line when it
// starts, while still open, and one when it ends with its outcome; a
// line the disk refuses is counted, and the request is still answered.
func TestAuditStreamStartAndWriteErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	audit, err := OpenAudit(AuditConfig{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(guarded(t, audit))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/stream", nil)
	req.Header.Set("Authorization", "Bearer "+viewerToken)
	done := make(chan struct{})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	go func() {
		defer close(done)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), `"msg":"stream_start"`) {
			if !strings.Contains(string(b), `"subject":"alice"`) || !strings.Contains(string(b), `"campaigns":["spring"]`) {
				t.Fatalf("start line %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no stream_start line while the stream is open")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr.CloseIdleConnections()
	srv.CloseClientConnections()
	<-done
	srv.Close()
	audit.Close()
	lines := auditLines(t, path)
	if len(lines) != 2 || lines[1]["msg"] != "api" || lines[1]["outcome"] != "client_gone" {
		t.Fatalf("lines %v", lines)
	}

	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	full, err := OpenAudit(AuditConfig{Path: "/dev/full"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	h := guarded(t, full)
	for range 3 {
		if code := request(h, "/data", adminToken); code != 200 {
			t.Fatalf("a request with a full audit disk: %d", code)
		}
	}
	if n := testutil.ToFloat64(full.writeErrors); n != 3 {
		t.Fatalf("write errors counted %v, want 3", n)
	}
}
