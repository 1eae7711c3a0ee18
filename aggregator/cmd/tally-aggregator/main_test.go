package main

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tally-edge/tally/aggregator/auth"
)

const linkSecret = "a-links-secret-of-at-least-32-bytes!!"

func writeConfig(t *testing.T, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agg.yaml")
	cfg := `name: agg-1
quic: {ca: ca.pem, cert: c.pem, key: k.pem}
http: {listen: "0.0.0.0:8443"}
auth:
  tokens:
    - {token: "admin-token-0123456789", subject: ops, role: admin}
` + extra
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLinkCommand: the printed link carries a link token (never a
// configured token) that a node with the same secret exchanges once for
// a session of the asked role and scope.
func TestLinkCommand(t *testing.T) {
	cfg := writeConfig(t, "  links: {secret: \""+linkSecret+"\"}\n")
	var out, errOut bytes.Buffer
	if code := link([]string{"-config", cfg, "-role", "viewer", "-campaigns", "spring,autumn", "-ttl", "2m"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	u, err := url.Parse(strings.TrimSpace(out.String()))
	if err != nil || u.Scheme != "http" || u.Host != "localhost:8443" || u.Path != "/" {
		t.Fatalf("printed %q", out.String())
	}
	if strings.Contains(out.String(), "admin-token-0123456789") || !strings.Contains(errOut.String(), "valid until") {
		t.Fatalf("printed %q / %q", out.String(), errOut.String())
	}
	node, err := auth.New(auth.Config{Links: auth.LinkConfig{Secret: []byte(linkSecret)}})
	if err != nil {
		t.Fatal(err)
	}
	lt := u.Query().Get("link")
	if _, err := node.Authenticate(lt); err == nil {
		t.Fatal("the link token opens the API by itself")
	}
	_, p, err := node.Links().Exchange(lt)
	if err != nil || p.Role != auth.Viewer || p.Subject != "link-viewer" || strings.Join(p.Campaigns, ",") != "autumn,spring" {
		t.Fatalf("exchange: %+v %v", p, err)
	}

	// Without a shared secret no node would accept the link: refuse.
	out.Reset()
	errOut.Reset()
	if code := link([]string{"-config", writeConfig(t, "")}, &out, &errOut); code != 1 || out.Len() != 0 ||
		!strings.Contains(errOut.String(), "auth.links.secret is not set") {
		t.Fatalf("no secret: %q %q", out.String(), errOut.String())
	}
	// A viewer needs campaigns; a day is the longest link.
	for _, args := range [][]string{{"-role", "viewer"}, {"-ttl", "25h"}, {"-role", "owner"}} {
		if code := link(append([]string{"-config", cfg}, args...), &out, &errOut); code != 1 {
			t.Fatalf("%v: exit %d", args, code)
		}
	}
}
