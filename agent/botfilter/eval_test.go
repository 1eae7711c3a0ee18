package botfilter

import (
	"bufio"
	"cmp"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The evaluation set and its targets. See testdata/eval/SOURCES.md for
// where the user agents come from and gen.go for how the files are made.
//
//	go test -race -run TestEvaluation -v ./agent/botfilter/
const (
	minRecall       = 0.97  // crawler user agents caught
	maxFalsePosRate = 0.002 // real browser user agents flagged
	maxExamples     = 20
)

// labelled is one user agent of the evaluation set.
type labelled struct {
	ua, source string
	// holdout marks the half that is never looked at when tuning the
	// patterns: the split is a hash of the string, so it is stable.
	holdout bool
}

func holdoutHalf(ua string) bool {
	h := fnv.New32a()
	h.Write([]byte(ua))
	return h.Sum32()%2 == 1
}

// readEval reads one file of the evaluation set: one user agent a line,
// "# source: NAME ..." lines naming the source of the lines after them.
func readEval(t testing.TB, name string) []labelled {
	t.Helper()
	path := filepath.Join("testdata", "eval", name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open evaluation set: %v", err)
	}
	defer f.Close()
	var out []labelled
	source := "(none)"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# source: "); ok {
			source, _, _ = strings.Cut(rest, " ")
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, labelled{ua: line, source: source, holdout: holdoutHalf(line)})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if len(out) == 0 {
		t.Fatalf("%s is empty", path)
	}
	return out
}

// tally counts verdicts for one slice of the evaluation set.
type tally struct{ n, flagged int }

func (c tally) rate() float64 {
	if c.n == 0 {
		return 0
	}
	return float64(c.flagged) / float64(c.n)
}

// TestEvaluation measures the user-agent layer (crawler and headless, the
// configuration-free part) on real crawler and browser user agents and
// fails below the targets, on each half of the split separately.
func TestEvaluation(t *testing.T) {
	f := New(Config{})
	crawlers := readEval(t, "crawlers.txt")
	browsers := readEval(t, "browsers.txt")

	half := func(l labelled) string {
		if l.holdout {
			return "holdout"
		}
		return "dev"
	}
	run := func(set []labelled, wantBot bool) (bySource map[evalKey]tally, byHalf map[string]tally, wrong []string) {
		bySource, byHalf = map[evalKey]tally{}, map[string]tally{}
		for _, l := range set {
			reason := f.Check(l.ua, "")
			flagged := reason != ""
			for _, k := range []evalKey{{l.source, half(l)}, {l.source, "all"}} {
				c := bySource[k]
				c.n++
				if flagged {
					c.flagged++
				}
				bySource[k] = c
			}
			for _, h := range []string{half(l), "all"} {
				c := byHalf[h]
				c.n++
				if flagged {
					c.flagged++
				}
				byHalf[h] = c
			}
			// Only dev-half mistakes are shown: the holdout half stays
			// unseen so nobody tunes the patterns to it.
			if flagged != wantBot && !l.holdout && len(wrong) < maxExamples {
				wrong = append(wrong, fmt.Sprintf("%s [%s] %q", l.source, reason, l.ua))
			}
		}
		return bySource, byHalf, wrong
	}
	cSource, cHalf, missed := run(crawlers, true)
	bSource, bHalf, misflagged := run(browsers, false)

	for _, k := range sortedKeys(cSource) {
		c := cSource[k]
		t.Logf("crawlers %-22s %-7s recall %6.2f%% (%d/%d)", k.source, k.half, 100*c.rate(), c.flagged, c.n)
	}
	for _, k := range sortedKeys(bSource) {
		c := bSource[k]
		t.Logf("browsers %-22s %-7s misflagged %5.2f%% (%d/%d)", k.source, k.half, 100*c.rate(), c.flagged, c.n)
	}
	for _, h := range []string{"dev", "holdout", "all"} {
		c, b := cHalf[h], bHalf[h]
		precision := float64(c.flagged) / float64(max(1, c.flagged+b.flagged))
		t.Logf("%-7s recall %6.2f%% (%d/%d)  misflagged %5.2f%% (%d/%d)  precision %6.2f%%",
			h, 100*c.rate(), c.flagged, c.n, 100*b.rate(), b.flagged, b.n, 100*precision)
	}
	for _, s := range missed {
		t.Logf("missed crawler (dev): %s", s)
	}
	for _, s := range misflagged {
		t.Logf("misflagged browser (dev): %s", s)
	}
	for _, h := range []string{"dev", "holdout"} {
		if r := cHalf[h].rate(); r < minRecall {
			t.Errorf("%s half: crawler recall %.2f%%, want at least %.2f%%", h, 100*r, 100*minRecall)
		}
		if r := bHalf[h].rate(); r > maxFalsePosRate {
			t.Errorf("%s half: %.2f%% of browsers misflagged, want at most %.2f%%", h, 100*r, 100*maxFalsePosRate)
		}
	}
}

func sortedKeys[V any](m map[evalKey]V) []evalKey {
	keys := make([]evalKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b evalKey) int {
		return cmp.Or(cmp.Compare(a.source, b.source), cmp.Compare(halfOrder(a.half), halfOrder(b.half)))
	})
	return keys
}

// evalKey names one slice of the evaluation set.
type evalKey struct{ source, half string }

func halfOrder(h string) int { return strings.Index("dev holdout all", h) }

// TestEvaluationCrawlerDetectFixtures reports figures on crawlerdetect's
// own fixtures, which it is built to pass, so they say nothing of
// crawlerdetect but do measure this package's generic rules alone. It
// gates nothing and runs only when pointed at the fixtures (a minute or
// so without -race):
//
//	TALLY_CRAWLERDETECT_TESTDATA=$(go env GOMODCACHE)/github.com/x-way/crawlerdetect@v0.2.28/testdata \
//	  go test -run TestEvaluationCrawlerDetectFixtures -v ./agent/botfilter/
func TestEvaluationCrawlerDetectFixtures(t *testing.T) {
	dir := os.Getenv("TALLY_CRAWLERDETECT_TESTDATA")
	if dir == "" {
		t.Skip("TALLY_CRAWLERDETECT_TESTDATA not set")
	}
	f := New(Config{})
	for _, file := range []struct {
		name    string
		wantBot bool
	}{{"crawlers.txt", true}, {"devices.txt", false}} {
		path := filepath.Join(dir, file.name)
		fh, err := os.Open(path)
		if err != nil {
			t.Fatalf("open fixtures: %v", err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		var n, filter, generic int
		var examples []string
		for sc.Scan() {
			ua := strings.TrimSpace(sc.Text())
			if ua == "" {
				continue
			}
			n++
			if f.Check(ua, "") != "" {
				filter++
			}
			if genericBot(strings.ToLower(ua)) {
				generic++
				if !file.wantBot && len(examples) < maxExamples {
					examples = append(examples, ua)
				}
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		t.Logf("%s: %d user agents, filter flags %d (%.2f%%), generic rules alone %d (%.2f%%)",
			file.name, n, filter, 100*float64(filter)/float64(n), generic, 100*float64(generic)/float64(n))
		for _, ua := range examples {
			t.Logf("generic rules flag device: %q", ua)
		}
	}
}
