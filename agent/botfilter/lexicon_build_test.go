package botfilter

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"os"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"testing"
)

// The lexicon of lexicon_gen.go is learnt from testdata/eval by
// buildLexicon; TestLexiconGenerated checks that the file is what the data
// gives, and rewrites it with
//
//	go test -run TestLexiconGenerated -update-lexicon ./agent/botfilter/
var updateLexicon = flag.Bool("update-lexicon", false, "rewrite lexicon_gen.go from testdata/eval")

// lookaround matches a look-ahead or look-behind group without nesting.
var lookaround = regexp.MustCompile(`\(\?<?[!=][^()]*\)`)

// minName is the shortest crawler name kept from a pattern list: shorter
// literals are fragments ("bot", "http") that the rules handle as words.
const minName = 4

// minBrowserUAs is how many distinct user agents of one source must carry
// a product name for it to count as a browser's: one stray string does
// not make a name a browser's.
const minBrowserUAs = 2

// learnt is a lexicon as word lists, before indexing.
type learnt struct {
	names, prefixes, browser, vendor []string
}

// buildLexicon learns the lexicon from crawler patterns, browser patterns
// and browser user agents, leaving out the source named exclude ("" for
// none).
func buildLexicon(patterns, browserPatterns, browsers []labelled, exclude string) learnt {
	browser := map[string]bool{}
	perSource := map[string]map[string]int{}
	for _, b := range browsers {
		if b.source == exclude {
			continue
		}
		counts := perSource[b.source]
		if counts == nil {
			counts = map[string]int{}
			perSource[b.source] = counts
		}
		seen := map[string]bool{}
		for _, name := range productNames(strings.ToLower(b.ua)) {
			if !seen[name] {
				seen[name] = true
				counts[name]++
			}
		}
	}
	for _, counts := range perSource {
		for name, n := range counts {
			if n >= minBrowserUAs {
				browser[name] = true
			}
		}
	}

	// Browser and app pattern lists name products: each word of their
	// literals may follow a browser's engine. They are kept apart from the
	// products seen in real browsers' user agents: the lists also name
	// apps and fetchers, which must not make a product-only user agent a
	// browser nor take a name off the crawler list.
	vendor := map[string]bool{}
	for _, pat := range browserPatterns {
		if pat.source == exclude {
			continue
		}
		// JavaScript lists use look-arounds, which RE2 lacks; without
		// them the pattern names the same products.
		re, err := syntax.Parse(lookaround.ReplaceAllString(pat.ua, ""), syntax.Perl)
		if err != nil {
			continue
		}
		for _, lit := range literals(re.Simplify()) {
			for _, w := range strings.FieldsFunc(strings.ToLower(lit), func(r rune) bool { return r == ' ' || r == '/' || r == ';' }) {
				w = strings.Trim(w, "()[],;:+")
				if len(w) >= 2 && !isVersion(w) {
					vendor[w] = true
				}
			}
		}
	}

	names, prefixes := map[string]bool{}, map[string]bool{}
	for _, pat := range patterns {
		if pat.source == exclude {
			continue
		}
		re, err := syntax.Parse(pat.ua, syntax.Perl)
		if err != nil {
			continue // written for another engine (PCRE, JavaScript)
		}
		re = re.Simplify()
		anchored := re.Op == syntax.OpConcat && len(re.Sub) > 0 && re.Sub[0].Op == syntax.OpBeginText
		for _, lit := range literals(re) {
			name := strings.Trim(strings.ToLower(strings.TrimSpace(lit)), " /;:,()[]-_.+")
			// A name that real browsers send as a product is theirs.
			if len(name) < minName || !strings.ContainsFunc(name, func(r rune) bool { return 'a' <= r && r <= 'z' }) || browser[name] {
				continue
			}
			if anchored {
				prefixes[name] = true
			} else {
				names[name] = true
			}
		}
	}
	sorted := func(m map[string]bool) []string {
		out := make([]string, 0, len(m))
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	return learnt{names: sorted(names), prefixes: sorted(prefixes), browser: sorted(browser), vendor: sorted(vendor)}
}

func (l learnt) lexicon() *lexicon { return newLexicon(l.names, l.prefixes, l.browser, l.vendor) }

// productNames returns the names of the products of a user agent: those
// between comments, and those inside comments and in-app blocks
// ("chromeframe/15.0", "FBAV/468.0").
func productNames(ua string) []string {
	var out []string
	p := parseUA(ua)
	for _, it := range p.items {
		if it.kind == itemProduct {
			if it.name != "" && !isVersion(it.name) {
				out = append(out, it.name)
			}
			continue
		}
		for _, f := range fields(it.text) {
			for rest := f; ; {
				slash := strings.IndexByte(rest, '/')
				if slash < 0 {
					break
				}
				name := rest[:slash]
				if sp := strings.LastIndexAny(name, " ,"); sp >= 0 {
					name = name[sp+1:]
				}
				if name != "" && !isVersion(name) {
					out = append(out, name)
				}
				rest = rest[slash+1:]
			}
		}
	}
	return out
}

// literals returns the names a regular expression is built of: each
// alternative of an alternation, and each run of literal parts of a
// concatenation that is a whole name. A run that a character class
// continues or precedes ("[a-z]*bot", "Yandex\w+") is a fragment of a
// longer name, not a name; one followed by an optional part or a separator
// ("Googlebot(?:-Image)?", "Ddg/([\w.]+)") is whole. RE2 factors common
// prefixes out of alternations ("s(?:ilk|kyfire)"); finite parts are
// expanded back into their strings.
func literals(re *syntax.Regexp) []string {
	if set, ok := expand(re); ok {
		return set
	}
	switch re.Op {
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			out = append(out, literals(sub)...)
		}
		return out
	case syntax.OpCapture:
		return literals(re.Sub[0])
	case syntax.OpConcat:
		var out []string
		run := []string{""} // the strings of the literal run so far
		empty := func() bool { return len(run) == 1 && run[0] == "" }
		fragment, afterClass := false, false
		for _, sub := range re.Sub {
			switch sub.Op {
			case syntax.OpBeginText, syntax.OpEndText, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpWordBoundary:
				continue // zero-width: the run goes on
			}
			if set, ok := expand(sub); ok && len(run)*len(set) <= maxExpand {
				if empty() {
					fragment = afterClass && len(set) > 0 && set[0] != "" && isAlnum(set[0][0])
				}
				var next []string
				for _, a := range run {
					for _, b := range set {
						next = append(next, a+b)
					}
				}
				run = next
				continue
			}
			if !empty() && !fragment {
				for _, r := range run {
					if r != "" && (!isAlnum(r[len(r)-1]) || canBeEmpty(sub)) {
						out = append(out, r)
					}
				}
			}
			run = []string{""}
			// Alternatives are whole names unless a class runs into them
			// ("[a-z]*(bot|crawl)").
			if (sub.Op == syntax.OpCapture || sub.Op == syntax.OpAlternate) && !afterClass {
				out = append(out, literals(sub)...)
			}
			afterClass = true
		}
		if !empty() && !fragment {
			for _, r := range run {
				if r != "" {
					out = append(out, r)
				}
			}
		}
		return out
	}
	return nil
}

