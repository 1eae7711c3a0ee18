// Package influxtest runs a real InfluxDB 1.8 server (influxd) as a child
// process on loopback ports, for tests and for the demo.
//
// Tally's storage code is tested against the real server rather than a
// fake, because the properties that matter (last write wins per field,
// Flux behaviour, error codes, string-field limits) are the server's. The
// binary is InfluxDB 1.8.10 built with
//
//	make influxdb   # GOBIN=$(pwd)/.bin go install github.com/influxdata/influxdb/cmd/influxd@v1.8.10
//
// and found by FindBinary. Tests call Start, which fails the test when the
// binary is missing; programs (the demo) call Launch.
//
// The server serves the v2 compatibility API: writes on /api/v2/write, Flux
// on /api/v2/query (unless Options.DisableFlux), with token "user:password"
// (authentication is disabled, so any token works), org "" and bucket
// "<database>/<retention policy>"; and the 1.x API: InfluxQL on /query.
package influxtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Defaults used when Options leave a field zero.
const (
	// DefaultDatabase is the database created at launch.
	DefaultDatabase = "db"
	// DefaultRetentionPolicy is the default retention policy of DefaultDatabase.
	DefaultRetentionPolicy = "rp"
	// DefaultStartTimeout bounds how long Launch and Restart wait for /ping.
	// influxd 1.8 is ready in about a second on an idle machine; the margin
	// is for shared CI machines and the race detector.
	DefaultStartTimeout = 60 * time.Second
	// DefaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	DefaultStopTimeout = 15 * time.Second
	// Token is the v2 API token the server accepts ("username:password" is
	// the 1.8 form; authentication is disabled, so its value is not checked).
	Token = "user:password"
	// EnvBinary names the environment variable that overrides the influxd path.
	EnvBinary = "TALLY_INFLUXD"
)

// ErrNoBinary reports that no influxd binary could be found.
var ErrNoBinary = errors.New("influxd not found: run `make influxdb` (it installs InfluxDB 1.8.10 into .bin/), or set " + EnvBinary + " to an influxd 1.8 binary")

// Options configure Launch. The zero value is usable.
type Options struct {
	// Binary is the influxd to run. Empty means FindBinary.
	Binary string
	// Dir holds the config, data, WAL, meta and log of the server. Empty
	// means a new temporary directory that Close removes; a given Dir is
	// kept, so the demo can restart on its previous data.
	Dir string
	// Database and RetentionPolicy name the database and its default
	// retention policy created at launch (defaults "db" and "rp").
	Database        string
	RetentionPolicy string
	// StartTimeout bounds the wait for the server to answer /ping, at
	// launch and at every Restart (default DefaultStartTimeout).
	StartTimeout time.Duration
	// StopTimeout is the grace period between SIGTERM and SIGKILL
	// (default DefaultStopTimeout).
	StopTimeout time.Duration
	// MaxValuesPerTag and MaxSeriesPerDatabase set InfluxDB's cardinality
	// limits ([data] max-values-per-tag, max-series-per-database). Zero
	// (the default here, unlike a stock server) means no limit; tests of
	// how writes fail at a limit set one.
	MaxValuesPerTag      int
	MaxSeriesPerDatabase int

	// Stock-server knobs: the zero value is the test server described in
	// configTemplate (Flux on, database created at launch).
	//
	// DisableFlux starts the server with Flux off, as InfluxDB 1.8 ships:
	// /api/v2/query answers 403 and only InfluxQL reads work.
	DisableFlux bool
	// NoDatabase creates no database at launch: the server is as empty as
	// a new installation, for tests of what creates it.
	NoDatabase bool
}

// Server is a running (or stopped) influxd child process. Its ports and
// data directory stay the same across Stop and Restart, so tests can
// simulate an outage and find their data afterwards.
//
// The methods are safe for concurrent use.
type Server struct {
	bin      string
	dir      string
	ownDir   bool
	cfgPath  string
	logPath  string
	httpAddr string
	db, rp   string
	startTO  time.Duration
	stopTO   time.Duration
	client   *http.Client
	limits   [2]int // max-series-per-database, max-values-per-tag
	flux     bool
	createDB bool

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of influxd.
type process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done is closed
}

// Start launches a server for the test t, registers its shutdown with
// t.Cleanup, and fails the test (it never skips) when influxd is missing
// or does not come up. On a failed test the tail of the server's log is
// printed.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options (Dir, when empty, is a directory of the
// test's own).
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultStartTimeout+10*time.Second)
	defer cancel()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Launch(ctx, opts)
	if err != nil {
		t.Fatalf("influxtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("influxd log tail (%s):\n%s", s.LogPath(), s.LogTail(40))
		}
		if err := s.Close(); err != nil {
			t.Errorf("influxtest: %v", err)
		}
	})
	return s
}

