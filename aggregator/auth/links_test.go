package auth

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// clock is a settable clock for link and session expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func linkAuth(t *testing.T, c *clock, linkSecret string, max int) *Authenticator {
	t.Helper()
	a, err := New(Config{Tokens: []StaticToken{{Token: adminToken, Subject: "root", Role: Admin}},
		JWT:   &JWTConfig{HS256Secret: []byte(secret), Issuer: "idp", Audience: "tally"},
		Links: LinkConfig{Secret: []byte(linkSecret), LinkTTL: time.Minute, SessionTTL: time.Hour, MaxUsedLinks: max, Now: c.now}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestLinkOpensOneSession: a link is exchanged once for a session that
// stands for the link's principal and expires; the link itself opens no
// route, and neither a session nor any other token is accepted in its
// place.
func TestLinkOpensOneSession(t *testing.T) {
	c := &clock{t: time.Now()}
	a := linkAuth(t, c, "a-links-secret-of-at-least-32-bytes!!", 0)
	l := a.Links()
	link, exp, err := l.MintLink(Principal{Subject: "alice", Role: Viewer, Campaigns: []string{"spring", "autumn"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, linkPrefix) || exp.Sub(c.now()) > time.Minute || exp.Before(c.now()) {
		t.Fatalf("link %q expires %v", link, exp)
	}
	if _, err := a.Authenticate(link); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "only opens a session") {
		t.Fatalf("a link token used as a bearer token: %v", err)
	}
	session, p, err := l.Exchange(link)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "alice" || p.Role != Viewer || strings.Join(p.Campaigns, ",") != "autumn,spring" || !p.Expires.Equal(c.now().Add(time.Hour).Truncate(time.Second)) {
		t.Fatalf("session principal %+v", p)
	}
	got, err := a.Authenticate(session)
	if err != nil || got.Subject != "alice" || !got.CanSee("spring") || got.CanSee("winter") || !got.Expires.Equal(p.Expires) {
		t.Fatalf("session: %+v %v", got, err)
	}
	// Single use.
	if _, _, err := l.Exchange(link); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "used already") {
		t.Fatalf("second exchange: %v", err)
	}
	// A session does not open another session, nor a static token or a JWT.
	for name, tok := range map[string]string{"session": session, "static": adminToken,
		"jwt":                        sign(t, jwt.SigningMethodHS256, []byte(secret), valid("bob", "admin")),
		"session with a link prefix": linkPrefix + strings.TrimPrefix(session, sessionPrefix)} {
		if _, _, err := l.Exchange(tok); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("exchange of a %s token: %v", name, err)
		}
	}
	// A link with its prefix swapped is no session (other key, other audience).
	link2, _, err := l.MintLink(Principal{Subject: "root", Role: Admin}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(sessionPrefix + strings.TrimPrefix(link2, linkPrefix)); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a link disguised as a session: %v", err)
	}
	// Expiry: the link after its lifetime, the session after its own.
	c.add(time.Minute + time.Second)
	if _, _, err := l.Exchange(link2); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired link: %v", err)
	}
	if _, err := a.Authenticate(session); err != nil {
		t.Fatalf("session within its lifetime: %v", err)
	}
	c.add(time.Hour)
	if _, err := a.Authenticate(session); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("expired session accepted: %v", err)
	}
}

// TestLinksOfAnotherSecret: links and sessions of another deployment (or
// of a node with a random key) are refused; two nodes sharing the secret
// accept each other's.
func TestLinksOfAnotherSecret(t *testing.T) {
	c := &clock{t: time.Now()}
	shared := "a-links-secret-of-at-least-32-bytes!!"
	n1, n2 := linkAuth(t, c, shared, 0), linkAuth(t, c, shared, 0)
	other, random := linkAuth(t, c, "another-secret-of-at-least-32-bytes!!", 0), linkAuth(t, c, "", 0)
	if !n1.Links().Shared() || random.Links().Shared() {
		t.Fatal("Shared() wrong")
	}
	link, _, err := n1.Links().MintLink(Principal{Subject: "root", Role: Admin}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]*Authenticator{"other secret": other, "random key": random} {
		if _, _, err := a.Links().Exchange(link); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("%s accepted the link: %v", name, err)
		}
	}
	session, _, err := n2.Links().Exchange(link)
	if err != nil {
		t.Fatalf("a node sharing the secret: %v", err)
	}
	if _, err := n1.Authenticate(session); err != nil {
		t.Fatalf("the session on the other node: %v", err)
	}
	if _, err := other.Authenticate(session); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a session under another secret: %v", err)
	}
}

// TestUsedLinksBounded: the set of used link ids is bounded; expired ids
// make room, and when none has expired the exchange is refused instead of
// forgetting an id (which would let a link be used twice).
func TestUsedLinksBounded(t *testing.T) {
	c := &clock{t: time.Now()}
	a := linkAuth(t, c, "a-links-secret-of-at-least-32-bytes!!", 2)
	mint := func() string {
		l, _, err := a.Links().MintLink(Principal{Subject: "root", Role: Admin}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for range 2 {
		if _, _, err := a.Links().Exchange(mint()); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.Links().Exchange(mint()); !errors.Is(err, ErrTooManyLinks) {
		t.Fatalf("third exchange with a bound of 2: %v", err)
	}
	c.add(2 * time.Minute) // the first two links expire
	if _, _, err := a.Links().Exchange(mint()); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if _, _, err := a.Links().MintLink(Principal{Subject: "root", Role: Admin}, 25*time.Hour); err == nil {
		t.Fatal("a link longer than a day was minted")
	}
	if _, _, err := a.Links().MintLink(Principal{Subject: "v", Role: Viewer}, 0); err == nil {
		t.Fatal("a viewer link without campaigns was minted")
	}
}
