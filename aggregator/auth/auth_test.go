package auth

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	adminToken  = "admin-token-0123456789"
	viewerToken = "viewer-token-0123456789"
	secret      = "an-hs256-secret-of-at-least-32-bytes!"
)

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func valid(sub, role string, campaigns ...string) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "role": role, "exp": time.Now().Add(time.Hour).Unix(), "iss": "idp", "aud": "tally"}
	if campaigns != nil {
		c["campaigns"] = campaigns
	}
	return c
}

func TestStaticTokens(t *testing.T) {
	a, err := New(Config{Tokens: []StaticToken{
		{Token: adminToken, Subject: "root", Role: Admin},
		{TokenSHA256: HashToken(viewerToken), Subject: "alice", Role: Viewer, Campaigns: []string{"spring", "autumn", "spring"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(adminToken)
	if err != nil || p.Subject != "root" || p.Role != Admin || !p.AllCampaigns() || !p.CanSee("anything") {
		t.Fatalf("admin: %+v %v", p, err)
	}
	p, err = a.Authenticate(viewerToken)
	if err != nil || p.Subject != "alice" || p.AllCampaigns() || strings.Join(p.Campaigns, ",") != "autumn,spring" ||
		!p.CanSee("spring") || p.CanSee("winter") {
		t.Fatalf("viewer from its hash: %+v %v", p, err)
	}
	for _, bad := range []string{"", "nope", adminToken + "x", HashToken(viewerToken)} {
		if _, err := a.Authenticate(bad); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("token %q: %v, want ErrUnauthenticated", bad, err)
		}
	}
	// A huge token is refused before it is hashed or parsed.
	if _, err := a.Authenticate(strings.Repeat("t", MaxTokenBytes+1)); !errors.Is(err, ErrUnauthenticated) ||
		!strings.Contains(err.Error(), "longer than") {
		t.Fatalf("oversized token: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "nobody could use"},
		{Config{Tokens: []StaticToken{{Token: "short", Subject: "s", Role: Admin}}}, "shorter than 16"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Subject: "s", Role: "root"}}}, "unknown role"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Subject: "s", Role: Viewer}}}, "at least one campaign"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Subject: "s", Role: Analyst, Campaigns: []string{"c"}}}}, "viewers only"},
		{Config{Tokens: []StaticToken{{Token: adminToken, TokenSHA256: HashToken(adminToken), Subject: "s", Role: Admin}}}, "exclusive"},
		{Config{Tokens: []StaticToken{{TokenSHA256: "abc", Subject: "s", Role: Admin}}}, "64 hex"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Role: Admin}}}, "subject required"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Subject: "a", Role: Admin}, {TokenSHA256: HashToken(adminToken), Subject: "b", Role: Viewer, Campaigns: []string{"c"}}}}, "twice"},
		{Config{JWT: &JWTConfig{}}, "hs256_secret or public_key_file"},
		{Config{JWT: &JWTConfig{HS256Secret: []byte("short"), Issuer: "i", Audience: "a"}}, "32 bytes"},
		{Config{JWT: &JWTConfig{PublicKeyPEM: []byte("not pem"), Issuer: "i", Audience: "a"}}, "PUBLIC KEY"},
		// A key without issuer and audience would accept any token the
		// identity provider signs, whatever service it was minted for.
		{Config{JWT: &JWTConfig{HS256Secret: []byte(secret)}}, "issuer and audience required"},
		{Config{JWT: &JWTConfig{HS256Secret: []byte(secret), Issuer: "idp"}}, "issuer and audience required"},
		{Config{JWT: &JWTConfig{HS256Secret: []byte(secret), Audience: "tally"}}, "issuer and audience required"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Subject: strings.Repeat("s", MaxNameBytes+1), Role: Admin}}}, "longer than"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Subject: "a", Role: Admin}}, Links: LinkConfig{Secret: []byte("short")}}, "secret shorter"},
		{Config{Tokens: []StaticToken{{Token: adminToken, Subject: "a", Role: Admin}}, Links: LinkConfig{LinkTTL: 48 * time.Hour}}, "link_ttl"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%+v: %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{JWT: &JWTConfig{PublicKeyPEM: pemOf(t, &small.PublicKey), Issuer: "i", Audience: "a"}}); err == nil || !strings.Contains(err.Error(), "2048") {
		t.Fatalf("1024-bit RSA key accepted: %v", err)
	}
}