// Launch starts influxd with a fresh config on free loopback ports, waits
// until it answers /ping, and creates the database and retention policy.
// ctx bounds only the start; the server runs until Stop or Close.
// On error nothing is left running and the error includes the log tail.
func Launch(ctx context.Context, opts Options) (*Server, error) {
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = FindBinary(); err != nil {
			return nil, err
		}
	}
	s := &Server{
		bin:      bin,
		dir:      opts.Dir,
		db:       orDefault(opts.Database, DefaultDatabase),
		rp:       orDefault(opts.RetentionPolicy, DefaultRetentionPolicy),
		startTO:  opts.StartTimeout,
		stopTO:   opts.StopTimeout,
		client:   &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		flux:     !opts.DisableFlux,
		createDB: !opts.NoDatabase,
		limits:   [2]int{opts.MaxSeriesPerDatabase, opts.MaxValuesPerTag},
	}
	if s.startTO <= 0 {
		s.startTO = DefaultStartTimeout
	}
	if s.stopTO <= 0 {
		s.stopTO = DefaultStopTimeout
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "influxtest-")
		if err != nil {
			return nil, fmt.Errorf("influxtest: create temp dir: %w", err)
		}
		s.dir, s.ownDir = d, true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("influxtest: create dir %q: %w", s.dir, err)
	}
	s.cfgPath = filepath.Join(s.dir, "influxd.conf")
	s.logPath = filepath.Join(s.dir, "influxd.log")

	// Free ports are found by binding :0 and closing, so another process
	// can take one before influxd binds it; try again with new ports.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.configure(); err != nil {
			break
		}
		if err = s.start(ctx); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err == nil && s.createDB {
		err = s.CreateDatabase(ctx, s.db, s.rp)
	}
	if err != nil {
		tail := s.LogTail(30)
		_ = s.Close()
		return nil, fmt.Errorf("influxtest: launch %s: %w\ninfluxd log tail:\n%s", s.bin, err, tail)
	}
	return s, nil
}

// FindBinary locates influxd: the path in $TALLY_INFLUXD, else .bin/influxd
// in the module root (found by walking up from the working directory to
// go.mod), else influxd on $PATH. It must be InfluxDB 1.8 (2.x has another
// command line and config).
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
				p := filepath.Join(dir, ".bin", "influxd")
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
	if p, err := exec.LookPath("influxd"); err == nil {
		return p, nil
	}
	return "", ErrNoBinary
}

// URL returns the server's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return "http://" + s.httpAddr }

// Token returns the API token to use ("user:password").
func (s *Server) Token() string { return Token }

// Org returns the organisation to use: InfluxDB 1.8 ignores it, so "".
func (s *Server) Org() string { return "" }

// Flux reports whether the server answers Flux (Options.DisableFlux unset).
func (s *Server) Flux() bool { return s.flux }

// Bucket returns the bucket of the launch database, "<database>/<rp>".
func (s *Server) Bucket() string { return s.db + "/" + s.rp }

// Database returns the database created at launch.
func (s *Server) Database() string { return s.db }

// RetentionPolicy returns the default retention policy of Database.
func (s *Server) RetentionPolicy() string { return s.rp }

// Dir returns the directory holding the config, data and log.
func (s *Server) Dir() string { return s.dir }

// LogPath returns the file that receives influxd's stdout and stderr.
func (s *Server) LogPath() string { return s.logPath }

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Running reports whether the server process is up (it may not be ready).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

// Stop terminates the server (SIGTERM, then SIGKILL after the stop
// timeout) and waits for it to exit. Data stays; Restart brings the server
// back on the same port. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	defer p.log.Close()
	select {
	case <-p.done:
		return nil // already gone (crashed or killed); nothing to stop
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("influxtest: signal influxd: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(s.stopTO):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("influxtest: influxd ignored SIGTERM for %s and was killed", s.stopTO)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("influxtest: influxd (pid %d) did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

// Restart stops the server if it runs, starts it again on the same ports
// and data, and waits until it answers /ping (bounded by ctx and the start
// timeout).
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	err := s.stopLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.start(ctx); err != nil {
		return fmt.Errorf("influxtest: restart: %w\ninfluxd log tail:\n%s", err, s.LogTail(30))
	}
	return nil
}

// Close stops the server and removes its directory when Launch created it.
// It is safe to call more than once.
func (s *Server) Close() error {
	err := s.Stop()
	if s.ownDir {
		if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
			err = fmt.Errorf("influxtest: remove %q: %w", s.dir, rerr)
		}
	}
	return err
}

