package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mixDuration is how long TestAttackMix runs: 12 s in make test, 3
// minutes under TALLY_ATTACK=long (make attack), or
// TALLY_ATTACK_DURATION.
func mixDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TALLY_ATTACK_DURATION")); err == nil && d > 0 {
		return d
	}
	if os.Getenv("TALLY_ATTACK") == "long" {
		return 3 * time.Minute
	}
	return 12 * time.Second
}

// TestAttackMix runs every attack of this suite at once, for
// mixDuration, while legitimate events flow through the agent and
// legitimate callers read and stream; then the numbers must equal the
// truth exactly, and the audit log, the streams and the query slots must
// have stayed within their bounds. Every loop is bounded in time and
// count, and everything is on loopback.
func TestAttackMix(t *testing.T) {
	d := plainDeployment(t)
	dur := mixDuration()
	base := "http://" + d.aggHTTP
	auditBefore := fileSize(d.audit)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	var (
		sent, legitReads, refused401, limited, expiredOK atomic.Int64
		failMu                                           sync.Mutex
		failures                                         []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		failMu.Unlock()
	}
	loop := func(every time.Duration, max int, fn func(i int)) {
		wg.Go(func() {
			for i := 0; i < max && ctx.Err() == nil; i++ {
				fn(i)
				select {
				case <-ctx.Done():
				case <-time.After(every):
				}
			}
		})
	}

	// Legitimate: events through the agent, reads, a viewer's stream.
	loop(200*time.Millisecond, 5000, func(int) {
		if err := d.sendLegit(context.Background(), 50); err != nil {
			fail("legit events: %v", err)
			return
		}
		sent.Add(50)
	})
	loop(100*time.Millisecond, 10000, func(int) {
		rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer rcancel()
		if err := d.legitRead(rctx, annToken); err != nil && !errors.Is(err, errNotYet) {
			fail("legit read: %v", err)
			return
		}
		legitReads.Add(1)
	})
	vera := openStream(context.Background(), t, base, "?campaigns=legit_a", veraToken)
	if vera.code != 200 {
		t.Fatalf("vera's stream: %d", vera.code)
	}
	defer vera.close()

	// Attacks.
	junk := "?q=" + strings.Repeat("%F0%9F%92%A5", 2000)
	loop(time.Millisecond, 100000, func(i int) { // 401 flood, some with 24 KB queries
		u := base + "/api/v1/kpis"
		if i%10 == 0 {
			u += junk
		}
		if code, _, err := get(ctx, u, fmt.Sprintf("guess-%d-0123456789", i)); err == nil && code == 401 {
			refused401.Add(1)
		}
	})
	loop(500*time.Millisecond, 10000, func(int) { // bob's query bursts
		var bw sync.WaitGroup
		for range 40 {
			bw.Go(func() {
				code, _, err := get(ctx, base+"/api/v1/series?metric=clicks&step=1h&window=744h&by=campaign", bobToken)
				if err == nil && code == http.StatusTooManyRequests {
					limited.Add(1)
				}
			})
		}
		bw.Wait()
	})
	var held []*stream
	var heldMu sync.Mutex
	loop(50*time.Millisecond, 100000, func(i int) { // bob's streams, kept open
		s := openStream(ctx, t, base, "", bobToken)
		if s.code == 200 {
			heldMu.Lock()
			held = append(held, s)
			heldMu.Unlock()
		} else if s.code != http.StatusTooManyRequests && ctx.Err() == nil {
			fail("bob's stream %d: %d", i, s.code)
		}
	})
	loop(time.Second, 1000, func(int) { // streams with tokens about to expire
		exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
		claims := jwtClaims("eve", "analyst", 0)
		claims["exp"] = exp.Unix()
		s := openStream(context.Background(), t, base, "", signJWT(t, claims))
		if s.code != 200 {
			return // bounded with the others: eve has her own share
		}
		wg.Go(func() {
			defer s.close()
			timeout := time.After(time.Until(exp) + 5*time.Second)
			for {
				select {
				case ev, ok := <-s.events:
					if !ok {
						fail("eve's stream ended without an expired event")
						return
					}
					if ev.name == "expired" {
						expiredOK.Add(1)
						return
					}
				case <-timeout:
					fail("eve's stream outlived its token by 5 s")
					return
				}
			}
		})
	})
	loop(time.Second, 1000, func(int) { // oversized requests
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+annToken)
		req.Header.Set("X-Junk", strings.Repeat("j", 200<<10))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				fail("200 KB of headers: %d", resp.StatusCode)
			}
		}
	})

	<-ctx.Done()
	wg.Wait()
	heldMu.Lock()
	if len(held) > 16 {
		fail("bob holds %d streams, more than his 16", len(held))
	}
	for _, s := range held {
		s.close()
	}
	heldMu.Unlock()

	// The legitimate numbers end exactly at the truth.
	if err := d.waitExact(context.Background()); err != nil {
		fail("after the mix: %v", err)
	}
	// vera's stream lived through it all.
	select {
	case _, ok := <-vera.events:
		if !ok {
			fail("vera's stream was closed during the mix")
		}
	case <-time.After(20 * time.Second):
		fail("vera's stream went silent")
	}
	grown := fileSize(d.audit) - auditBefore
	secs := dur.Seconds()
	t.Logf("%v of attacks: %d legit events sent, %d legit reads, %d refused 401s, %d queries limited, %d expired streams ended on time; audit grew %d bytes (%.0f B/s)",
		dur, sent.Load(), legitReads.Load(), refused401.Load(), limited.Load(), expiredOK.Load(), grown, float64(grown)/secs)
	// ann's reads (≈ 10/s, two lines each), bob's admitted queries and
	// eve's streams write lines; the 401 flood adds at most 10/s.
	if limit := int64(secs*30*1024) + 64<<10; grown > limit {
		fail("the audit log grew %d bytes in %v (limit %d)", grown, dur, limit)
	}
	if limited.Load() == 0 || expiredOK.Load() == 0 || refused401.Load() < 100 {
		fail("the attacks did not run: %d limited, %d expired, %d refused", limited.Load(), expiredOK.Load(), refused401.Load())
	}
	for _, f := range failures {
		t.Error(f)
	}
	if t.Failed() {
		t.Log(d.logTails())
	}
}
