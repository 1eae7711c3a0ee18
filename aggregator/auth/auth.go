// Package auth decides who is calling the aggregator's API and what they
// may read. A caller presents a bearer token: either a static token from
// the configuration or a JWT signed with a configured key. Either way it
// becomes a Principal with a role:
//
//   - admin: everything, including cluster administration routes;
//   - analyst: reads every campaign;
//   - viewer: reads only the campaigns listed in its scope.
//
// Authentication failures are 401 (with WWW-Authenticate: Bearer); what a
// known caller may not see is 403, decided by the routes with
// Principal.CanSee and Principal.Allowed.
package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Role is what a caller may do.
type Role string

// The roles, from most to least powerful.
const (
	Admin   Role = "admin"
	Analyst Role = "analyst"
	Viewer  Role = "viewer"
)

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Admin, Analyst, Viewer:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (want admin, analyst or viewer)", s)
}

// Principal is an authenticated caller. It is immutable once built.
type Principal struct {
	Subject string `json:"subject"`
	Role    Role   `json:"role"`
	// Campaigns is a viewer's scope, sorted; empty for admin and analyst,
	// who see every campaign.
	Campaigns []string `json:"campaigns,omitempty"`
	// Expires is when the credential stops being accepted (a JWT's or a
	// session's exp); zero for static tokens, which do not expire. A
	// stream opened with the credential ends then.
	Expires time.Time `json:"expires,omitzero"`

	revoked <-chan struct{}
}

// Revoked returns a channel that is closed when a configuration reload
// stops accepting the credential p came from: its static token was
// removed or now stands for someone else, or the JWT settings or the
// links secret that verified it changed. A stream opened with it ends
// then. Nil for principals no reload can revoke.
func (p *Principal) Revoked() <-chan struct{} { return p.revoked }

// Bounds on what a credential may carry. A token is read from a request
// header, so these also bound the work an unauthenticated request can
// cause before it is refused.
const (
	// MaxTokenBytes bounds a bearer token; a longer one is refused
	// before it is parsed or hashed.
	MaxTokenBytes = 16 << 10
	// MaxScopeCampaigns bounds a viewer's scope (configured or in a JWT).
	MaxScopeCampaigns = 1000
	// MaxNameBytes bounds a subject and each campaign name of a scope.
	MaxNameBytes = 256
)

// AllCampaigns reports whether p sees every campaign.
func (p *Principal) AllCampaigns() bool { return p.Role == Admin || p.Role == Analyst }

// CanSee reports whether p may read campaign c.
func (p *Principal) CanSee(c string) bool {
	if p.AllCampaigns() {
		return true
	}
	_, found := slices.BinarySearch(p.Campaigns, c)
	return found
}

// Allowed reports whether p's role is one of roles.
func (p *Principal) Allowed(roles []Role) bool { return slices.Contains(roles, p.Role) }

// StaticToken is one configured token. Exactly one of Token and
// TokenSHA256 is set: the token itself, or the hex SHA-256 of it (so the
// configuration file need not hold the secret).
type StaticToken struct {
	Token       string
	TokenSHA256 string
	Subject     string
	Role        Role
	// Campaigns is the scope of a viewer (required for viewers, refused
	// for the other roles).
	Campaigns []string
}

// JWTConfig verifies JWTs. At least one key is set, and Issuer and
// Audience are required: a token the same identity provider minted for
// another service (another audience) or another provider signed with a
// shared key must not open Tally. Tokens must carry exp, sub, role, iss
// and aud claims (and campaigns for a viewer).
type JWTConfig struct {
	// HS256Secret verifies HS256 tokens (at least 32 bytes).
	HS256Secret []byte
	// PublicKeyPEM verifies RS256 (RSA key, at least 2048 bits) or ES256
	// (P-256 key) tokens: a PEM "PUBLIC KEY" (PKIX) block.
	PublicKeyPEM []byte
	Issuer       string
	Audience     string
	// Leeway tolerates clock skew on exp and nbf. Default 30s.
	Leeway time.Duration
}

