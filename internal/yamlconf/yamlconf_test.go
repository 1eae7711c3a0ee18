package yamlconf

import (
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name  string        `yaml:"name"`
	Every time.Duration `yaml:"every"`
	Max   ByteSize      `yaml:"max"`
}

func TestDecode(t *testing.T) {
	t.Setenv("TALLY_TEST_NAME", "eu-1")
	for _, tc := range []struct {
		in      string
		want    sample
		wantErr string
	}{
		{"name: ${TALLY_TEST_NAME}\nevery: 10s\nmax: 64MiB\n", sample{"eu-1", 10 * time.Second, 64 << 20}, ""},
		{"name: ${TALLY_UNSET_VAR:-fallback}\n", sample{Name: "fallback", Every: time.Second}, ""},
		{"name: ${TALLY_UNSET_VAR}\n", sample{}, "TALLY_UNSET_VAR"},
		{"nmae: typo\n", sample{}, "field nmae not found"},
		{"max: lots\n", sample{}, "size"},
		{"", sample{Every: time.Second}, ""},
	} {
		got := sample{Every: time.Second}
		err := Decode([]byte(tc.in), &got)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%q: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Fatalf("%q: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"1024": 1024, "1KiB": 1024, "1.5MiB": 1572864, "2GB": 2e9} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Fatalf("%s: %d %v", in, got, err)
		}
	}
	if s := ByteSize(64 << 20).String(); s != "64MiB" {
		t.Fatal(s)
	}
}
