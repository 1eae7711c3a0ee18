package config

import (
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/privacy"
)

func TestGood(t *testing.T) {
	c, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "agent-eu-1" || c.Privacy.SaltPeriod != privacy.Week || c.Rollup.FlushInterval != 5*time.Second ||
		c.Spool.MaxBytes != 64<<20 || c.Privacy.Secret != "a-long-enough-test-secret" || c.Rollup.Lateness != 2*time.Minute {
		t.Fatalf("decoded %+v", c)
	}
}

// TestSaltPeriods: never is accepted from the file; the default is day.
func TestSaltPeriods(t *testing.T) {
	c, err := Load("testdata/salt_never.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Privacy.SaltPeriod != privacy.Never {
		t.Fatalf("salt_period never decoded as %q", c.Privacy.SaltPeriod)
	}
	if d := DefaultConfig().Privacy.SaltPeriod; d != privacy.Day {
		t.Fatalf("default salt period %q, want day", d)
	}
}

func TestBad(t *testing.T) {
	for file, wants := range map[string][]string{
		"testdata/unknown_key.bad.yaml": {"field adrs not found"},
		"testdata/invalid.bad.yaml":     {"name \"bad name\"", "aggregator.addrs", "privacy.secret", "salt period \"year\": want day, week, month or never", "rollup.flush_interval", "rollup.max_flush_delay"},
		"testdata/missing.yaml":         {"no such file"},
		"testdata/server_listen.bad.yaml": {"http.server_tokens[0]: at least 16", "http.max_bytes_in_flight", "dead_letters.max_batches",
			"sources.forget_positions"},
	} {
		_, err := Load(file)
		if err == nil {
			t.Fatalf("%s: no error", file)
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: error %q lacks %q", file, err, w)
			}
		}
	}
}