// Config is the set of credentials the aggregator accepts.
type Config struct {
	Tokens []StaticToken
	JWT    *JWTConfig
	// Links mints and verifies sign-in links and dashboard sessions.
	Links LinkConfig
}

// Authenticator turns bearer tokens into principals. It is safe for
// concurrent use. Its credentials can be replaced while it serves
// (Prepare), so that a configuration reload adds and removes tokens and
// keys without a restart.
type Authenticator struct {
	st atomic.Pointer[authState]
	mu sync.Mutex // serialises Prepare and commits
}

// authState is one configuration's credentials.
type authState struct {
	tokens []*hashedToken
	jwt    *JWTConfig     // as configured, to tell whether a reload changed it
	parser *jwt.Parser    // nil without JWT keys
	keys   map[string]any // JWT alg → verification key
	// jwtRevoked is closed when a reload changes the JWT settings.
	jwtRevoked chan struct{}
	links      *Links
}

type hashedToken struct {
	sum     [sha256.Size]byte
	p       *Principal
	revoked chan struct{} // closed when a reload removes or changes the token
}

// ErrUnauthenticated is wrapped by every authentication failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// New checks cfg and returns an Authenticator for it.
func New(cfg Config) (*Authenticator, error) {
	st, err := build(cfg, nil)
	if err != nil {
		return nil, err
	}
	a := &Authenticator{}
	a.st.Store(st)
	return a, nil
}

// Prepare checks cfg exactly as New does and returns the commit that puts
// it in force in place of the credentials in use: requests after the
// commit are judged by cfg, requests being served finish as they began.
// Credentials cfg still accepts keep their principals; those it no longer
// accepts are revoked at the commit (Principal.Revoked). The used-link
// memory carries over, so a link used before a reload stays used; without
// a links secret before and after, the per-process random key carries over
// too, so sessions survive the reload. On error nothing changes.
func (a *Authenticator) Prepare(cfg Config) (commit func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.st.Load()
	st, err := build(cfg, old)
	if err != nil {
		return nil, err
	}
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if !a.st.CompareAndSwap(old, st) {
			return // another commit came first; this one is stale
		}
		kept := map[*hashedToken]bool{}
		for _, t := range st.tokens {
			kept[t] = true
		}
		for _, t := range old.tokens {
			if !kept[t] {
				close(t.revoked)
			}
		}
		if old.jwtRevoked != st.jwtRevoked {
			close(old.jwtRevoked)
		}
		if old.links.revoked != st.links.revoked {
			close(old.links.revoked)
		}
	}, nil
}

