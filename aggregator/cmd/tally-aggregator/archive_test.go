package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestArchiveUsage(t *testing.T) {
	cfg := writeConfig(t, "")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: tally-aggregator archive"},
		{[]string{"compact"}, 2, "usage: tally-aggregator archive"},
		{[]string{"export", "-config", cfg, "-from", "2026-03-01"}, 1, "no archive: set archive.target"},
		{[]string{"export", "-config", cfg, "-target", t.TempDir()}, 2, "-from is required"},
		{[]string{"export", "-config", cfg, "-target", t.TempDir(), "-from", "2026-3-1"}, 2, "want YYYY-MM-DD"},
		{[]string{"export", "-config", cfg, "-target", t.TempDir(), "-from", "2026-03-02", "-to", "2026-03-01"}, 2, "is before"},
		{[]string{"verify", "-config", cfg, "-target", t.TempDir(), "-from", "2000-01-01", "-to", "2099-01-01"}, 2, "more than 3660 days"},
	} {
		var out, errb bytes.Buffer
		if code := archiveCmd(c.args, &out, &errb); code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", c.args, code, errb.String(), c.code, c.want)
		}
	}
}

func TestArchiveListOfAnEmptyArchive(t *testing.T) {
	var out, errb bytes.Buffer
	if code := archiveCmd([]string{"list", "-config", writeConfig(t, ""), "-target", t.TempDir()}, &out, &errb); code != 0 || out.Len() != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
