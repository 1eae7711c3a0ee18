package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// aggEnv is one InfluxDB, a dev PKI and the aggregator nodes of a test.
type aggEnv struct {
	t      *testing.T
	dir    string
	certs  string
	influx *influxtest.Server
	// db is the test's database; bucket the bucket the nodes write to
	// (default db and the server's retention policy).
	db, bucket string
	seeds      []string
	nodes      []*aggNode
}

// aggNode is one tally-aggregator process.
type aggNode struct {
	name, http, quic, gossip string
	cfgPath                  string
	proc                     *harness.Proc
}

// aggNewEnv starts InfluxDB (with opts) and makes certificates for the
// agents and nodes named.
func aggNewEnv(t *testing.T, opts influxtest.Options, agents, nodes []string) *aggEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("attack suite: needs InfluxDB and built binaries")
	}
	e := &aggEnv{t: t, dir: t.TempDir()}
	if opts == (influxtest.Options{}) {
		// Most attacks share one influxd, each in a database of its own.
		e.influx, e.db = aggSharedDatabase(t)
	} else {
		e.influx = influxtest.StartWith(t, opts)
		e.db = e.influx.Database()
	}
	e.bucket = e.db + "/" + e.influx.RetentionPolicy()
	e.certs = filepath.Join(e.dir, "certs")
	if _, err := pki.GenerateDev(e.certs, pki.DevOptions{Agents: agents, Aggregators: nodes}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range e.nodes {
			if n.proc.Running() {
				_ = n.proc.Stop(20 * time.Second)
			}
			if t.Failed() {
				t.Logf("---- %s log tail ----\n%s", n.name, n.proc.LogTail(40))
			}
		}
	})
	return e
}

// aggShared is the influxd most tests share.
var aggShared struct {
	once sync.Once
	srv  *influxtest.Server
	err  error
	dbs  atomic.Int64
}

// aggSharedDatabase returns the shared influxd and a new database on it.
func aggSharedDatabase(t *testing.T) (*influxtest.Server, string) {
	t.Helper()
	aggShared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		aggShared.srv, aggShared.err = influxtest.Launch(ctx, influxtest.Options{})
	})
	if aggShared.err != nil {
		t.Fatalf("influxtest: %v", aggShared.err)
	}
	db := fmt.Sprintf("attack%d", aggShared.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := aggShared.srv.CreateDatabase(ctx, db, aggShared.srv.RetentionPolicy()); err != nil {
		t.Fatal(err)
	}
	return aggShared.srv, db
}

// aggNodeOptions shape one node.
type aggNodeOptions struct {
	// Cluster makes the node gossip with the env's other clustered nodes.
	Cluster bool
	// Extra is YAML appended to the config (keys of other sections).
	Extra string
	// Wrap, if set, runs the node through this command prefix (e.g. a
	// shell that mounts its data directory first).
	Wrap []string
	// DataDir overrides the node's data directory.
	DataDir string
	// NoWait returns without waiting for /readyz.
	NoWait bool
	// Env is added to the node's environment.
	Env []string
	// InfluxURL overrides the InfluxDB the node writes to (a proxy).
	InfluxURL string
	// InfluxExtra is YAML added to the node's influx: section.
	InfluxExtra string
}

// aggStart writes a node's config and starts it.
func (e *aggEnv) aggStart(name string, o aggNodeOptions) *aggNode {
	e.t.Helper()
	tcp, err := harness.FreeTCP(2)
	if err != nil {
		e.t.Fatal(err)
	}
	udp, err := harness.FreeUDP(1)
	if err != nil {
		e.t.Fatal(err)
	}
	n := &aggNode{name: name, http: fmt.Sprintf("127.0.0.1:%d", tcp[0]), quic: fmt.Sprintf("127.0.0.1:%d", udp[0])}
	opts := harness.AggregatorOptions{Name: name, DataDir: filepath.Join(e.dir, name), QUICAddr: n.quic, HTTPAddr: n.http,
		CertsDir: e.certs, InfluxURL: e.influx.URL(), InfluxBucket: e.bucket, WriteInterval: 200 * time.Millisecond, Extra: o.Extra, InfluxExtra: o.InfluxExtra}
	if o.DataDir != "" {
		opts.DataDir = o.DataDir
	}
	if o.InfluxURL != "" {
		opts.InfluxURL = o.InfluxURL
	}
	if o.Cluster {
		n.gossip = fmt.Sprintf("127.0.0.1:%d", tcp[1])
		e.seeds = append(e.seeds, n.gossip)
		opts.GossipAddr, opts.Seeds = n.gossip, e.seeds
	}
	n.cfgPath = filepath.Join(e.dir, name+".yaml")
	if err := harness.WriteAggregatorConfig(n.cfgPath, opts); err != nil {
		e.t.Fatal(err)
	}
	bin := filepath.Join(aggBinDir, "tally-aggregator")
	args := []string{"-config", n.cfgPath}
	if len(o.Wrap) > 0 {
		args = append(append(o.Wrap[1:], bin), args...)
		bin = o.Wrap[0]
	}
	n.proc = &harness.Proc{Name: name, Bin: bin, Args: args, LogPath: filepath.Join(e.dir, name+".log"), Env: o.Env}
	e.nodes = append(e.nodes, n)
	if err := n.proc.Start(); err != nil {
		e.t.Fatal(err)
	}
	if !o.NoWait {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := harness.WaitHTTP(ctx, "http://"+n.http+"/readyz", n.proc); err != nil {
			e.t.Fatal(err)
		}
	}
	return n
}