// maxExpand bounds the strings one expanded part may stand for.
const maxExpand = 256

// expand returns the strings re matches when they are a small finite set
// of literals ("qq(?:browserlite)?" is "qq" and "qqbrowserlite").
func expand(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return []string{strings.ToLower(string(re.Rune))}, true
		}
		return []string{string(re.Rune)}, true
	case syntax.OpEmptyMatch:
		return []string{""}, true
	case syntax.OpCapture:
		return expand(re.Sub[0])
	case syntax.OpQuest:
		set, ok := expand(re.Sub[0])
		return append(set, ""), ok
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			set, ok := expand(sub)
			if !ok || len(out)+len(set) > maxExpand {
				return nil, false
			}
			out = append(out, set...)
		}
		return out, true
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range re.Sub {
			set, ok := expand(sub)
			if !ok || len(out)*len(set) > maxExpand {
				return nil, false
			}
			var next []string
			for _, a := range out {
				for _, b := range set {
					next = append(next, a+b)
				}
			}
			out = next
		}
		return out, true
	}
	return nil, false
}

// canBeEmpty reports whether re matches the empty string.
func canBeEmpty(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpStar, syntax.OpQuest:
		return true
	case syntax.OpRepeat:
		return re.Min == 0
	case syntax.OpCapture:
		return canBeEmpty(re.Sub[0])
	case syntax.OpAlternate:
		for _, sub := range re.Sub {
			if canBeEmpty(sub) {
				return true
			}
		}
	case syntax.OpConcat:
		for _, sub := range re.Sub {
			if !canBeEmpty(sub) {
				return false
			}
		}
		return true
	}
	return false
}

// TestLexiconGenerated checks that lexicon_gen.go is the lexicon the
// evaluation data gives.
func TestLexiconGenerated(t *testing.T) {
	l := buildLexicon(readEval(t, "patterns.txt"), readEval(t, "browser-patterns.txt"), readEval(t, "browsers.txt"), "")
	var b bytes.Buffer
	b.WriteString("// Code generated by TestLexiconGenerated from testdata/eval; DO NOT EDIT.\n")
	b.WriteString("//\n//\tgo test -run TestLexiconGenerated -update-lexicon ./agent/botfilter/\n\n")
	b.WriteString("package botfilter\n\n")
	for _, list := range []struct {
		doc, name string
		words     []string
	}{
		{"genCrawlerNames are the names of crawler pattern lists, matched as whole words.", "genCrawlerNames", l.names},
		{"genCrawlerPrefixes are names pattern lists match at the start of a user agent only.", "genCrawlerPrefixes", l.prefixes},
		{"genBrowserTokens are the product names real browsers send.", "genBrowserTokens", l.browser},
		{"genVendorTokens are the product names of browser and app pattern lists.", "genVendorTokens", l.vendor},
	} {
		fmt.Fprintf(&b, "// %s\nvar %s = []string{\n", list.doc, list.name)
		for _, w := range list.words {
			fmt.Fprintf(&b, "\t%q,\n", w)
		}
		b.WriteString("}\n\n")
	}
	want, err := format.Source(b.Bytes())
	if err != nil {
		t.Fatalf("format: %v", err)
	}
	if *updateLexicon {
		if err := os.WriteFile("lexicon_gen.go", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile("lexicon_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("lexicon_gen.go is not what testdata/eval gives: go test -run TestLexiconGenerated -update-lexicon ./agent/botfilter/")
	}
}
