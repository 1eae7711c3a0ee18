package agent

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/edge"
	"github.com/tally-edge/tally/agent/pipeline"
	"github.com/tally-edge/tally/internal/reload"
)

// ReloadableKeys are the configuration keys a reload (SIGHUP) puts in
// force in a running agent: the server senders' tokens, the bot filter's
// lists (bots.allow, bots.deny, bots.datacenter, whose files are read
// again), how each log source's lines are decoded (its format, fields and
// rules; not its files, nor the number of sources) and the log level. The
// client certificate's files (aggregator.cert and aggregator.key) are read
// again too. A change to any other key is logged and waits for a restart.
var ReloadableKeys = append([]string{"http.server_tokens", "bots.allow", "bots.deny", "bots.datacenter", "log_level"},
	logSourceKeys()...)

func logSourceKeys() []string {
	var out []string
	for _, k := range logSpecKeys {
		out = append(out, "sources.logs[*]."+k)
	}
	return out
}

// newReloader returns the agent's reloader: each reload prepares every
// part from the new file and commits them together, or none.
func newReloader(src reload.Source[config.Config], p *pipeline.Pipeline, tokens *edge.Tokens, logs *logDecoders,
	reg prometheus.Registerer, logger *slog.Logger) *reload.Reloader[config.Config] {
	return &reload.Reloader[config.Config]{
		Source:     src,
		Metrics:    reload.NewMetrics(reg, "tally_agent"),
		Logger:     logger,
		LogLevel:   func(c config.Config) string { return c.LogLevel },
		Reloadable: reload.Keys(ReloadableKeys...),
		Apply: func(cfg config.Config) error {
			var steps reload.Steps
			steps.Add("http.server_tokens", func() { tokens.Replace(cfg.HTTP.ServerTokens...) }, nil)
			commitBots, err := p.Bots.PrepareLists(cfg.Bots)
			steps.Add("bots", commitBots, err)
			commitLogs, err := logs.prepare(cfg)
			steps.Add("sources.logs", commitLogs, err)
			commit, err := p.Identity.Prepare()
			steps.Add(p.Identity.Name(), commit, err)
			return steps.Commit()
		},
	}
}
