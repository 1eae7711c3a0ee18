// Package status summarises the health of a running tally-agent or
// tally-aggregator from its HTTP endpoints (/healthz, /readyz, /metrics),
// for `tally-agent status` and `tally-aggregator status`: what an operator
// wants to see first at 3 a.m., without Prometheus or a dashboard.
//
// It reads only the public endpoints (and /metrics with its token when the
// aggregator sets http.metrics_token), so it works against a process on
// another host as well as the local one.
package status

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MaxBodyBytes bounds what is read from one endpoint: a /metrics page of a
// large aggregator is a few MiB; anything beyond is not ours to parse.
const MaxBodyBytes = 64 << 20

// Target is the process to ask.
type Target struct {
	// URL is the base URL of the HTTP listener, e.g. http://127.0.0.1:8081.
	URL string
	// MetricsToken is sent as a bearer token to /metrics when not empty.
	MetricsToken string
	// Insecure skips verification of an HTTPS listener's certificate.
	Insecure bool
	// Timeout bounds each request (default 5s).
	Timeout time.Duration
}

// Snapshot is what the endpoints answered at one moment.
type Snapshot struct {
	URL string
	// Health is nil when /healthz answered 200.
	Health error
	// Ready is nil when /readyz answered 200; otherwise it carries the
	// reason the process gave.
	Ready error
	// Metrics is nil when /metrics could not be read; MetricsErr says why.
	Metrics    map[string]*dto.MetricFamily
	MetricsErr error
	At         time.Time
}

