package reload

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type Spec struct {
	Format string         `yaml:"format"`
	Rules  []string       `yaml:"rules"`
	Nets   []netip.Prefix `yaml:"nets"`
}

type source struct {
	Paths []string `yaml:"paths"`
	Spec  `yaml:",inline"`
}

type testConfig struct {
	Name     string            `yaml:"name"`
	LogLevel string            `yaml:"log_level"`
	Listen   string            `yaml:"listen"`
	Tokens   []string          `yaml:"tokens"`
	Limit    *int              `yaml:"limit"`
	Labels   map[string]string `yaml:"labels"`
	Sources  []source          `yaml:"sources"`
	Timeout  time.Duration     `yaml:"timeout"`
	Clock    func() time.Time  `yaml:"-"`
	Ignored  string            `yaml:"-"`
	hidden   int
}

func TestDiff(t *testing.T) {
	one, two := 1, 2
	base := testConfig{Name: "a", Listen: ":1", Tokens: []string{"x"}, Limit: &one, Labels: map[string]string{"k": "v"},
		Sources: []source{{Paths: []string{"/a"}, Spec: Spec{Format: "combined", Rules: []string{"r1"}}}}, Timeout: time.Second}
	cases := []struct {
		name string
		edit func(c *testConfig)
		want []string
	}{
		{"same", func(*testConfig) {}, nil},
		{"scalar", func(c *testConfig) { c.Listen = ":2" }, []string{"listen"}},
		{"list", func(c *testConfig) { c.Tokens = []string{"x", "y"} }, []string{"tokens"}},
		{"pointer value", func(c *testConfig) { c.Limit = &two }, []string{"limit"}},
		{"pointer nil", func(c *testConfig) { c.Limit = nil }, []string{"limit"}},
		{"map", func(c *testConfig) { c.Labels = map[string]string{"k": "w"} }, []string{"labels"}},
		{"duration", func(c *testConfig) { c.Timeout = time.Minute }, []string{"timeout"}},
		{"inline field in a list element", func(c *testConfig) {
			c.Sources = []source{{Paths: []string{"/a"}, Spec: Spec{Format: "combined", Rules: []string{"r2"}}}}
		}, []string{"sources[0].rules"}},
		{"struct without keys", func(c *testConfig) {
			c.Sources = []source{{Paths: []string{"/a"}, Spec: Spec{Format: "combined", Rules: []string{"r1"}, Nets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}}
		}, []string{"sources[0].nets"}},
		{"list length", func(c *testConfig) { c.Sources = append(slices.Clone(c.Sources), source{}) }, []string{"sources"}},
		{"not configuration", func(c *testConfig) { c.Clock = time.Now; c.Ignored = "z"; c.hidden = 3 }, nil},
		{"several", func(c *testConfig) { c.Name = "b"; c.LogLevel = "debug" }, []string{"name", "log_level"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := base
			tc.edit(&b)
			if got := Diff(base, b); !slices.Equal(got, tc.want) {
				t.Fatalf("Diff = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	r := Keys("auth", "sources.logs[*].rules", "bots.deny")
	for key, want := range map[string]bool{
		"auth": true, "auth.tokens": true, "auth.jwt.issuer": true, "authx": false,
		"sources.logs[3].rules": true, "sources.logs[3].rules[0].match": true, "sources.logs[3].paths": false, "sources.logs": false,
		"bots.deny.ua": true, "bots.deny_more": false, "bots": false,
	} {
		if got := r(key); got != want {
			t.Errorf("Keys(...)(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestLevel(t *testing.T) {
	l := NewLevel(slog.LevelWarn, false)
	l.Set("debug")
	if l.Level() != slog.LevelDebug {
		t.Fatalf("file's debug: level %v", l.Level())
	}
	l.Set("")
	if l.Level() != slog.LevelWarn {
		t.Fatalf("no log_level in the file: level %v, want the start level", l.Level())
	}
	l.Set("bogus")
	if l.Level() != slog.LevelWarn {
		t.Fatalf("an invalid name changed the level to %v", l.Level())
	}
	pinned := NewLevel(slog.LevelError, true)
	pinned.Set("debug")
	if pinned.Level() != slog.LevelError {
		t.Fatalf("the flag pins the level, but the file moved it to %v", pinned.Level())
	}
	var none *Level
	none.Set("debug")
	if none.Level() != slog.LevelInfo {
		t.Fatal("a nil Level reads as info")
	}
	for _, ok := range []string{"", "debug", "INFO", "warn", "error"} {
		if _, err := ParseLevel(ok); err != nil {
			t.Errorf("ParseLevel(%q): %v", ok, err)
		}
	}
	if _, err := ParseLevel("verbose"); err == nil {
		t.Error("ParseLevel(verbose) accepted")
	}
}

// TestReloader checks the outcome of reloads: applied and counted, a
// failure keeps everything and says why, keys that need a restart are
// named, and the level follows the file only once the rest applied.
func TestReloader(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "tally_test")
	var mu sync.Mutex
	file := testConfig{Name: "a", Listen: ":1", Tokens: []string{"t1"}}
	var loadErr error
	running := file
	var log strings.Builder
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &log}, nil))
	level := NewLevel(slog.LevelInfo, false)
	requests, trigger := Requests()
	var notes []bool
	r := &Reloader[testConfig]{
		Source: Source[testConfig]{Requests: requests, Level: level,
			Load: func() (testConfig, error) {
				mu.Lock()
				defer mu.Unlock()
				return file, loadErr
			},
			Notify: func(on bool) { notes = append(notes, on) }},
		Apply: func(c testConfig) error {
			if slices.Contains(c.Tokens, "bad") {
				return errors.New("tokens[1]: too short")
			}
			running.Tokens = c.Tokens
			return nil
		},
		LogLevel:   func(c testConfig) string { return c.LogLevel },
		Reloadable: Keys("tokens", "log_level"),
		Metrics:    m, Logger: logger,
	}
	started := file
	gauge := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				if g := mf.GetMetric()[0].GetGauge(); g != nil {
					return g.GetValue()
				}
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}
	if gauge("tally_test_config_last_reload_successful") != 1 || gauge("tally_test_config_reload_failures_total") != 0 {
		t.Fatal("the start is a successful load")
	}

	// A reloadable change and a level.
	file.Tokens, file.LogLevel = []string{"t1", "t2"}, "debug"
	if err := r.Reload(started); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(running.Tokens, []string{"t1", "t2"}) || level.Level() != slog.LevelDebug {
		t.Fatalf("tokens %v, level %v after a good reload", running.Tokens, level.Level())
	}
	if gauge("tally_test_config_restart_pending") != 0 {
		t.Fatal("only reloadable keys changed, yet a restart is pending")
	}

	// A failing part: nothing changes, not even the level.
	file.Tokens, file.LogLevel = []string{"t1", "bad"}, "error"
	if err := r.Reload(started); err == nil {
		t.Fatal("a reload Apply refused succeeded")
	}
	if !slices.Equal(running.Tokens, []string{"t1", "t2"}) || level.Level() != slog.LevelDebug {
		t.Fatalf("a failed reload changed tokens %v / level %v", running.Tokens, level.Level())
	}
	if gauge("tally_test_config_last_reload_successful") != 0 || gauge("tally_test_config_reload_failures_total") != 1 {
		t.Fatal("a failed reload is not counted")
	}

	// A file that does not validate.
	mu.Lock()
	loadErr = errors.New("config x.yaml: name: required")
	mu.Unlock()
	if err := r.Reload(started); err == nil {
		t.Fatal("an invalid file reloaded")
	}
	mu.Lock()
	loadErr = nil
	mu.Unlock()
	// An invalid level is refused before anything applies.
	file.Tokens, file.LogLevel = []string{"t3"}, "loud"
	if err := r.Reload(started); err == nil || !slices.Equal(running.Tokens, []string{"t1", "t2"}) {
		t.Fatalf("invalid log_level: err %v, tokens %v", err, running.Tokens)
	}

	// A key that needs a restart: applied the rest, named the key.
	file.Tokens, file.LogLevel, file.Listen = []string{"t3"}, "", ":9"
	if err := r.Reload(started); err != nil {
		t.Fatal(err)
	}
	if gauge("tally_test_config_restart_pending") != 1 || gauge("tally_test_config_last_reload_successful") != 1 || level.Level() != slog.LevelInfo {
		t.Fatal("restart-pending gauge, success gauge or level wrong after a reload with a restart-only change")
	}
	if v := testutil.ToFloat64(m.reloads); v != 5 {
		t.Fatalf("reloads_total = %v, want 5", v)
	}
	logMu.Lock()
	text := log.String()
	logMu.Unlock()
	for _, want := range []string{"tokens[1]: too short", "name: required", `log_level \"loud\"`, "keys=listen", "configuration reloaded"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}
	if len(notes) != 10 || !notes[0] || notes[1] {
		t.Fatalf("notifications %v: want begin/end per reload", notes)
	}

	// Run: requests made while one is pending coalesce.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	for range 5 {
		trigger()
	}
	go func() { r.Run(ctx, started); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(m.reloads) < 6 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if v := testutil.ToFloat64(m.reloads); v != 6 {
		t.Fatalf("five requests while none ran gave %v reloads, want one", v-5)
	}
}

func TestSteps(t *testing.T) {
	var applied []string
	var s Steps
	s.Add("a", func() { applied = append(applied, "a") }, nil)
	s.Add("b", nil, nil)
	s.Add("c", nil, errors.New("broken"))
	if err := s.Commit(); err == nil || !strings.Contains(err.Error(), "c: broken") || len(applied) != 0 {
		t.Fatalf("Commit with a failed step: err %v, applied %v", err, applied)
	}
	var ok Steps
	ok.Add("a", func() { applied = append(applied, "a") }, nil)
	ok.Add("b", func() { applied = append(applied, "b") }, nil)
	if err := ok.Commit(); err != nil || !slices.Equal(applied, []string{"a", "b"}) {
		t.Fatalf("Commit: err %v, applied %v", err, applied)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