func TestJWT(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hsRS, err := New(Config{JWT: &JWTConfig{HS256Secret: []byte(secret), PublicKeyPEM: pemOf(t, &rsaKey.PublicKey), Issuer: "idp", Audience: "tally"}})
	if err != nil {
		t.Fatal(err)
	}
	es, err := New(Config{JWT: &JWTConfig{PublicKeyPEM: pemOf(t, &ecKey.PublicKey), Issuer: "idp", Audience: "tally"}})
	if err != nil {
		t.Fatal(err)
	}
	expired := valid("bob", "analyst")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	noExp := valid("bob", "analyst")
	delete(noExp, "exp")
	wrongIss := valid("bob", "analyst")
	wrongIss["iss"] = "elsewhere"
	wrongAud := valid("bob", "analyst")
	wrongAud["aud"] = "grafana"
	noIss := valid("bob", "analyst")
	delete(noIss, "iss")
	noAud := valid("bob", "analyst")
	delete(noAud, "aud")
	bigScope := make([]string, MaxScopeCampaigns+1)
	for i := range bigScope {
		bigScope[i] = fmt.Sprintf("c%d", i)
	}
	// A token whose signature is an HMAC keyed with the RSA public key:
	// the classic algorithm-confusion attack.
	confused := sign(t, jwt.SigningMethodHS256, pemOf(t, &rsaKey.PublicKey), valid("mallory", "admin"))
	tampered := sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "viewer", "spring"))
	parts := strings.Split(tampered, ".")
	forged := sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "admin"))
	tampered = parts[0] + "." + strings.Split(forged, ".")[1] + "." + parts[2] // admin claims, viewer signature

	for _, tc := range []struct {
		name  string
		a     *Authenticator
		token string
		want  *Principal // nil: refused
	}{
		{"hs256", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "viewer", "spring")), &Principal{Subject: "bob", Role: Viewer, Campaigns: []string{"spring"}}},
		{"rs256", hsRS, sign(t, jwt.SigningMethodRS256, rsaKey, valid("carol", "admin")), &Principal{Subject: "carol", Role: Admin}},
		{"es256", es, sign(t, jwt.SigningMethodES256, ecKey, valid("dave", "analyst")), &Principal{Subject: "dave", Role: Analyst}},
		{"expired", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), expired), nil},
		{"no exp", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), noExp), nil},
		{"wrong issuer", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), wrongIss), nil},
		{"wrong audience", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), wrongAud), nil},
		{"no issuer", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), noIss), nil},
		{"no audience", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), noAud), nil},
		{"scope over the bound", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "viewer", bigScope...)), nil},
		{"subject over the bound", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), valid(strings.Repeat("b", MaxNameBytes+1), "admin")), nil},
		{"token over the bound", hsRS, strings.Repeat("x", MaxTokenBytes) + "." + "y." + "z", nil},
		{"bad signature", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret+"x"), valid("bob", "admin")), nil},
		{"tampered claims", hsRS, tampered, nil},
		{"other ec key", es, sign(t, jwt.SigningMethodES256, otherEC, valid("dave", "analyst")), nil},
		{"alg none", hsRS, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid("eve", "admin")), nil},
		{"alg confusion HS256 with the RSA key", hsRS, confused, nil},
		{"HS256 when only ES256 is configured", es, sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "admin")), nil},
		{"RS384 not accepted", hsRS, sign(t, jwt.SigningMethodRS384, rsaKey, valid("carol", "admin")), nil},
		{"unknown role", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "superuser")), nil},
		{"viewer without campaigns", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "viewer")), nil},
		{"no subject", hsRS, sign(t, jwt.SigningMethodHS256, []byte(secret), valid("", "admin")), nil},
	} {
		p, err := tc.a.Authenticate(tc.token)
		switch {
		case tc.want == nil && (err == nil || !errors.Is(err, ErrUnauthenticated)):
			t.Fatalf("%s: accepted as %+v (%v)", tc.name, p, err)
		case tc.want != nil && err != nil:
			t.Fatalf("%s: %v", tc.name, err)
		case tc.want != nil && (p.Subject != tc.want.Subject || p.Role != tc.want.Role || strings.Join(p.Campaigns, ",") != strings.Join(tc.want.Campaigns, ",")):
			t.Fatalf("%s: %+v, want %+v", tc.name, p, tc.want)
		case tc.want != nil && (p.Expires.IsZero() || time.Until(p.Expires) > time.Hour+time.Second):
			t.Fatalf("%s: expires %v, want the token's exp", tc.name, p.Expires)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "Bearer": "", "": ""} {
		if got := BearerToken(h); got != want {
			t.Fatalf("BearerToken(%q) = %q, want %q", h, got, want)
		}
	}
}

