package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAttackMix runs the cheap attacks over and over, all at once, with
// legitimate traffic from a server sender, for 20 seconds (five minutes
// with TALLY_ATTACK=long, as make attack runs it), then checks that the
// legitimate traffic arrived exactly and no attack left a trace.
func TestAttackMix(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-mix", tokenHTTP+"  max_bytes_in_flight: 32MiB\n", "cardinality:\n  max_series: 2000\n")
	day := time.Now().UTC().Format(time.DateOnly)
	attacks := map[string]func(i int) error{
		"anonymous import": func(int) error {
			code, body, err := attack(a.url("/v1/import/cost"), []byte("date,campaign,cost\n"+day+",victim,999\n"), "Content-Type", "text/plain")
			if err == nil && code < 400 {
				err = fmt.Errorf("anonymous import: %d %s", code, body)
			}
			return err
		},
		"forged identity": func(i int) error {
			var b bytes.Buffer
			for j := range 100 {
				fmt.Fprintf(&b, `{"type":"click","campaign":"forged","ip":"203.0.%d.%d","ua":%q}`+"\n", i%250, j, browserUAs[0])
			}
			_, _, err := attack(a.url("/v1/events"), b.Bytes(), "User-Agent", crawlerUA)
			return err
		},
		"wrong token": func(int) error {
			code, _, err := attack(a.url("/v1/events"), []byte(`{"type":"click","campaign":"victim"}`), "Authorization", "Bearer guessed-token-0123456789")
			if err == nil && code != 401 {
				err = fmt.Errorf("wrong token: %d", code)
			}
			return err
		},
		"dimensions": func(i int) error {
			var b bytes.Buffer
			for j := range 500 {
				fmt.Fprintf(&b, `{"type":"click","campaign":"dims","device":"d-%d-%d","country":"Q%c"}`+"\n", i, j, 'A'+j%26)
			}
			_, _, err := attack(a.url("/v1/events"), b.Bytes(), "User-Agent", browserUAs[1])
			return err
		},
		"huge user agent": func(i int) error {
			body := fmt.Sprintf(`{"type":"click","campaign":"bigua","ua":"%d%s"}`, i, strings.Repeat("u", 256<<10))
			_, _, err := attack(a.url("/v1/events"), []byte(body), "User-Agent", browserUAs[0])
			return err
		},
		"slow upload": func(int) error {
			c, err := slowUpload(a.http, 8<<20)
			if err != nil {
				return err
			}
			time.Sleep(500 * time.Millisecond)
			return c.Close()
		},
		"malformed": func(i int) error {
			_, _, err := attack(a.url("/v1/events"), []byte(fmt.Sprintf("{not json %d\n[1,2\n", i)))
			return err
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), mixDuration())
	defer cancel()
	b := &backend{url: a.url("/v1/events"), token: serverToken}
	var wg sync.WaitGroup
	errc := make(chan error, len(attacks)+1)
	wg.Go(func() { errc <- b.run(ctx) })
	for name, f := range attacks {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if err := f(i); err != nil && ctx.Err() == nil {
					var ne net.Error
					if errorsAs(err, &ne) {
						continue // a refused connection is the agent defending itself
					}
					errc <- fmt.Errorf("%s: %w", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkLegitExact(t, a, s, b)
	tot := s.totals()
	if got := tot["victim"]; got != (counts{}) {
		t.Fatalf("an attack changed a victim's numbers: %+v", got)
	}
	if got := tot["forged"]; got.Events != 0 {
		t.Fatalf("forged browsers counted as %d visits (their request said crawler)", got.Events)
	}
	if u := s.uniquesOf("forged"); u > 5 {
		t.Fatalf("forged addresses made %d visitors", u)
	}
	devices := map[string]bool{}
	for sr := range s.series("dims") {
		devices[sr.Device] = true
	}
	if len(devices) > 1 {
		t.Fatalf("free-form devices made %d device values", len(devices))
	}
	t.Logf("legitimate: %+v accepted and arrived; %d batches", b.truth(), s.batches())
}