// Fetch asks the target's three endpoints. It never fails as a whole: each
// answer (or failure) is recorded in the snapshot.
func Fetch(ctx context.Context, t Target) Snapshot {
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	tr := &http.Transport{}
	if t.Insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // operator's explicit choice
	}
	c := &http.Client{Transport: tr, Timeout: timeout}
	defer tr.CloseIdleConnections()
	base := strings.TrimRight(t.URL, "/")
	s := Snapshot{URL: base, At: time.Now()}
	_, s.Health = get(ctx, c, base+"/healthz", "")
	_, s.Ready = get(ctx, c, base+"/readyz", "")
	body, err := get(ctx, c, base+"/metrics", t.MetricsToken)
	if err != nil {
		s.MetricsErr = err
		return s
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	if s.Metrics, err = p.TextToMetricFamilies(strings.NewReader(body)); err != nil {
		s.Metrics, s.MetricsErr = nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return s
}

// get returns the body of a 200 answer, or an error naming the status and
// the process's own words (its error JSON or text).
func get(ctx context.Context, c *http.Client, url, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if err != nil {
		return "", fmt.Errorf("%s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return "", fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return string(b), nil
}

// Sum adds up the samples of a counter, gauge or untyped family whose
// labels include every pair of match; ok is false when the family is
// absent.
func (s Snapshot) Sum(name string, match map[string]string) (sum float64, ok bool) {
	mf := s.Metrics[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum, true
}

// By sums the samples of a family per value of one label.
func (s Snapshot) By(name, label string) map[string]float64 {
	out := map[string]float64{}
	mf := s.Metrics[name]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		v := 0.0
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		case m.Untyped != nil:
			v = m.Untyped.GetValue()
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				out[l.GetValue()] += v
			}
		}
	}
	return out
}

// Histogram returns the count and sum of a histogram family (all label
// sets together).
func (s Snapshot) Histogram(name string) (count uint64, sum float64, ok bool) {
	mf := s.Metrics[name]
	if mf == nil {
		return 0, 0, false
	}
	for _, m := range mf.GetMetric() {
		if h := m.GetHistogram(); h != nil {
			count += h.GetSampleCount()
			sum += h.GetSampleSum()
		}
	}
	return count, sum, true
}

func hasLabels(m *dto.Metric, match map[string]string) bool {
	for k, v := range match {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Line is one fact of a report.
type Line struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Report is the summary printed by the status subcommands.
type Report struct {
	Program string `json:"program"`
	URL     string `json:"url"`
	// OK is true when the process is healthy and ready and nothing in
	// Problems needs attention.
	OK       bool     `json:"ok"`
	Lines    []Line   `json:"lines"`
	Problems []string `json:"problems,omitempty"`
}

func (r *Report) add(key, format string, args ...any) {
	r.Lines = append(r.Lines, Line{Key: key, Value: fmt.Sprintf(format, args...)})
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// common fills the lines every process has: health, readiness, build,
// uptime and memory. It returns false when there are no metrics to read.
func (r *Report) common(s Snapshot) bool {
	r.URL = s.URL
	var uerr *url.Error
	if errors.As(s.Health, &uerr) && s.Metrics == nil {
		// Not an answer but no answer at all: say so once.
		r.add("reachable", "NO: %v", uerr.Err)
		r.problem("unreachable: %v", s.Health)
		return false
	}
	if s.Health != nil {
		r.add("health", "FAILING: %v", s.Health)
		r.problem("not healthy: %v", s.Health)
	} else {
		r.add("health", "ok")
	}
	if s.Ready != nil {
		r.add("ready", "NO: %v", s.Ready)
		r.problem("not ready: %v", s.Ready)
	} else {
		r.add("ready", "yes")
	}
	if s.Metrics == nil {
		r.add("metrics", "unavailable: %v", s.MetricsErr)
		r.problem("metrics unavailable: %v", s.MetricsErr)
		return false
	}
	if mf := s.Metrics["go_info"]; mf != nil && len(mf.GetMetric()) > 0 {
		for _, l := range mf.GetMetric()[0].GetLabel() {
			if l.GetName() == "version" {
				r.add("go", "%s", l.GetValue())
			}
		}
	}
	if start, ok := s.Sum("process_start_time_seconds", nil); ok && start > 0 {
		up := s.At.Sub(time.Unix(int64(start), 0)).Truncate(time.Second)
		r.add("uptime", "%s", up)
	}
	if rss, ok := s.Sum("process_resident_memory_bytes", nil); ok {
		r.add("memory (RSS)", "%s", byteSize(rss))
	}
	return true
}

func (r *Report) finish() Report {
	r.OK = len(r.Problems) == 0
	return *r
}

// Agent summarises a tally-agent.
func Agent(s Snapshot) Report {
	r := &Report{Program: "tally-agent"}
	if !r.common(s) {
		return r.finish()
	}
	if v, ok := s.Sum("tally_agent_connected", nil); ok {
		if v == 1 {
			r.add("aggregator", "connected")
		} else {
			r.add("aggregator", "DISCONNECTED")
			r.problem("not connected to any aggregator (events are kept in the spool)")
		}
	}
	pb, _ := s.Sum("tally_agent_spool_pending_batches", nil)
	pbytes, _ := s.Sum("tally_agent_spool_pending_bytes", nil)
	sbytes, _ := s.Sum("tally_agent_spool_bytes", nil)
	r.add("spool", "%.0f batches awaiting an ack (%s), %s on disk", pb, byteSize(pbytes), byteSize(sbytes))
	if j, ok := s.Sum("tally_agent_journal_bytes", nil); ok {
		r.add("journal", "%s", byteSize(j))
	}
	if o, ok := s.Sum("tally_agent_open_series_minutes", nil); ok {
		r.add("open series-minutes", "%.0f", o)
	}
	acc, _ := s.Sum("tally_agent_events_accepted_total", nil)
	rej, _ := s.Sum("tally_agent_events_rejected_total", nil)
	bots, _ := s.Sum("tally_agent_bots_filtered_total", nil)
	r.add("events since start", "%.0f accepted (%.0f bots), %.0f rejected", acc, bots, rej)
	if bp := s.By("tally_agent_backpressure_total", "cause"); len(bp) > 0 {
		r.add("answered 503", "%s", joinCounts(bp))
	}
	sent := s.By("tally_agent_batches_sent_total", "outcome")
	if len(sent) > 0 {
		r.add("batches sent", "%s", joinCounts(sent))
	}
	if dl, ok := s.Sum("tally_agent_dead_letter_batches_total", nil); ok && dl > 0 {
		r.add("dead letters", "%.0f batches", dl)
		r.problem("%.0f batches were rejected as invalid and set aside in the dead-letter directory", dl)
	}
	return r.finish()
}

// Aggregator summarises a tally-aggregator node.
func Aggregator(s Snapshot) Report {
	r := &Report{Program: "tally-aggregator"}
	if !r.common(s) {
		return r.finish()
	}
	if mf := s.Metrics["tally_aggregator_cluster_member"]; mf != nil {
		states := map[string][]string{}
		for _, m := range mf.GetMetric() {
			var member, state string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "member":
					member = l.GetValue()
				case "state":
					state = l.GetValue()
				}
			}
			states[state] = append(states[state], member)
		}
		var parts []string
		for _, st := range sortedKeys(states) {
			sort.Strings(states[st])
			parts = append(parts, fmt.Sprintf("%d %s (%s)", len(states[st]), st, strings.Join(states[st], ", ")))
			if st != "alive" {
				r.problem("members %s: %s", st, strings.Join(states[st], ", "))
			}
		}
		r.add("members", "%s", strings.Join(parts, "; "))
	}
	if e, ok := s.Sum("tally_aggregator_cluster_epoch", nil); ok {
		r.add("membership epoch", "%.0f", e)
	}
	if owners := s.By("tally_aggregator_campaign_owner", "member"); len(owners) > 0 {
		r.add("active campaigns by owner", "%s", joinCounts(owners))
	}
	if mf := s.Metrics["tally_aggregator_storage_info"]; mf != nil && len(mf.GetMetric()) > 0 {
		l := map[string]string{}
		for _, p := range mf.GetMetric()[0].GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		r.add("storage", "InfluxDB %s, reading with %s, bucket %s", l["version"], l["query_language"], l["bucket"])
	}
	wal, _ := s.Sum("tally_aggregator_wal_bytes", nil)
	dirty, _ := s.Sum("tally_aggregator_dirty_minutes", nil)
	open, _ := s.Sum("tally_aggregator_open_minutes", nil)
	r.add("WAL", "%s; %.0f minutes not yet in InfluxDB; %.0f open minutes", byteSize(wal), dirty, open)
	writes := s.By("tally_aggregator_influx_writes_total", "result")
	if len(writes) > 0 {
		line := joinCounts(writes)
		if n, sum, ok := s.Histogram("tally_aggregator_influx_write_duration_seconds"); ok && n > 0 {
			line += fmt.Sprintf("; mean round %s", time.Duration(sum/float64(n)*float64(time.Second)).Round(time.Microsecond))
		}
		r.add("InfluxDB write rounds", "%s", line)
	}
	if b := s.By("tally_aggregator_batches_total", "status"); len(b) > 0 {
		r.add("batches acked", "%s", joinCounts(b))
	}
	if f := s.By("tally_aggregator_forwarded_batches_total", "outcome"); len(f) > 0 {
		r.add("batches forwarded to owners", "%s", joinCounts(f))
	}
	if sub, ok := s.Sum("tally_aggregator_stream_subscribers", nil); ok {
		r.add("stream subscribers", "%.0f", sub)
	}
	return r.finish()
}

// WriteText prints the report for a terminal.
func (r Report) WriteText(w io.Writer) error {
	verdict := "OK"
	if !r.OK {
		verdict = "NEEDS ATTENTION"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s at %s: %s\n", r.Program, r.URL, verdict)
	width := 0
	for _, l := range r.Lines {
		width = max(width, len(l.Key))
	}
	for _, l := range r.Lines {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, l.Key, l.Value)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  ! %s\n", p)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func joinCounts(m map[string]float64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func byteSize(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.1f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// Command is the body of the `status` subcommand of both binaries: it
// parses flags, asks the process and prints the report. Exit codes: 0 when
// the process is healthy, ready and shows no problem; 1 otherwise
// (unreachable included); 2 for bad usage.
func Command(program, defaultURL string, args []string, stdout, stderr io.Writer,
	summarise func(Snapshot) Report) int {
	fs := flagSet(program, stderr)
	base := fs.String("url", defaultURL, "base URL of the process's HTTP listener (http.listen)")
	format := fs.String("format", "text", "output: text or json")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on each request")
	insecure := fs.Bool("insecure", false, "do not verify the certificate of an HTTPS listener")
	tokenEnv := "TALLY_METRICS_TOKEN"
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || (*format != "text" && *format != "json") {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4**timeout)
	defer cancel()
	snap := Fetch(ctx, Target{URL: *base, MetricsToken: getenv(tokenEnv), Insecure: *insecure, Timeout: *timeout})
	rep := summarise(snap)
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	} else if err := rep.WriteText(stdout); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !rep.OK {
		return 1
	}
	return 0
}
