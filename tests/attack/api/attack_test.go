package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
)

// TestAttackMetricsNameCampaigns: a scrape of /metrics without a
// credential must not list the campaigns (on main,
// tally_aggregator_campaign_owner{campaign=…} names every active one).
// With the admin token the node's full metrics are still there.
func TestAttackMetricsNameCampaigns(t *testing.T) {
	plain := plainDeployment(t)
	plain.duringAttack(t, func(ctx context.Context) {
		for range 20 {
			code, body, err := get(ctx, "http://"+plain.aggHTTP+"/metrics", "")
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range legitCampaigns {
				if strings.Contains(string(body), c) {
					t.Fatalf("/metrics without a credential (%d) names campaign %s:\n%s", code, c, grep(string(body), c))
				}
			}
		}
	})
	code, body, err := get(context.Background(), "http://"+plain.aggHTTP+"/metrics", adminToken)
	if err != nil || code != 200 || !strings.Contains(string(body), `tally_aggregator_campaign_owner{campaign="legit_a"`) {
		t.Fatalf("/metrics with the admin token: %d %v, owner series:\n%s", code, err, grep(string(body), "campaign_owner"))
	}
}

// TestAttackJWTForAnotherAudience: a configuration with a JWT key but no
// issuer or audience would accept any token the identity provider signs
// for any service; it is refused at start (on main it starts). On the
// running node a token for another audience or issuer is refused, one for
// Tally accepted.
func TestAttackJWTForAnotherAudience(t *testing.T) {
	plain := plainDeployment(t)
	cfg := filepath.Join(t.TempDir(), "open-jwt.yaml")
	if err := harness.WriteAggregatorConfig(cfg, harness.AggregatorOptions{Name: "agg-x", DataDir: t.TempDir(), QUICAddr: "127.0.0.1:7400",
		HTTPAddr: "127.0.0.1:8080", CertsDir: "certs", InfluxURL: "http://127.0.0.1:8086",
		AuthExtra: "jwt: {hs256_secret: \"" + jwtSecret + "\"}\n"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "tally-aggregator"), "-config", cfg, "-check-config").CombinedOutput()
	var exit *exec.ExitError
	if err == nil || !strings.Contains(string(out), "issuer and audience required") {
		t.Errorf("a JWT key without issuer and audience was accepted (%v):\n%s", err, out)
	} else if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("check-config exit %v, want 2", err)
	}

	base := "http://" + plain.aggHTTP + "/api/v1/kpis?campaign=legit_a&window=60m"
	other := jwtClaims("mallory", "admin", time.Hour)
	other["aud"] = "grafana"
	stranger := jwtClaims("mallory", "admin", time.Hour)
	stranger["iss"] = "https://elsewhere.test"
	for name, claims := range map[string]map[string]any{"another audience": other, "another issuer": stranger} {
		if code, body, _ := get(context.Background(), base, signJWT(t, claims)); code != 401 {
			t.Errorf("a token for %s: %d %s", name, code, body)
		}
	}
	if code, body, _ := get(context.Background(), base, signJWT(t, jwtClaims("carol", "analyst", time.Hour))); code != 200 {
		t.Errorf("a token for Tally: %d %s", code, body)
	}
}

