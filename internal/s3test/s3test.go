// Package s3test runs a real S3-compatible server — SeaweedFS (`weed
// server` with its S3 gateway) — as a child process on loopback ports,
// for the archive's tests.
//
// The archive is tested against a real server rather than a fake because
// what matters (signatures, listing, missing-key errors, atomic
// replacement of an object) is the server's behaviour. The binary is
// built from the Go module proxy by
//
//	make seaweedfs   # .bin/weed
//
// and found by FindBinary. Building it costs about ten CPU-minutes on a
// fresh machine, half of make test's budget on two cores, so make test does
// not build it: without the binary, Launch serves the same S3 API from an
// in-process gofakes3 server (which does not check signatures) and says so
// in Kind. `make archive-s3` builds weed and runs the archive's tests
// against it with RequireEnv set, which makes a missing binary fail the
// test instead.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// EnvBinary names the environment variable that overrides the weed path.
const EnvBinary = "TALLY_WEED"

// RequireEnv, when set to any value, makes Launch fail without weed
// instead of falling back to the in-process server.
const RequireEnv = "TALLY_REQUIRE_WEED"

// ErrNoBinary reports that no weed binary could be found.
var ErrNoBinary = errors.New("weed (SeaweedFS) not found: run `make seaweedfs` (it builds .bin/weed), or set " + EnvBinary)

// StartTimeout bounds how long Launch waits for the S3 gateway to answer.
// It answers in about 3 s on a loaded 2-core machine.
const StartTimeout = 60 * time.Second

// Server is a running SeaweedFS with its S3 gateway. Its methods are safe
// for concurrent use.
type Server struct {
	dir       string
	s3Addr    string
	accessKey string
	secretKey string
	logPath   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	fake *http.Server // the in-process fallback; nil with weed
}

// Kind says which server runs: "seaweedfs" or "gofakes3 (in-process)".
func (s *Server) Kind() string {
	if s.fake != nil {
		return "gofakes3 (in-process)"
	}
	return "seaweedfs"
}

// Start launches a server for the test t (bucket "tally" created) and
// stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	s, err := Launch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("S3 server: %s at %s", s.Kind(), s.Endpoint())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- weed log tail ----\n%s", s.LogTail(4096))
		}
		s.Close()
	})
	if err := s.CreateBucket(ctx, "tally"); err != nil {
		t.Fatal(err)
	}
	return s
}

// Launch starts weed in dir (a new temporary directory when ""), with
// master, volume, filer and S3 gateway on free loopback ports and one
// identity with random keys, and waits until the gateway answers.
//
// Without weed (and without RequireEnv) it serves the S3 API in process
// with gofakes3 instead.
func Launch(ctx context.Context, dir string) (*Server, error) {
	bin, err := FindBinary()
	if errors.Is(err, ErrNoBinary) && os.Getenv(RequireEnv) == "" {
		return launchFake()
	}
	if err != nil {
		return nil, err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tally-weed-"); err != nil {
			return nil, err
		}
	}
	s := &Server{dir: dir, accessKey: "tally" + randomHex(6), secretKey: randomHex(20), logPath: filepath.Join(dir, "weed.log")}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	ident := fmt.Sprintf(`{"identities":[{"name":"tally","credentials":[{"accessKey":%q,"secretKey":%q}],`+
		`"actions":["Admin","Read","Write","List","Tagging"]}]}`, s.accessKey, s.secretKey)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), []byte(ident), 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(8)
	if err != nil {
		return nil, err
	}
	s.s3Addr = "127.0.0.1:" + strconv.Itoa(ports[6])
	args := []string{"server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + filepath.Join(dir, "data"),
		"-master.port=" + strconv.Itoa(ports[0]), "-master.port.grpc=" + strconv.Itoa(ports[1]),
		"-volume.port=" + strconv.Itoa(ports[2]), "-volume.port.grpc=" + strconv.Itoa(ports[3]),
		"-filer", "-filer.port=" + strconv.Itoa(ports[4]), "-filer.port.grpc=" + strconv.Itoa(ports[5]),
		"-s3", "-s3.port=" + strconv.Itoa(ports[6]), "-s3.port.grpc=" + strconv.Itoa(ports[7]),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
		"-s3.config=" + filepath.Join(dir, "s3.json"),
		// Small volumes, so a test's few megabytes need no gigabytes of
		// preallocated disk.
		"-master.volumeSizeLimitMB=64", "-volume.max=16"}
	log, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start weed: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		tail := s.LogTail(2048)
		s.Close()
		return nil, fmt.Errorf("weed did not start: %w\n%s", err, tail)
	}
	return s, nil
}

// waitReady polls the S3 gateway until it answers (an anonymous request
// gets 403: the gateway is up and checking signatures) and accepts a
// signed request.
func (s *Server) waitReady(ctx context.Context) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	for {
		select {
		case <-s.done:
			return errors.New("weed exited")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.s3Addr+"/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if _, err := c.ListBuckets(ctx); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Endpoint is the S3 gateway's host:port (plain HTTP).
func (s *Server) Endpoint() string { return s.s3Addr }

// AccessKey and SecretKey are the credentials the gateway accepts.
func (s *Server) AccessKey() string { return s.accessKey }

// SecretKey is the secret of AccessKey.
func (s *Server) SecretKey() string { return s.secretKey }

// Client returns an S3 client for the gateway.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.s3Addr, &minio.Options{Creds: credentials.NewStaticV4(s.accessKey, s.secretKey, ""),
		BucketLookup: minio.BucketLookupPath})
}

// CreateBucket creates a bucket; an existing one is fine.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	// The filer may still be settling right after start: retry briefly.
	for {
		err = c.MakeBucket(ctx, name, minio.MakeBucketOptions{})
		if err == nil || minio.ToErrorResponse(err).Code == "BucketAlreadyOwnedByYou" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create bucket %q: %w", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// LogTail returns the last n bytes of weed's log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Close kills weed and removes its directory. SIGKILL, not SIGTERM:
// weed takes seconds to stop gracefully and its data dies with the test.
// It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fake != nil {
		_ = s.fake.Close()
	}
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
		s.cmd = nil
	}
	os.RemoveAll(s.dir)
}

// FindBinary locates weed: $TALLY_WEED, else .bin/weed in the module
// root (found by walking up from the working directory to go.mod), else
// weed on $PATH.
func FindBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%q: %w (%w)", EnvBinary, p, err, ErrNoBinary)
		}
		return p, nil
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, ".bin", "weed")
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	if p, err := exec.LookPath("weed"); err == nil {
		return p, nil
	}
	return "", ErrNoBinary
}

// launchFake serves an in-memory S3 API from this process on a loopback
// port.
func launchFake() (*Server, error) {
	dir, err := os.MkdirTemp("", "tally-fakes3-")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	faker := gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog()))
	s := &Server{dir: dir, s3Addr: l.Addr().String(), accessKey: "tally" + randomHex(6), secretKey: randomHex(20),
		logPath: filepath.Join(dir, "none.log"), fake: &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.fake.Serve(l) }()
	return s, nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
