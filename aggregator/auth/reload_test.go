package auth

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestReloadTokens: a reload adds and removes static tokens at its
// commit, keeps the principals of tokens it keeps, and revokes the others.
func TestReloadTokens(t *testing.T) {
	const kept, removed, added, changed = "kept-token-0123456789", "removed-token-0123456789", "added-token-0123456789", "changed-token-0123456789"
	a, err := New(Config{Tokens: []StaticToken{
		{Token: kept, Subject: "ops", Role: Admin},
		{Token: removed, Subject: "intern", Role: Analyst},
		{Token: changed, Subject: "bob", Role: Analyst},
	}})
	if err != nil {
		t.Fatal(err)
	}
	pKept, _ := a.Authenticate(kept)
	pRemoved, _ := a.Authenticate(removed)
	pChanged, _ := a.Authenticate(changed)
	if pKept == nil || pRemoved == nil || pChanged == nil || pKept.Revoked() == nil {
		t.Fatal("static tokens authenticate, with a revocation channel")
	}
	if _, err := a.Authenticate(added); err == nil {
		t.Fatal("a token not configured yet authenticated")
	}

	// A configuration that does not check changes nothing.
	if _, err := a.Prepare(Config{Tokens: []StaticToken{{Token: "short", Subject: "x", Role: Admin}}}); err == nil {
		t.Fatal("Prepare accepted a token shorter than 16 characters")
	}
	commit, err := a.Prepare(Config{Tokens: []StaticToken{
		{Token: kept, Subject: "ops", Role: Admin},
		{Token: added, Subject: "newcomer", Role: Viewer, Campaigns: []string{"spring"}},
		{Token: changed, Subject: "bob", Role: Viewer, Campaigns: []string{"spring"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing changes before the commit.
	if _, err := a.Authenticate(removed); err != nil {
		t.Fatal("Prepare alone removed a token")
	}
	if _, err := a.Authenticate(added); err == nil {
		t.Fatal("Prepare alone added a token")
	}
	commit()
	if _, err := a.Authenticate(removed); err == nil {
		t.Fatal("a removed token still authenticates")
	}
	if p, err := a.Authenticate(added); err != nil || p.Subject != "newcomer" || !p.CanSee("spring") || p.CanSee("autumn") {
		t.Fatalf("added token: %+v %v", p, err)
	}
	if p, _ := a.Authenticate(kept); p != pKept || closed(p.Revoked()) {
		t.Fatal("a kept token lost its principal or was revoked")
	}
	if p, _ := a.Authenticate(changed); p.Role != Viewer || p == pChanged {
		t.Fatalf("a token now standing for a viewer: %+v", p)
	}
	if !closed(pRemoved.Revoked()) || !closed(pChanged.Revoked()) {
		t.Fatal("the principals of a removed and of a changed token were not revoked")
	}
}

// TestReloadJWTAndLinks: a new JWT key revokes what the old one verified;
// an unchanged one does not. Sessions survive a reload that keeps the
// links secret (or has none before and after), used links stay used, and
// a new secret ends every session.
func TestReloadJWTAndLinks(t *testing.T) {
	const other = "another-hs256-secret-of-32-bytes-at-least"
	linkSecret := []byte(strings.Repeat("L", 32))
	cfg := Config{Tokens: []StaticToken{{Token: adminToken, Subject: "root", Role: Admin}},
		JWT:   &JWTConfig{HS256Secret: []byte(secret), Issuer: "idp", Audience: "tally"},
		Links: LinkConfig{Secret: linkSecret}}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	oldJWT := sign(t, jwt.SigningMethodHS256, []byte(secret), valid("ann", "analyst"))
	pJWT, err := a.Authenticate(oldJWT)
	if err != nil {
		t.Fatal(err)
	}
	link, _, err := a.Links().MintLink(Principal{Subject: "ann", Role: Analyst}, 0)
	if err != nil {
		t.Fatal(err)
	}
	session, _, err := a.Links().Exchange(link)
	if err != nil {
		t.Fatal(err)
	}
	pSession, err := a.Authenticate(session)
	if err != nil {
		t.Fatal(err)
	}
	unused, _, _ := a.Links().MintLink(Principal{Subject: "ann", Role: Analyst}, 0)

	// Same settings, one more token: nothing revoked, the link stays used.
	cfg.Tokens = append(cfg.Tokens, StaticToken{Token: viewerToken, Subject: "v", Role: Viewer, Campaigns: []string{"c"}})
	commit, err := a.Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if closed(pJWT.Revoked()) || closed(pSession.Revoked()) {
		t.Fatal("an unchanged JWT key or links secret revoked principals")
	}
	if _, err := a.Authenticate(session); err != nil {
		t.Fatalf("a session did not survive a reload with the same secret: %v", err)
	}
	if _, _, err := a.Links().Exchange(link); err == nil || !strings.Contains(err.Error(), "used already") {
		t.Fatalf("a link used before the reload opened another session: %v", err)
	}

	// A new JWT secret and a new links secret.
	cfg.JWT = &JWTConfig{HS256Secret: []byte(other), Issuer: "idp", Audience: "tally"}
	cfg.Links.Secret = []byte(strings.Repeat("M", 32))
	commit, err = a.Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if !closed(pJWT.Revoked()) || !closed(pSession.Revoked()) {
		t.Fatal("a new JWT key and links secret did not revoke what the old ones verified")
	}
	if _, err := a.Authenticate(oldJWT); err == nil {
		t.Fatal("a JWT signed with the removed key authenticated")
	}
	if _, err := a.Authenticate(sign(t, jwt.SigningMethodHS256, []byte(other), valid("ann", "analyst"))); err != nil {
		t.Fatalf("a JWT of the new key: %v", err)
	}
	if _, err := a.Authenticate(session); err == nil {
		t.Fatal("a session of the old links secret authenticated")
	}
	if _, _, err := a.Links().Exchange(unused); err == nil {
		t.Fatal("a link of the old links secret opened a session")
	}

	// No links secret before and after: the process's random key stays.
	b, err := New(Config{Tokens: []StaticToken{{Token: adminToken, Subject: "root", Role: Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	l, _, _ := b.Links().MintLink(Principal{Subject: "root", Role: Admin}, 0)
	s, _, err := b.Links().Exchange(l)
	if err != nil {
		t.Fatal(err)
	}
	commit, err = b.Prepare(Config{Tokens: []StaticToken{{Token: viewerToken, Subject: "root", Role: Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if _, err := b.Authenticate(s); err != nil {
		t.Fatalf("a session of the random key did not survive a reload: %v", err)
	}
}

func TestUntilRevoked(t *testing.T) {
	const tok = "stream-token-0123456789"
	a, err := New(Config{Tokens: []StaticToken{{Token: tok, Subject: "s", Role: Analyst}, {Token: adminToken, Subject: "root", Role: Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := a.Authenticate(tok)
	r, revoked, stop := UntilRevoked(httptest.NewRequest("GET", "/api/v1/stream", nil), p)
	defer stop()
	if r.Context().Err() != nil || revoked() {
		t.Fatal("revoked before any reload")
	}
	commit, err := a.Prepare(Config{Tokens: []StaticToken{{Token: adminToken, Subject: "root", Role: Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	commit()
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context did not end when its token was removed")
	}
	if !revoked() {
		t.Fatal("revoked() is false after the revocation")
	}
	// A principal without revocation passes the request through.
	r2 := httptest.NewRequest("GET", "/", nil)
	same, revoked2, stop2 := UntilRevoked(r2, &Principal{Subject: "x", Role: Admin})
	stop2()
	if same != r2 || revoked2() || same.Context() != context.Background() && same.Context().Err() != nil {
		t.Fatal("a principal no reload can revoke changed the request")
	}
}