// aggClient dials a node as agent (its certificate, ALPN tally/1).
func (e *aggEnv) aggClient(agent string, n *aggNode, alpn string) *wire.Client {
	e.t.Helper()
	tlsConf, err := pki.ClientTLS(pki.DevFiles(e.certs, agent), "localhost", alpn)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := wire.Dial(ctx, n.quic, tlsConf, wire.ClientConfig{Compress: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// aggContribution is one contribution of count events with a few
// visitors, under its own CID (so contributions add).
func aggContribution(campaign string, minute int64, cid, count uint64) wire.Contribution {
	st := sketch.State{Count: count}
	for v := range 4 {
		st.AddVisitor(cid*1_000_003 + uint64(v) + 1)
	}
	enc, err := st.Encode()
	if err != nil {
		panic(err)
	}
	return wire.Contribution{Series: sketch.Series{Campaign: campaign, Source: "legit", Medium: "cpc", Type: "click", Country: "DE",
		Device: "desktop", Region: "eu"}, Minute: minute, CID: cid, Version: 1, State: enc}
}

// aggLegit is legitimate traffic: an agent sending batches of new
// contributions, each batch sent again until acknowledged, and the
// truth of what was acknowledged.
type aggLegit struct {
	c        *wire.Client
	agent    string
	campaign string
	mu       sync.Mutex
	seq, cid uint64
	truth    uint64
}

// aggEpochs numbers the senders of a test process, so no two share
// contribution ids.
var aggEpochs atomic.Uint64

func (e *aggEnv) aggLegit(agent string, n *aggNode, campaign string) *aggLegit {
	return &aggLegit{c: e.aggClient(agent, n, wire.ALPN), agent: agent, campaign: campaign, cid: aggEpochs.Add(1) << 32}
}

// send sends one batch of k contributions of the current minute and
// returns once it is acknowledged (retrying busy answers and stream
// errors) or ctx ends.
func (l *aggLegit) send(ctx context.Context, k int) error {
	l.mu.Lock()
	l.seq++
	b := &wire.Batch{Version: wire.ProtocolVersion, Agent: l.agent, Region: "eu", Seq: l.seq}
	var total uint64
	minute := time.Now().Truncate(time.Minute).Unix()
	for range k {
		l.cid++
		n := l.cid%7 + 1
		total += n
		b.Contributions = append(b.Contributions, aggContribution(l.campaign, minute, l.cid, n))
	}
	l.mu.Unlock()
	for {
		ack, err := l.c.Send(ctx, b)
		if err == nil && ack.Status == wire.AckOK {
			l.mu.Lock()
			l.truth += total
			l.mu.Unlock()
			return nil
		}
		if err == nil && ack.Status == wire.AckRejected {
			return fmt.Errorf("legitimate batch rejected: %s", ack.Reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("legitimate batch not acknowledged: %v %+v", err, ack)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// run sends a batch every interval until ctx ends and returns the first
// error. A batch in flight when ctx ends is still carried to its answer
// (it may already be applied, and the truth must count it).
func (l *aggLegit) run(ctx context.Context, interval time.Duration) error {
	for ctx.Err() == nil {
		sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := l.send(sendCtx, 5)
		cancel()
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
	return nil
}

func (l *aggLegit) acked() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.truth
}

// aggStored returns the events of each campaign in InfluxDB's merged
// points over the last day and the next hour.
func (e *aggEnv) aggStored(ctx context.Context) (map[string]uint64, error) {
	r, err := influx.NewReader(influx.Config{URL: e.influx.URL(), Token: e.influx.Token(), Bucket: e.bucket}, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	now := time.Now()
	ms, err := r.QueryMinutes(ctx, influx.MinuteQuery{AllCampaigns: true, From: now.Add(-400 * 24 * time.Hour), To: now.Add(time.Hour), CountersOnly: true})
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, m := range ms {
		out[m.Series.Campaign] += m.State.Count
	}
	return out, nil
}

// aggWaitStored waits until InfluxDB holds exactly want for every
// campaign of want, and fails the test with what it holds otherwise.
func (e *aggEnv) aggWaitStored(want map[string]uint64, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	var got map[string]uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var err error
		got, err = e.aggStored(ctx)
		cancel()
		ok := err == nil
		for c, n := range want {
			if got[c] != n {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("InfluxDB holds %v (err %v) after %s, want %v", got, err, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// aggHTTP gets a node's URL path with the admin token and returns status
// and body.
func aggHTTP(hostport, path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+hostport+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+harness.DefaultAdminToken)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// aggMetric sums the samples of a metric whose labels contain all the
// given pairs; ok is false when no sample exists.
func aggMetric(hostport, name string, labels ...string) (sum float64, ok bool) {
	_, body, err := aggHTTP(hostport, "/metrics")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
			ok = true
		}
	}
	return sum, ok
}

// aggWaitMetric waits until a metric reaches at least min.
func aggWaitMetric(t *testing.T, n *aggNode, within time.Duration, min float64, name string, labels ...string) float64 {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, ok := aggMetric(n.http, name, labels...)
		if ok && v >= min {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v (present %v) after %s, want at least %v", name, labels, v, ok, within, min)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