// build checks cfg and returns its credentials, reusing from old (the
// state in force, or nil) whatever cfg leaves unchanged.
func build(cfg Config, old *authState) (*authState, error) {
	a := &authState{keys: map[string]any{}}
	var errs []error
	seen := map[[sha256.Size]byte]bool{}
	for i, t := range cfg.Tokens {
		p, err := principal(t.Subject, string(t.Role), t.Campaigns)
		if err != nil {
			errs = append(errs, fmt.Errorf("tokens[%d]: %w", i, err))
			continue
		}
		var sum [sha256.Size]byte
		switch {
		case t.Token != "" && t.TokenSHA256 != "":
			errs = append(errs, fmt.Errorf("tokens[%d] (%s): token and token_sha256 are exclusive", i, t.Subject))
			continue
		case t.Token != "":
			if len(t.Token) < 16 {
				errs = append(errs, fmt.Errorf("tokens[%d] (%s): token shorter than 16 characters", i, t.Subject))
				continue
			}
			sum = sha256.Sum256([]byte(t.Token))
		case t.TokenSHA256 != "":
			b, err := hex.DecodeString(t.TokenSHA256)
			if err != nil || len(b) != sha256.Size {
				errs = append(errs, fmt.Errorf("tokens[%d] (%s): token_sha256 is not 64 hex digits", i, t.Subject))
				continue
			}
			copy(sum[:], b)
		default:
			errs = append(errs, fmt.Errorf("tokens[%d] (%s): token or token_sha256 required", i, t.Subject))
			continue
		}
		if seen[sum] {
			errs = append(errs, fmt.Errorf("tokens[%d] (%s): the same token is configured twice", i, t.Subject))
			continue
		}
		seen[sum] = true
		a.tokens = append(a.tokens, old.sameToken(sum, p))
	}
	if cfg.JWT != nil {
		if err := a.setupJWT(*cfg.JWT); err != nil {
			errs = append(errs, fmt.Errorf("jwt: %w", err))
		}
		j := *cfg.JWT
		a.jwt = &j
	}
	a.jwtRevoked = make(chan struct{})
	if old != nil && reflect.DeepEqual(old.jwt, a.jwt) {
		a.jwtRevoked = old.jwtRevoked
	}
	var oldLinks *Links
	if old != nil {
		oldLinks = old.links
	}
	links, err := newLinks(cfg.Links, oldLinks)
	if err != nil {
		errs = append(errs, fmt.Errorf("links: %w", err))
	}
	a.links = links
	if len(a.tokens) == 0 && a.parser == nil && len(cfg.Links.Secret) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no tokens, no jwt key and no links secret: nobody could use the API"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// sameToken returns the token of s (nil: none) with this digest when it
// stands for the same principal, so that its principal and revocation
// carry over a reload; else a new token.
func (s *authState) sameToken(sum [sha256.Size]byte, p *Principal) *hashedToken {
	if s != nil {
		for _, t := range s.tokens {
			if t.sum == sum && t.p.Subject == p.Subject && t.p.Role == p.Role && slices.Equal(t.p.Campaigns, p.Campaigns) {
				return t
			}
		}
	}
	t := &hashedToken{sum: sum, p: p, revoked: make(chan struct{})}
	p.revoked = t.revoked
	return t
}

func (a *authState) setupJWT(c JWTConfig) error {
	if len(c.HS256Secret) == 0 && len(c.PublicKeyPEM) == 0 {
		return errors.New("hs256_secret or public_key_file required")
	}
	if c.Issuer == "" || c.Audience == "" {
		return errors.New("issuer and audience required when a key is set (a token minted for another service must not open Tally)")
	}
	if len(c.HS256Secret) > 0 {
		if len(c.HS256Secret) < 32 {
			return errors.New("hs256_secret shorter than 32 bytes")
		}
		a.keys[jwt.SigningMethodHS256.Alg()] = c.HS256Secret
	}
	if len(c.PublicKeyPEM) > 0 {
		alg, key, err := publicKey(c.PublicKeyPEM)
		if err != nil {
			return err
		}
		a.keys[alg] = key
	}
	algs := make([]string, 0, len(a.keys))
	for alg := range a.keys {
		algs = append(algs, alg)
	}
	if c.Leeway <= 0 {
		c.Leeway = 30 * time.Second
	}
	a.parser = jwt.NewParser(jwt.WithValidMethods(algs), jwt.WithExpirationRequired(), jwt.WithLeeway(c.Leeway),
		jwt.WithIssuer(c.Issuer), jwt.WithAudience(c.Audience))
	return nil
}

// publicKey reads a PKIX public key and names the algorithm it verifies.
func publicKey(pemBytes []byte) (string, any, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" {
		return "", nil, errors.New("public key: want a PEM \"PUBLIC KEY\" block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return "", nil, fmt.Errorf("public key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", nil, fmt.Errorf("public key: RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
		return jwt.SigningMethodRS256.Alg(), k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", nil, errors.New("public key: ECDSA key not on P-256 (ES256)")
		}
		return jwt.SigningMethodES256.Alg(), k, nil
	}
	return "", nil, fmt.Errorf("public key: %T is neither RSA nor ECDSA", key)
}