// CreateDatabase creates database db with default retention policy rp
// (infinite duration) through the 1.x query API, so that bucket "db/rp"
// exists for the v2 write and Flux APIs. It succeeds if both exist already.
func (s *Server) CreateDatabase(ctx context.Context, db, rp string) error {
	q := fmt.Sprintf("CREATE DATABASE %s WITH NAME %s", quoteIdent(db), quoteIdent(rp))
	return s.exec(ctx, q)
}

// CreateRetentionPolicy creates retention policy rp of database db
// keeping points for duration (InfluxDB 1.8 allows 1h at the least);
// the default policy is left as it is. Points older than that are refused
// with "points beyond retention policy" (400, partial write).
func (s *Server) CreateRetentionPolicy(ctx context.Context, db, rp string, duration time.Duration) error {
	q := fmt.Sprintf("CREATE RETENTION POLICY %s ON %s DURATION %ds REPLICATION 1", quoteIdent(rp), quoteIdent(db), int64(duration.Seconds()))
	return s.exec(ctx, q)
}

// Exec runs one InfluxQL statement (ALTER RETENTION POLICY, DROP ...)
// and returns the server's error, if any.
func (s *Server) Exec(ctx context.Context, statement string) error { return s.exec(ctx, statement) }

// Query runs one InfluxQL statement through POST /query on database db
// ("" for none) and returns the JSON answer (timestamps in unix seconds).
// Statement errors come back inside the answer, as InfluxDB sends them.
func (s *Server) Query(ctx context.Context, db, q string) ([]byte, error) {
	form := url.Values{"q": {q}, "epoch": {"s"}}
	if db != "" {
		form.Set("db", db)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("build query %q: %w", q, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", q, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("query %q: read answer: %w", q, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("query %q: HTTP %d: %s", q, resp.StatusCode, bytes.TrimSpace(body))
	}
	return body, nil
}

// exec runs one InfluxQL statement through POST /query.
func (s *Server) exec(ctx context.Context, q string) error {
	form := url.Values{"q": {q}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("build query %q: %w", q, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("query %q: %w", q, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	// 1.x answers statement errors with 200 and an "error" in the results.
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("query %q: HTTP %d: %s", q, resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// configure picks free ports and writes the config file.
func (s *Server) configure() error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	s.httpAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	rpcAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	cfg := fmt.Sprintf(configTemplate,
		tomlString(rpcAddr),
		tomlString(filepath.Join(s.dir, "meta")),
		tomlString(filepath.Join(s.dir, "data")),
		tomlString(filepath.Join(s.dir, "wal")),
		s.limits[0], s.limits[1],
		tomlString(s.httpAddr),
		s.flux,
	)
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// configTemplate is the influxd 1.8 config: loopback only, Flux on
// (unless Options.DisableFlux), no phoning home, no _internal monitoring
// writes, no per-request logs, and no cardinality limits unless Options
// set them (load tests create many series). Everything else is
// the 1.8 default, including http max-body-size (25 MB), so request-size
// behaviour matches a stock server.
const configTemplate = `reporting-disabled = true
bind-address = %s

[meta]
  dir = %s
  logging-enabled = false

[data]
  dir = %s
  wal-dir = %s
  query-log-enabled = false
  trace-logging-enabled = false
  max-series-per-database = %d
  max-values-per-tag = %d

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
  log-enabled = false

[http]
  enabled = true
  bind-address = %s
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  flux-enabled = %t
  flux-log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
`

// start runs influxd and waits until it answers /ping.
func (s *Server) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fmt.Fprintf(logf, "--- influxtest: starting %s on %s at %s\n", s.bin, s.httpAddr, time.Now().Format(time.RFC3339))
	cmd := exec.Command(s.bin, "run", "-config", s.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = s.dir
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	if err := s.waitReady(ctx, p); err != nil {
		_ = s.Stop()
		return err
	}
	return nil
}

// waitReady polls /ping until it answers 204, the process exits, ctx ends
// or the start timeout passes.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, s.startTO)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/ping", nil)
		if err != nil {
			return fmt.Errorf("build ping: %w", err)
		}
		resp, err := s.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("ping: HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-p.done:
			if strings.Contains(s.LogTail(20), "address already in use") {
				return fmt.Errorf("influxd exited: address already in use: %v", p.err)
			}
			return fmt.Errorf("influxd exited before it was ready: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("influxd not ready on %s: %w (last ping: %v)", s.httpAddr, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct free loopback TCP ports, holding them all
// open until each is chosen so they differ.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// quoteIdent quotes an InfluxQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
