package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Sign-in links and sessions.
//
// A dashboard link must not carry a long-lived credential: links end up in
// chat logs, browser history, proxy logs and screenshots. So a link
// carries a link token, which is
//
//   - short-lived (LinkConfig.LinkTTL, 15 minutes by default),
//   - single-purpose: no route but POST /api/v1/session accepts it, and
//   - single-use on each node: the exchange remembers its id until it
//     expires.
//
// The dashboard exchanges it at once for a session token, which it keeps
// in the tab's session storage and sends as a bearer token. A session
// expires (LinkConfig.SessionTTL, 12 hours by default) and a stream opened
// with it ends then.
//
// Both are HS256 JWTs behind a prefix that names their purpose ("tlink_",
// "tsess_"). Each purpose has its own key, derived from the links secret
// with HMAC-SHA256, and its own audience claim, so one can never stand in
// for the other even with the prefix swapped. They are never confused with
// the identity provider's JWTs: the prefix is checked first, and the keys
// differ.

const (
	linkPrefix    = "tlink_"
	sessionPrefix = "tsess_"

	purposeLink    = "tally-link"
	purposeSession = "tally-session"
	linksIssuer    = "tally"
)

// Bounds of link and session lifetimes.
const (
	DefaultLinkTTL    = 15 * time.Minute
	MaxLinkTTL        = 24 * time.Hour
	DefaultSessionTTL = 12 * time.Hour
	MaxSessionTTL     = 7 * 24 * time.Hour
	// DefaultMaxUsedLinks bounds the ids of exchanged links a node
	// remembers (each until its link expires).
	DefaultMaxUsedLinks = 100_000
)

