package botfilter

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The evaluation of the user-agent layer, leave-one-source-out: for each
// source of testdata/eval (SOURCES.md), the lexicon is learnt from every
// other source and the rules are scored on the one left out. A rule or a
// list that only fits one source shows up as that source's miss.
//
//	go test -race -run 'TestEvaluation$' -v ./agent/botfilter/
const (
	// minRecall is the share of each held-out source's crawlers that must
	// be caught.
	minRecall = 0.97
	// maxMainstreamFP is the share of current mainstream browsers (see
	// mainstream) that may be flagged, over all held-out sources.
	maxMainstreamFP = 0.002
	maxExamples     = 80
)

// labelled is one line of the evaluation files: a user agent (or, in
// patterns.txt, a regular expression) and its source.
type labelled struct {
	ua, source string
	// holdout marks the half of each file that is never printed: the rules
	// were written looking at the other half's mistakes only. The split
	// is a hash of the string, so it is stable.
	holdout bool
}

func holdoutHalf(ua string) bool {
	h := fnv.New32a()
	h.Write([]byte(ua))
	return h.Sum32()%2 == 1
}

// readEval reads one file of testdata/eval: one entry a line, "# source:
// NAME ..." lines naming the source of the lines after them.
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

// mainstreamRules define a current mainstream browser for the false
// positive target, independently of the filter: Chrome 100 or later and the
// browsers built on it (Edge, Opera, Samsung Internet, Yandex...), Firefox
// 100 or later, Safari 15 or later, and Chrome, Firefox and Edge on iOS,
// on Windows, macOS, Linux, ChromeOS, Android, iPhone and iPad.
var mainstreamRules = []struct {
	re  *regexp.Regexp
	min int
}{
	{regexp.MustCompile(`^Mozilla/5\.0 \((?:Windows NT 1\d|Macintosh|X11|Linux; Android|Linux|X11; CrOS)[^)]*\) AppleWebKit/537\.36 \(KHTML, like Gecko\) .*Chrome/(\d+)\.`), 100},
	{regexp.MustCompile(`^Mozilla/5\.0 \((?:Windows NT 1\d|Macintosh|X11|Android)[^)]*\) Gecko/\d+ Firefox/(\d+)\.`), 100},
	{regexp.MustCompile(`^Mozilla/5\.0 \((?:iPhone|iPad|Macintosh)[^)]*\) AppleWebKit/\d[\d.]* \(KHTML, like Gecko\) Version/(\d+)[\d.]* (?:Mobile/\w+ )?Safari/`), 15},
	{regexp.MustCompile(`^Mozilla/5\.0 \((?:iPhone|iPad)[^)]*\) AppleWebKit/\d[\d.]* \(KHTML, like Gecko\) (?:CriOS|FxiOS|EdgiOS)/(\d+)`), 100},
}

func mainstream(ua string) bool {
	for _, r := range mainstreamRules {
		if m := r.re.FindStringSubmatch(ua); m != nil {
			if v, err := strconv.Atoi(m[1]); err == nil && v >= r.min {
				return true
			}
		}
	}
	return false
}

// score counts verdicts on one slice of the evaluation set.
type score struct{ n, flagged int }

func (s score) rate() float64 {
	if s.n == 0 {
		return 0
	}
	return float64(s.flagged) / float64(s.n)
}

func (s *score) add(flagged bool) {
	s.n++
	if flagged {
		s.flagged++
	}
}

// sourceScore is one row of the leave-one-source-out table.
type sourceScore struct {
	source                    string
	crawlers, browsers, mains score
}

// TestEvaluation is the leave-one-source-out evaluation: it fails when a
// held-out source's crawler recall is under minRecall, or when more than
// maxMainstreamFP of the held-out current mainstream browsers are flagged.
func TestEvaluation(t *testing.T) {
	crawlers := readEval(t, "crawlers.txt")
	browsers := readEval(t, "browsers.txt")
	patterns := readEval(t, "patterns.txt")
	browserPatterns := readEval(t, "browser-patterns.txt")
	var sources []string
	for _, l := range append(slices.Clone(crawlers), browsers...) {
		if !slices.Contains(sources, l.source) {
			sources = append(sources, l.source)
		}
	}

	var rows []sourceScore
	var allC, allB, allM score
	reasons := map[string]int{}
	var missed, misflagged []string
	for _, src := range sources {
		lex := buildLexicon(patterns, browserPatterns, browsers, src).lexicon()
		row := sourceScore{source: src}
		for _, c := range crawlers {
			if c.source != src {
				continue
			}
			v := classify(strings.ToLower(TruncateUA(c.ua)), lex)
			flagged := v != verdictBrowser
			row.crawlers.add(flagged)
			if flagged {
				reasons[v.reason()]++
			} else if !c.holdout && len(missed) < maxExamples {
				missed = append(missed, fmt.Sprintf("%s %q", src, c.ua))
			}
		}
		for _, b := range browsers {
			if b.source != src {
				continue
			}
			v := classify(strings.ToLower(TruncateUA(b.ua)), lex)
			flagged := v != verdictBrowser
			row.browsers.add(flagged)
			if mainstream(b.ua) {
				row.mains.add(flagged)
			}
			if flagged && !b.holdout && len(misflagged) < maxExamples {
				misflagged = append(misflagged, fmt.Sprintf("%s [%s] %q", src, v.reason(), b.ua))
			}
		}
		allC.n, allC.flagged = allC.n+row.crawlers.n, allC.flagged+row.crawlers.flagged
		allB.n, allB.flagged = allB.n+row.browsers.n, allB.flagged+row.browsers.flagged
		allM.n, allM.flagged = allM.n+row.mains.n, allM.flagged+row.mains.flagged
		rows = append(rows, row)
	}

	t.Logf("%-20s %22s %22s %22s", "held-out source", "crawlers caught", "browsers flagged", "mainstream flagged")
	cell := func(s score) string {
		if s.n == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f%% (%d/%d)", 100*s.rate(), s.flagged, s.n)
	}
	for _, r := range rows {
		t.Logf("%-20s %22s %22s %22s", r.source, cell(r.crawlers), cell(r.browsers), cell(r.mains))
	}
	t.Logf("%-20s %22s %22s %22s", "all held out", cell(allC), cell(allB), cell(allM))
	var rs []string
	for r, n := range reasons {
		rs = append(rs, fmt.Sprintf("%s %d", r, n))
	}
	slices.Sort(rs)
	t.Logf("crawlers caught by reason: %s", strings.Join(rs, ", "))
	for _, s := range missed {
		t.Logf("missed crawler (dev half): %s", s)
	}
	for _, s := range misflagged {
		t.Logf("flagged browser (dev half): %s", s)
	}

	for _, r := range rows {
		if r.crawlers.n > 0 && r.crawlers.rate() < minRecall {
			t.Errorf("held-out %s: crawler recall %.2f%%, want at least %.0f%%", r.source, 100*r.crawlers.rate(), 100*minRecall)
		}
	}
	if allM.rate() > maxMainstreamFP {
		t.Errorf("%.2f%% of held-out current mainstream browsers flagged, want at most %.1f%%", 100*allM.rate(), 100*maxMainstreamFP)
	}
}
