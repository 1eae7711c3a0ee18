package agent_test

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/backfill"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/internal/loadgen"
)

// writeLog writes n combined-format lines over the hour before end: page
// views with UTM parameters, some crawler hits, and every 100th line
// damaged. It returns how many lines are pageviews and bots.
func writeLog(t *testing.T, path string, n int, end time.Time, gz bool) (pageviews, bots, bad int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var w io.Writer = f
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(f)
		w = zw
	}
	rng := rand.New(rand.NewPCG(uint64(n), 9))
	campaigns := []string{"spring_sale", "black_friday", "newsletter_nov"}
	for i := range n {
		ts := end.Add(-time.Hour + time.Duration(i)*time.Hour/time.Duration(n))
		if i%100 == 99 {
			fmt.Fprintf(w, "garbage line %d without structure\n", i)
			bad++
			continue
		}
		ua := loadgen.BrowserUAs[rng.IntN(len(loadgen.BrowserUAs))]
		if rng.IntN(20) == 0 {
			ua = loadgen.CrawlerUAs[rng.IntN(len(loadgen.CrawlerUAs))]
			bots++
		} else {
			pageviews++
		}
		c := campaigns[rng.IntN(len(campaigns))]
		fmt.Fprintf(w, "198.51.100.%d - - [%s] \"GET /p/%d?utm_campaign=%s&utm_source=google&utm_medium=cpc HTTP/1.1\" 200 5120 \"https://www.google.com/\" \"%s\"\n",
			rng.IntN(250)+1, ts.Format("02/Jan/2006:15:04:05 -0700"), rng.IntN(300), c, ua)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return pageviews, bots, bad
}

func TestImportLogShipsExactCountsOnce(t *testing.T) {
	cfg, cap := captureSetup(t)
	dir := t.TempDir()
	end := time.Now().Add(-24 * time.Hour).Truncate(time.Minute)
	plain, gzipped := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1.gz")
	pv1, bots1, bad1 := writeLog(t, plain, 20_000, end, false)
	pv2, bots2, bad2 := writeLog(t, gzipped, 10_000, end.Add(-time.Hour), true)

	spec := logparse.DefaultSpec()
	spec.Format, spec.Site = "combined", "shop.example.com"
	opts := backfill.ImportOptions{Files: []string{plain, gzipped}, Parse: spec}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := backfill.Import(ctx, cfg, opts, logger)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Lines != 30_000 || sum.Events != uint64(pv1+pv2) || sum.Bots != uint64(bots1+bots2) ||
		sum.Rejected["no_match"] != uint64(bad1+bad2) || sum.Files != 2 {
		t.Fatalf("summary %+v\n%s", sum, backfill.FormatSummary(&sum))
	}
	// Where the first rejected line was, never the line: lines carry
	// client addresses.
	if s := backfill.FormatSummary(&sum); !strings.Contains(s, "access.log line 100") || strings.Contains(s, "garbage line") {
		t.Fatalf("summary should say where the first rejected line was, and not show it:\n%s", s)
	}
	count := func() (events, bots uint64) {
		for _, c := range cap.latest() {
			events += c.State.Count
			for _, n := range c.State.Bots {
				bots += n
			}
		}
		return
	}
	if ev, b := count(); ev != uint64(pv1+pv2) || b != uint64(bots1+bots2) {
		t.Fatalf("shipped %d events and %d bots, want %d and %d", ev, b, pv1+pv2, bots1+bots2)
	}

	// Importing the same files again counts nothing twice.
	sum, err = backfill.Import(ctx, cfg, opts, logger)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.AlreadyImported) != 2 || sum.Lines != 0 {
		t.Fatalf("second import: %+v", sum)
	}
	if ev, b := count(); ev != uint64(pv1+pv2) || b != uint64(bots1+bots2) {
		t.Fatalf("after re-import: %d events and %d bots, want %d and %d", ev, b, pv1+pv2, bots1+bots2)
	}
}
