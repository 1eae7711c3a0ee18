package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBannerLinkIsNotTheAdminToken: the dashboard link the demo prints
// carries a link token; the admin token's value appears nowhere in the
// banner (only the file that holds it).
func TestBannerLinkIsNotTheAdminToken(t *testing.T) {
	dir := t.TempDir()
	token, err := secretFile(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := secretFile(filepath.Join(dir, "token"))
	if err != nil || again != token || len(token) < 32 {
		t.Fatalf("secret file not kept: %q %q %v", token, again, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "token")); st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", st.Mode())
	}
	var b strings.Builder
	printBanner(&b, banner{HTTP: "127.0.0.1:8080", Link: "http://127.0.0.1:8080/?link=tlink_abc", LinkCommand: "bin/tally-aggregator link -config .demo/agg-1.yaml",
		TokenPath: ".demo/token", NodeURLs: []string{"http://127.0.0.1:8080"}})
	out := b.String()
	if !strings.Contains(out, "Dashboard   http://127.0.0.1:8080/?link=tlink_abc") || strings.Contains(out, "?token=") ||
		strings.Contains(out, token) || !strings.Contains(out, "bin/tally-aggregator link -config .demo/agg-1.yaml") {
		t.Fatalf("banner:\n%s", out)
	}
}
