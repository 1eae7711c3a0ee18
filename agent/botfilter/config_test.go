package botfilter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/yamlconf"
)

// agentFile is the part of the agent configuration this package owns.
type agentFile struct {
	Bots Config `yaml:"bots"`
}

// TestConfigFiles decodes testdata/config/*.yaml as the agent does
// (strictly, over the defaults) and opens a Filter from each good file;
// each bad file lists the errors it must produce in "# error:" lines.
func TestConfigFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "config", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no config fixtures: %v", err)
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		c := agentFile{Bots: DefaultConfig()}
		err = yamlconf.Decode(data, &c)
		if err == nil {
			_, err = Open(c.Bots)
		}
		var want []string
		for _, line := range strings.Split(string(data), "\n") {
			if msg, ok := strings.CutPrefix(line, "# error: "); ok {
				want = append(want, msg)
			}
		}
		switch {
		case strings.HasSuffix(path, ".good.yaml") && err != nil:
			t.Errorf("%s: %v", path, err)
		case strings.HasSuffix(path, ".bad.yaml") && err == nil:
			t.Errorf("%s: accepted", path)
		case strings.HasSuffix(path, ".bad.yaml"):
			if len(want) == 0 {
				t.Errorf("%s: no # error: lines", path)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not say %q", path, err, w)
				}
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig invalid: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config invalid: %v", err)
	}
	got := Config{}.withDefaults()
	want := DefaultConfig()
	if got.CacheSize != want.CacheSize || got.RateIP != want.RateIP || got.RateVisitor != want.RateVisitor || got.RateTime != RateTimeEvent {
		t.Fatalf("zero Config with defaults = %+v, want %+v", got, want)
	}
	if want.RateIP.Events != 0 || want.RateVisitor.Events != 0 {
		t.Fatal("rate limits must be off by default")
	}
	if want.RateIP.Window != time.Minute || want.RateIP.IPv6Prefix != 64 {
		t.Fatalf("rate_ip defaults %+v", want.RateIP)
	}
}