// LinkConfig configures sign-in links and sessions.
type LinkConfig struct {
	// Secret keys links and sessions: at least 32 bytes, the same on every
	// node, so that a link minted on any node or by `tally-aggregator
	// link` opens a session anywhere and a session works on every node.
	// Empty: a random key per process, so links (minted with the admin
	// API) and sessions work on the minting node only, until it restarts.
	Secret []byte
	// LinkTTL is a link's default lifetime. Default 15m, at most 24h.
	LinkTTL time.Duration
	// SessionTTL is a session's lifetime. Default 12h, at most 7 days.
	SessionTTL time.Duration
	// MaxUsedLinks bounds the remembered ids of exchanged links; when it
	// is reached and none has expired, exchanges are refused (503) rather
	// than forgetting one, which would let that link be used again.
	// Default 100,000.
	MaxUsedLinks int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Links mints and verifies sign-in links and sessions. It is safe for
// concurrent use.
type Links struct {
	linkKey, sessionKey []byte
	shared              bool
	linkTTL, sessionTTL time.Duration
	maxUsed             int
	now                 func() time.Time
	linkParser          *jwt.Parser
	sessionParser       *jwt.Parser
	// revoked is closed when a reload changes the key: every session
	// verified with it ends.
	revoked chan struct{}
	// used is shared with the Links a reload replaces this one with.
	used *usedLinks
}

// usedLinks remembers the ids of exchanged links.
type usedLinks struct {
	mu  sync.Mutex
	ids map[string]time.Time // link id → its expiry
}

// ErrTooManyLinks is returned by Exchange when the node remembers
// MaxUsedLinks unexpired links already.
var ErrTooManyLinks = errors.New("too many sign-in links in use; try again later")

// newLinks checks c and returns its Links. old, when not nil, is the
// Links in force, which a reload replaces: its used-link memory carries
// over, and so do its key and revocation when the secret is the same (or
// neither has one: the random key of this process stays).
func newLinks(c LinkConfig, old *Links) (*Links, error) {
	if c.LinkTTL == 0 {
		c.LinkTTL = DefaultLinkTTL
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.MaxUsedLinks == 0 {
		c.MaxUsedLinks = DefaultMaxUsedLinks
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	var errs []error
	if c.LinkTTL < time.Second || c.LinkTTL > MaxLinkTTL {
		errs = append(errs, fmt.Errorf("link_ttl %s: want 1s to %s", c.LinkTTL, MaxLinkTTL))
	}
	if c.SessionTTL < time.Minute || c.SessionTTL > MaxSessionTTL {
		errs = append(errs, fmt.Errorf("session_ttl %s: want 1m to %s", c.SessionTTL, MaxSessionTTL))
	}
	if c.MaxUsedLinks < 1 {
		errs = append(errs, fmt.Errorf("max_used_links %d: at least 1", c.MaxUsedLinks))
	}
	secret := c.Secret
	if len(secret) > 0 && len(secret) < 32 {
		errs = append(errs, errors.New("secret shorter than 32 bytes"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	l := &Links{shared: len(c.Secret) > 0, linkTTL: c.LinkTTL, sessionTTL: c.SessionTTL, maxUsed: c.MaxUsedLinks, now: c.Now,
		revoked: make(chan struct{}), used: &usedLinks{ids: map[string]time.Time{}}}
	if old != nil {
		l.used = old.used
	}
	switch {
	case old != nil && !old.shared && len(secret) == 0:
		l.linkKey, l.sessionKey, l.revoked = old.linkKey, old.sessionKey, old.revoked
	case len(secret) == 0:
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		fallthrough
	default:
		l.linkKey, l.sessionKey = derive(secret, purposeLink), derive(secret, purposeSession)
		if old != nil && hmac.Equal(old.linkKey, l.linkKey) {
			l.revoked = old.revoked
		}
	}
	parser := func(aud string) *jwt.Parser {
		return jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired(),
			jwt.WithIssuer(linksIssuer), jwt.WithAudience(aud), jwt.WithTimeFunc(c.Now))
	}
	l.linkParser, l.sessionParser = parser(purposeLink), parser(purposeSession)
	return l, nil
}

// derive is the key of one purpose: HMAC-SHA256(secret, purpose).
func derive(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// Shared reports whether the key comes from the configuration (and so
// is the same on every node and for `tally-aggregator link`).
func (l *Links) Shared() bool { return l.shared }

// LinkTTL is the default lifetime of a link.
func (l *Links) LinkTTL() time.Duration { return l.linkTTL }

// SessionTTL is the lifetime of a session.
func (l *Links) SessionTTL() time.Duration { return l.sessionTTL }

// MintLink returns a sign-in link token for p, valid for ttl (0: the
// default; at most MaxLinkTTL), and when it expires.
func (l *Links) MintLink(p Principal, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = l.linkTTL
	}
	if ttl < time.Second || ttl > MaxLinkTTL {
		return "", time.Time{}, fmt.Errorf("link lifetime %s: want 1s to %s", ttl, MaxLinkTTL)
	}
	checked, err := principal(p.Subject, string(p.Role), p.Campaigns)
	if err != nil {
		return "", time.Time{}, err
	}
	return l.mint(*checked, purposeLink, ttl)
}

// Exchange opens a session with a link token: the link must be valid,
// unexpired and not exchanged on this node before. It returns the
// session token and its principal (Expires set). A link that is not
// accepted is an error wrapping ErrUnauthenticated.
func (l *Links) Exchange(link string) (string, *Principal, error) {
	if len(link) > MaxTokenBytes || !strings.HasPrefix(link, linkPrefix) {
		return "", nil, fmt.Errorf("%w: not a sign-in link token", ErrUnauthenticated)
	}
	p, id, exp, err := l.parse(link, purposeLink)
	if err != nil {
		return "", nil, err
	}
	if err := l.markUsed(id, exp); err != nil {
		return "", nil, err
	}
	session, sexp, err := l.mint(*p, purposeSession, l.sessionTTL)
	if err != nil {
		return "", nil, err
	}
	p.Expires = sexp
	return session, p, nil
}

// markUsed remembers a link's id until it expires; a second use is
// refused.
func (l *Links) markUsed(id string, exp time.Time) error {
	u := l.used
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, seen := u.ids[id]; seen {
		return fmt.Errorf("%w: this sign-in link was used already", ErrUnauthenticated)
	}
	if len(u.ids) >= l.maxUsed {
		now := l.now()
		for k, e := range u.ids {
			if now.After(e) {
				delete(u.ids, k)
			}
		}
		if len(u.ids) >= l.maxUsed {
			return ErrTooManyLinks
		}
	}
	u.ids[id] = exp
	return nil
}

// verify returns the principal of a session token.
func (l *Links) verify(token, purpose string) (*Principal, error) {
	p, _, _, err := l.parse(token, purpose)
	return p, err
}

// linkClaims are the claims of links and sessions.
type linkClaims struct {
	Role      string   `json:"role"`
	Campaigns []string `json:"campaigns,omitempty"`
	jwt.RegisteredClaims
}

func (l *Links) mint(p Principal, purpose string, ttl time.Duration) (string, time.Time, error) {
	idb := make([]byte, 16)
	if _, err := rand.Read(idb); err != nil {
		return "", time.Time{}, err
	}
	now := l.now()
	exp := now.Add(ttl).Truncate(time.Second)
	c := linkClaims{Role: string(p.Role), Campaigns: p.Campaigns, RegisteredClaims: jwt.RegisteredClaims{
		Issuer: linksIssuer, Subject: p.Subject, Audience: jwt.ClaimStrings{purpose}, ID: hex.EncodeToString(idb),
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp)}}
	key, prefix := l.linkKey, linkPrefix
	if purpose == purposeSession {
		key, prefix = l.sessionKey, sessionPrefix
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	if err != nil {
		return "", time.Time{}, err
	}
	return prefix + s, exp, nil
}

func (l *Links) parse(token, purpose string) (*Principal, string, time.Time, error) {
	key, prefix, parser, what := l.linkKey, linkPrefix, l.linkParser, "sign-in link"
	if purpose == purposeSession {
		key, prefix, parser, what = l.sessionKey, sessionPrefix, l.sessionParser, "session"
	}
	var c linkClaims
	_, err := parser.ParseWithClaims(strings.TrimPrefix(token, prefix), &c, func(*jwt.Token) (any, error) { return key, nil })
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, "", time.Time{}, fmt.Errorf("%w: the %s has expired", ErrUnauthenticated, what)
		}
		return nil, "", time.Time{}, fmt.Errorf("%w: %s: %v", ErrUnauthenticated, what, err)
	}
	if c.ID == "" {
		return nil, "", time.Time{}, fmt.Errorf("%w: %s without an id", ErrUnauthenticated, what)
	}
	p, err := principal(c.Subject, c.Role, c.Campaigns)
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("%w: %s claims: %v", ErrUnauthenticated, what, err)
	}
	p.Expires = c.ExpiresAt.Time
	if purpose == purposeSession {
		p.revoked = l.revoked
	}
	return p, c.ID, c.ExpiresAt.Time, nil
}
