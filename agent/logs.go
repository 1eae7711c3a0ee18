package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/agent/pipeline"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/tail"
)

// newTailers builds one tailer per configured log source. Each has its own
// line decoder (parsers are not shared between goroutines) and normalises
// lines exactly as HTTP ingest normalises JSON events.
func newTailers(cfg config.Config, env *source.Env, sink tail.Sink, reg prometheus.Registerer, logger *slog.Logger) ([]*tail.Tailer, error) {
	var out []*tail.Tailer
	for i := range cfg.Sources.Logs {
		src := &cfg.Sources.Logs[i]
		dec, err := pipeline.NewLineDecoder(src.Spec, env)
		if err != nil {
			return nil, fmt.Errorf("sources.logs[%d]: %w", i, err)
		}
		decode := func(line []byte, dst []event.Event) ([]event.Event, error) {
			out, err := dec.Decode(line, dst, time.Now())
			if errors.Is(err, logparse.ErrSkip) {
				return dst, nil // a well-formed line that is no event
			}
			return out, err
		}
		t, err := tail.New(src.TailConfig(), sink, decode, logger.With("source", fmt.Sprintf("logs[%d]", i)))
		if err != nil {
			return nil, fmt.Errorf("sources.logs[%d]: %w", i, err)
		}
		out = append(out, t)
	}
	if len(out) > 0 {
		reg.MustRegister(&tailCollector{tailers: out})
	}
	return out, nil
}

// tailCollector exports the tailers' stats, summed, one snapshot per scrape.
type tailCollector struct{ tailers []*tail.Tailer }

var (
	tailLinesDesc      = prometheus.NewDesc("tally_agent_log_lines_total", "Log lines consumed.", nil, nil)
	tailMalformedDesc  = prometheus.NewDesc("tally_agent_log_lines_malformed_total", "Log lines skipped as malformed, by reason.", []string{"reason"}, nil)
	tailEventsDesc     = prometheus.NewDesc("tally_agent_log_events_total", "Events from log lines accepted.", nil, nil)
	tailRotationsDesc  = prometheus.NewDesc("tally_agent_log_rotations_total", "Log rotations seen, by kind.", []string{"kind"}, nil)
	tailUnrecovered    = prometheus.NewDesc("tally_agent_log_rotations_unrecovered_total", "Rotations after which unread lines may be lost.", nil, nil)
	tailBusyDesc       = prometheus.NewDesc("tally_agent_log_busy_waits_total", "Times tailing paused because the agent was busy (backpressure).", nil, nil)
	tailFilesDesc      = prometheus.NewDesc("tally_agent_log_files", "Log files followed.", nil, nil)
	tailFileErrorsDesc = prometheus.NewDesc("tally_agent_log_file_errors_total", "Failed attempts to open or read a log file.", nil, nil)
)

func (c *tailCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tailLinesDesc, tailMalformedDesc, tailEventsDesc, tailRotationsDesc, tailUnrecovered, tailBusyDesc, tailFilesDesc, tailFileErrorsDesc} {
		ch <- d
	}
}

func (c *tailCollector) Collect(ch chan<- prometheus.Metric) {
	var lines, events, unrecovered, busy, fileErrors uint64
	var files int
	malformed, rotations := map[string]uint64{}, map[string]uint64{}
	for _, t := range c.tailers {
		st := t.Stats()
		lines += st.Lines
		events += st.Events
		unrecovered += st.Unrecovered
		busy += st.BusyWaits
		fileErrors += st.FileErrors
		files += st.Files
		for k, n := range st.Malformed {
			malformed[k] += n
		}
		for k, n := range st.Rotations {
			rotations[k] += n
		}
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(tailLinesDesc, lines)
	counter(tailEventsDesc, events)
	counter(tailUnrecovered, unrecovered)
	counter(tailBusyDesc, busy)
	counter(tailFileErrorsDesc, fileErrors)
	ch <- prometheus.MustNewConstMetric(tailFilesDesc, prometheus.GaugeValue, float64(files))
	for k, n := range malformed {
		counter(tailMalformedDesc, n, k)
	}
	for k, n := range rotations {
		counter(tailRotationsDesc, n, k)
	}
}
