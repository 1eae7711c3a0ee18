package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Store is object storage as the archive uses it: whole objects put,
// read, listed and deleted by key ("day=2024-03-01/part-00000.parquet").
// Keys are relative to the store's prefix and use "/" as separator.
//
// Implementations are safe for concurrent use. Put replaces an object
// atomically: a reader sees the old object or the new one, never part of
// one. Every method blocks until done or ctx ends.
type Store interface {
	// Put stores size bytes from r under key.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens key for reading; the caller closes it. A missing key gives
	// an error wrapping fs.ErrNotExist.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns the keys under prefix (which ends in "/"), sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store for logs ("s3://bucket/prefix", a directory).
	String() string
}

// OpenStore returns the store cfg.Target names: "s3://bucket/prefix"
// (through cfg.S3) or a local directory ("file:///path" or a path).
func OpenStore(ctx context.Context, cfg Config) (Store, error) {
	u, err := url.Parse(cfg.Target)
	if err == nil && u.Scheme == "s3" {
		return openS3(ctx, u.Host, strings.Trim(u.Path, "/"), cfg.S3)
	}
	dir := cfg.Target
	if err == nil && u.Scheme == "file" {
		dir = u.Path
	}
	return OpenDir(dir)
}

// dirStore keeps objects as files under a directory: for a single
// machine, a mounted volume, or local copies of an S3 archive.
type dirStore struct{ root string }

// OpenDir returns a Store over a local directory, creating it if needed.
func OpenDir(dir string) (Store, error) {
	if dir == "" {
		return nil, errors.New("archive: no target directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("archive directory: %w", err)
	}
	return &dirStore{root: abs}, nil
}

func (d *dirStore) String() string { return d.root }

func (d *dirStore) path(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// checkKey refuses keys that could leave the store's root.
func checkKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || path.Clean(key) != strings.TrimSuffix(key, "/") ||
		slices.Contains(strings.Split(key, "/"), "..") || strings.ContainsAny(key, "\\\x00") {
		return fmt.Errorf("archive: bad object key %q", key)
	}
	return nil
}

func (d *dirStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// Write to a temporary file, fsync, rename: the object appears whole
	// or not at all, and survives a crash once Put returns.
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err == nil && n != size {
		err = fmt.Errorf("archive: put %s: %d bytes, want %d", key, n, size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (d *dirStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	return os.Open(p) // a missing file wraps fs.ErrNotExist
}

func (d *dirStore) List(ctx context.Context, prefix string) ([]string, error) {
	base := d.root
	if prefix != "" {
		p, err := d.path(prefix)
		if err != nil {
			return nil, err
		}
		base = p
	}
	var keys []string
	err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		keys = append(keys, filepath.ToSlash(rel))
		return ctx.Err()
	})
	slices.Sort(keys)
	return keys, err
}

func (d *dirStore) Delete(ctx context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// s3Store keeps objects in an S3 bucket under a prefix, through
// minio-go (any S3-compatible service: AWS, SeaweedFS, MinIO, Ceph…).
type s3Store struct {
	client *minio.Client
	bucket string
	prefix string // "" or ends in "/"
}

func openS3(ctx context.Context, bucket, prefix string, cfg S3) (Store, error) {
	if bucket == "" {
		return nil, errors.New("archive: s3 target without a bucket (want s3://bucket/prefix)")
	}
	var creds *credentials.Credentials
	secret, err := cfg.secret()
	if err != nil {
		return nil, err
	}
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, secret, "")
	} else {
		// The usual places: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
		// MINIO_* variables, then an instance or pod role.
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport}},
		})
	}
	lookup := minio.BucketLookupAuto
	switch cfg.BucketLookup {
	case "path":
		lookup = minio.BucketLookupPath
	case "dns":
		lookup = minio.BucketLookupDNS
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("archive: s3 client for %s: %w", cfg.Endpoint, err)
	}
	ok, err := client.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("archive: s3 bucket %q at %s: %w", bucket, cfg.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("archive: s3 bucket %q does not exist at %s", bucket, cfg.Endpoint)
	}
	if prefix != "" {
		prefix += "/"
	}
	return &s3Store{client: client, bucket: bucket, prefix: prefix}, nil
}

func (s *s3Store) String() string { return "s3://" + s.bucket + "/" + s.prefix }

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := checkKey(key); err != nil {
		return err
	}
	ct := "application/octet-stream"
	if strings.HasSuffix(key, ".json") {
		ct = "application/json"
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+key, r, size, minio.PutObjectOptions{ContentType: ct})
	if err != nil {
		return fmt.Errorf("archive: put %s%s: %w", s, key, err)
	}
	return nil
}

func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	o, err := s.client.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err == nil {
		// GetObject is lazy: Stat makes the request and reports a
		// missing key.
		_, err = o.Stat()
	}
	if err != nil {
		if o != nil {
			o.Close()
		}
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil, fmt.Errorf("archive: get %s%s: %w", s, key, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("archive: get %s%s: %w", s, key, err)
	}
	return o, nil
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("archive: list %s%s: %w", s, prefix, o.Err)
		}
		keys = append(keys, strings.TrimPrefix(o.Key, s.prefix))
	}
	slices.Sort(keys)
	return keys, nil
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("archive: delete %s%s: %w", s, key, err)
	}
	return nil
}