func principal(subject, role string, campaigns []string) (*Principal, error) {
	if subject == "" {
		return nil, errors.New("subject required")
	}
	if len(subject) > MaxNameBytes {
		return nil, fmt.Errorf("subject longer than %d bytes", MaxNameBytes)
	}
	r, err := ParseRole(role)
	if err != nil {
		return nil, fmt.Errorf("subject %s: %w", subject, err)
	}
	switch {
	case r == Viewer && len(campaigns) == 0:
		return nil, fmt.Errorf("subject %s: a viewer needs at least one campaign", subject)
	case r != Viewer && len(campaigns) > 0:
		return nil, fmt.Errorf("subject %s: campaigns are for viewers only (%s sees every campaign)", subject, r)
	}
	if len(campaigns) > MaxScopeCampaigns {
		return nil, fmt.Errorf("subject %s: %d campaigns, more than %d", subject, len(campaigns), MaxScopeCampaigns)
	}
	for _, c := range campaigns {
		if c == "" {
			return nil, fmt.Errorf("subject %s: empty campaign name", subject)
		}
		if len(c) > MaxNameBytes {
			return nil, fmt.Errorf("subject %s: a campaign name longer than %d bytes", subject, MaxNameBytes)
		}
	}
	cs := slices.Clone(campaigns)
	slices.Sort(cs)
	return &Principal{Subject: subject, Role: r, Campaigns: slices.Compact(cs)}, nil
}

// claims are the JWT claims Tally reads.
type claims struct {
	Role      string   `json:"role"`
	Campaigns []string `json:"campaigns"`
	jwt.RegisteredClaims
}

// Authenticate returns the principal a bearer token stands for. A
// session token (from POST /api/v1/session) is verified with the links
// key; a sign-in link token is refused (it only opens a session); a token
// with two dots is read as a JWT when a key is configured; any other is
// looked up among the static tokens, comparing SHA-256 digests in
// constant time (every configured token is compared, so timing reveals
// neither which nor how much matched).
func (a *Authenticator) Authenticate(token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	if len(token) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: token longer than %d bytes", ErrUnauthenticated, MaxTokenBytes)
	}
	st := a.st.Load()
	switch {
	case strings.HasPrefix(token, sessionPrefix):
		return st.links.verify(token, purposeSession)
	case strings.HasPrefix(token, linkPrefix):
		return nil, fmt.Errorf("%w: a sign-in link token only opens a session (POST /api/v1/session)", ErrUnauthenticated)
	}
	if st.parser != nil && strings.Count(token, ".") == 2 {
		return st.verifyJWT(token)
	}
	sum := sha256.Sum256([]byte(token))
	var found *Principal
	for _, t := range st.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			found = t.p
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	return found, nil
}

func (a *authState) verifyJWT(token string) (*Principal, error) {
	var c claims
	_, err := a.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		key, ok := a.keys[t.Method.Alg()]
		if !ok {
			return nil, fmt.Errorf("algorithm %s not accepted", t.Method.Alg())
		}
		return key, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: jwt: %v", ErrUnauthenticated, err)
	}
	p, err := principal(c.Subject, c.Role, c.Campaigns)
	if err != nil {
		return nil, fmt.Errorf("%w: jwt claims: %v", ErrUnauthenticated, err)
	}
	p.Expires = c.ExpiresAt.Time // required by the parser
	p.revoked = a.jwtRevoked
	return p, nil
}

// Links returns the minter and verifier of sign-in links and sessions.
// The Links in force change with a reload (Prepare): fetch them for each
// use rather than keep them.
func (a *Authenticator) Links() *Links { return a.st.Load().links }

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header value, or "" when there is none.
func BearerToken(header string) string {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal ctx carries, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// HashToken returns the hex SHA-256 of a token, the form token_sha256
// takes in the configuration.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