// TestAttackStreamOutlivesToken: a stream opened with a JWT that expires
// in three seconds must end then, with an "expired" event (on main it
// streams on for as long as the client likes). A legitimate stream goes
// on meanwhile.
func TestAttackStreamOutlivesToken(t *testing.T) {
	plain := plainDeployment(t)
	base := "http://" + plain.aggHTTP
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	legit := openStream(ctx, t, base, "", annToken)
	if legit.code != 200 {
		t.Fatalf("ann's stream: %d", legit.code)
	}
	defer legit.close()
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second).Add(time.Second)
	claims := jwtClaims("eve", "analyst", 0)
	claims["exp"] = exp.Unix()
	s := openStream(ctx, t, base, "", signJWT(t, claims))
	if s.code != 200 {
		t.Fatalf("stream with a valid JWT: %d", s.code)
	}
	defer s.close()
	s.waitEvent(t, "snapshot", 10*time.Second)
	plain.duringAttack(t, func(context.Context) {
		var last sseEvent
		deadline := time.After(time.Until(exp) + 5*time.Second)
	read:
		for {
			select {
			case ev, ok := <-s.events:
				if !ok {
					break read
				}
				if ev.comment == "" {
					last = ev
				}
			case <-deadline:
				t.Errorf("the stream is still open 5 s after its token expired at %s", exp.Format(time.TimeOnly))
				return
			}
		}
		if last.name != "expired" || last.at.Before(exp) {
			t.Errorf("the stream ended at %s with %q; want an expired event at %s", last.at.Format(time.StampMilli), last.name, exp.Format(time.TimeOnly))
		}
	})
	// The legitimate stream is still open and delivering.
	plain.sendLegit(context.Background(), 30)
	legit.waitEvent(t, "minutes", 15*time.Second)
	if err := plain.waitExact(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestAttackAuditFlood: refused requests with 60 KB query strings and a
// flood of 401s must not fill the disk (on main each 401 line holds the
// whole query: 20 of them wrote over a megabyte), and a stream's start
// must be on record while it is open (on main only when it ends).
func TestAttackAuditFlood(t *testing.T) {
	plain := plainDeployment(t)
	base := "http://" + plain.aggHTTP
	before := fileSize(plain.audit)
	junk := "?q=" + strings.Repeat("%F0%9F%92%A5", 5000) // 60 KB
	var refused atomic.Int64
	plain.duringAttack(t, func(ctx context.Context) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range 250 {
					u := base + "/api/v1/kpis"
					if i < 3 {
						u += junk
					}
					token := ""
					if w%2 == 1 {
						token = fmt.Sprintf("guess-%d-%d-0123456789", w, i)
					}
					if code, _, err := get(ctx, u, token); err == nil && code == 401 {
						refused.Add(1)
					}
				}
			})
		}
		wg.Wait()
	})
	// An authenticated caller's junk parameters are clipped too.
	if code, _, _ := get(context.Background(), base+"/api/v1/kpis"+junk+"&campaign=legit_a", bobToken); code != 400 {
		t.Errorf("bob's junk query: %d", code)
	}
	if refused.Load() != 2000 {
		t.Fatalf("%d of 2000 refused", refused.Load())
	}
	grown := fileSize(plain.audit) - before
	lines, longest := auditLines(t, plain.audit)
	var written, summarized int
	for _, l := range lines {
		if l["msg"] == "refused_suppressed" {
			summarized += int(l["count"].(float64))
		} else if l["status"] == 401.0 {
			written++
		}
	}
	t.Logf("2000 refused requests (24 with 60 KB queries): audit grew %d bytes; %d written one by one, %d summed up; longest line %d bytes",
		grown, written, summarized, longest)
	if grown > 256<<10 || longest > 4<<10 {
		t.Errorf("the audit log grew %d bytes (longest line %d) for 2000 refused requests", grown, longest)
	}

	// A stream is on record while it is open.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openStream(ctx, t, base, "?campaigns=legit_a", veraToken)
	if s.code != 200 {
		t.Fatalf("vera's stream: %d", s.code)
	}
	defer s.close()
	s.waitEvent(t, "snapshot", 10*time.Second)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(plain.audit)
		if strings.Contains(string(b), `"msg":"stream_start"`) && strings.Contains(string(b), `"subject":"vera"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an open stream has no audit line")
		}
	}
}

// TestAttackStreamFlood: bob, a valid analyst, opens 60 streams; beyond
// his share (16) they are refused with 429 (on main he gets all of them,
// and as many more as he likes). ann still gets her stream and exact
// numbers.
func TestAttackStreamFlood(t *testing.T) {
	plain := plainDeployment(t)
	base := "http://" + plain.aggHTTP
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var open []*stream
	defer func() {
		for _, s := range open {
			s.close()
		}
	}()
	codes := map[int]int{}
	plain.duringAttack(t, func(context.Context) {
		for range 60 {
			s := openStream(ctx, t, base, "", bobToken)
			codes[s.code]++
			if s.code == 200 {
				open = append(open, s)
			}
		}
		legit := openStream(ctx, t, base, "", annToken)
		if legit.code != 200 {
			t.Errorf("ann's stream during bob's flood: %d", legit.code)
			return
		}
		defer legit.close()
		legit.waitEvent(t, "snapshot", 10*time.Second)
	})
	if codes[200] != 16 || codes[429] != 44 {
		t.Errorf("bob's 60 streams: %v, want 16 open and 44 refused with 429", codes)
	}
}

// TestAttackQueryFlood: bob fires 300 concurrent 31-day queries; beyond
// his share (8 admitted) they are refused at once with 429 (on main they
// all run against InfluxDB together), and ann's reads stay exact.
func TestAttackQueryFlood(t *testing.T) {
	plain := plainDeployment(t)
	u := "http://" + plain.aggHTTP + "/api/v1/series?metric=clicks,uniques&step=1h&window=744h&by=campaign"
	var mu sync.Mutex
	codes := map[int]int{}
	plain.duringAttack(t, func(ctx context.Context) {
		var wg sync.WaitGroup
		for range 300 {
			wg.Go(func() {
				code, _, err := get(ctx, u, bobToken)
				if err != nil {
					code = -1
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			})
		}
		wg.Wait()
	})
	t.Logf("bob's 300 concurrent queries: %v", codes)
	if codes[429] == 0 || codes[200]+codes[429]+codes[503] != 300 {
		t.Errorf("bob's 300 concurrent queries: %v; want the excess refused with 429", codes)
	}
}

// TestAttackOversizedRequests: half a megabyte of request headers is
// refused before any handler (431; on main it is read and authenticated),
// an identity provider's token scoped to 5,000 campaigns is refused (on
// main each request sorts them all), and so is a stream filter naming 150
// campaigns (on main it is accepted).
func TestAttackOversizedRequests(t *testing.T) {
	plain := plainDeployment(t)
	base := "http://" + plain.aggHTTP
	plain.duringAttack(t, func(ctx context.Context) {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/kpis?campaign=legit_a&window=60m", nil)
		req.Header.Set("Authorization", "Bearer "+annToken)
		for i := range 8 {
			req.Header.Set(fmt.Sprintf("X-Junk-%d", i), strings.Repeat("j", 64<<10))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("512 KB of headers: %d, want 431", resp.StatusCode)
		}

		var scope []string
		for i := range 5000 {
			scope = append(scope, fmt.Sprintf("c%d", i))
		}
		scope = append(scope, "legit_a")
		claims := jwtClaims("wide", "viewer", time.Hour)
		claims["campaigns"] = scope
		if code, _, _ := get(ctx, base+"/api/v1/kpis?campaign=legit_a&window=60m", signJWT(t, claims)); code != 401 && code != 431 {
			t.Errorf("a token scoped to 5,001 campaigns: %d", code)
		}

		var names []string
		for i := range 150 { // 489 bytes: under main's 512-byte bound on a parameter
			names = append(names, fmt.Sprint(i))
		}
		s := openStream(ctx, t, base, "?campaigns="+strings.Join(names, ","), adminToken)
		s.close()
		if s.code != 400 {
			t.Errorf("a stream filter of 150 campaigns: %d, want 400", s.code)
		}
	})
}

func grep(text, sub string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
