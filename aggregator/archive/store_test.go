package archive

import (
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/tally-edge/tally/internal/s3test"
)

// storeContract is one test body for every Store: the archive relies on
// exactly these behaviours.
func storeContract(t *testing.T, s Store) {
	put := func(key, body string) {
		t.Helper()
		if err := s.Put(ctx, key, strings.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	get := func(key string) string {
		t.Helper()
		rc, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	put("day=2026-03-01/part-00000.parquet", "one")
	put("day=2026-03-01/_manifest.json", "{}")
	put("day=2026-03-02/part-00000.parquet", "two")
	put("day=2026-03-01/part-00000.parquet", "replaced")
	if got := get("day=2026-03-01/part-00000.parquet"); got != "replaced" {
		t.Fatalf("after replacing: %q", got)
	}
	keys, err := s.List(ctx, "day=2026-03-01/")
	if err != nil || !slices.Equal(keys, []string{"day=2026-03-01/_manifest.json", "day=2026-03-01/part-00000.parquet"}) {
		t.Fatalf("list: %q %v", keys, err)
	}
	all, err := s.List(ctx, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("list all: %q %v", all, err)
	}
	if _, err := s.Get(ctx, "day=2026-03-09/_manifest.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
	if err := s.Delete(ctx, "day=2026-03-02/part-00000.parquet"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "day=2026-03-02/part-00000.parquet"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	if keys, _ := s.List(ctx, "day=2026-03-02/"); len(keys) != 0 {
		t.Fatalf("after delete: %q", keys)
	}
	// A short body is an error, not a short object.
	if err := s.Put(ctx, "day=2026-03-03/x", strings.NewReader("ab"), 3); err == nil {
		t.Fatal("a put of fewer bytes than announced succeeded")
	}
	for _, bad := range []string{"../escape", "/abs", "a/../../b", "a\\b", ""} {
		if err := s.Put(ctx, bad, strings.NewReader("x"), 1); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
}

func TestStoreContract(t *testing.T) {
	t.Run("dir", func(t *testing.T) {
		s, err := OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		storeContract(t, s)
	})
	t.Run("s3", func(t *testing.T) {
		if testing.Short() {
			t.Skip("needs SeaweedFS")
		}
		s, _ := openSeaweed(t, "contract")
		storeContract(t, s)
	})
}

// openSeaweed starts SeaweedFS and opens a Store on bucket "tally" under
// prefix.
func openSeaweed(t *testing.T, prefix string) (Store, *s3test.Server) {
	t.Helper()
	srv := s3test.Start(t)
	cfg := DefaultConfig()
	cfg.Target = "s3://tally/" + prefix
	cfg.S3 = S3{Endpoint: srv.Endpoint(), AccessKey: srv.AccessKey(), SecretKey: srv.SecretKey(), Insecure: true, BucketLookup: "path"}
	s, err := OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Target = "s3://missing-bucket/x"
	if _, err := OpenStore(ctx, cfg); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a missing bucket: %v", err)
	}
	return s, srv
}