func TestGuardAndAudit(t *testing.T) {
	a, err := New(Config{Tokens: []StaticToken{
		{Token: adminToken, Subject: "root", Role: Admin},
		{Token: viewerToken, Subject: "alice", Role: Viewer, Campaigns: []string{"spring"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	audit, err := OpenAudit(AuditConfig{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &Guard{Auth: a, Audit: audit}
	h := http.NewServeMux()
	h.Handle("GET /data", g.Wrap(Route{Name: "data", Roles: AllRoles}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := FromContext(r.Context())
		NoteCampaigns(r, "spring")
		w.Write([]byte("hello " + p.Subject))
	})))
	h.Handle("GET /admin", g.Wrap(Route{Name: "admin", Roles: []Role{Admin}}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("secret"))
	})))
	h.Handle("GET /stream", g.Wrap(Route{Name: "stream", Roles: AllRoles, QueryToken: true}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	})))
	do := func(path, token string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.RemoteAddr = "127.0.0.1:5555"
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		h.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct {
		path, token string
		code        int
	}{
		{"/data?campaign=spring", viewerToken, 200},
		{"/data", "", 401},
		{"/data", "wrong-token-0123456789", 401},
		{"/admin", viewerToken, 403},
		{"/admin", adminToken, 200},
		{"/stream?access_token=" + viewerToken, "", 200},
		{"/data?access_token=" + viewerToken, "", 401}, // only routes that allow it
	} {
		w := do(tc.path, tc.token)
		if w.Code != tc.code {
			t.Fatalf("%s with %q: %d %s, want %d", tc.path, tc.token, w.Code, w.Body, tc.code)
		}
		if tc.code == 401 && (w.Header().Get("WWW-Authenticate") == "" || !strings.Contains(w.Body.String(), `"error"`)) {
			t.Fatalf("401 without WWW-Authenticate or JSON error: %v %s", w.Header(), w.Body)
		}
	}
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 7 {
		t.Fatalf("%d audit lines, want 7", len(lines))
	}
	first := lines[0]
	for k, want := range map[string]any{"subject": "alice", "role": "viewer", "route": "data", "params": "campaign=spring",
		"status": 200.0, "bytes": float64(len("hello alice")), "remote": "127.0.0.1:5555"} {
		if first[k] != want {
			t.Fatalf("audit %s = %v, want %v in %v", k, first[k], want, first)
		}
	}
	if cs, _ := first["campaigns"].([]any); len(cs) != 1 || cs[0] != "spring" || first["time"] == nil {
		t.Fatalf("audit campaigns/time: %v", first)
	}
	if lines[1]["status"] != 401.0 || lines[1]["subject"] != "" || lines[3]["status"] != 403.0 || lines[3]["subject"] != "alice" {
		t.Fatalf("refusals audited as %v / %v", lines[1], lines[3])
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), viewerToken) || strings.Contains(string(raw), adminToken) {
		t.Fatalf("a token reached the audit log:\n%s", raw)
	}
}
