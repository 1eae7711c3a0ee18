// Package liveview lays agents' live counters over the durable live view
// of the campaigns this node owns, so the stream moves within about a
// second of an event whatever the agents' flush interval.
//
// # The rule
//
// An agent's live counters of one campaign-minute (wire.Live) count every
// event its rollup took for that campaign and minute in one restart epoch,
// cumulatively. The durable contributions of the same agent and epoch
// carry the same events: at any time they hold a prefix of the events the
// latest live counters hold, or more (a flush cut after the live message).
// Two counts of nested sets of events are ordered by their size, so for
// each (agent, epoch, campaign-minute) the view keeps the live record of
// the highest sequence number and compares its event count with what the
// store holds durably for that agent and epoch:
//
//   - live covers more events: the figure shown is the durable one plus
//     the difference (live − durable), and the update is Provisional;
//   - durable covers as many or more: the live record adds nothing. The
//     flush wins.
//
// So a repeated, late or reordered live message changes nothing (a lower
// sequence is ignored, a superseded record adds nothing), a dropped one
// only delays the figure, and once the flush holding an agent's events has
// landed the stream shows exactly the durable value. Each term
// max(live, durable) is a count of events the agent really took, so a
// shown figure is never above what the agents will deliver durably. Live
// counters never reach the write-ahead log or InfluxDB: the view only
// changes what this node publishes to the live hubs (live.Publisher), and
// every node's hub serves it, owner or not.
//
// A live record no flush has confirmed is dropped two of its agent's flush
// intervals plus ten seconds after it last changed (an agent that died
// before flushing), and the campaign-minute is published again without it.
// When an agent's live messages come with a newer epoch (it restarted), its
// records of older epochs are dropped at once: their unflushed events come
// again under the new epoch, replayed from the agent's journal, or not at
// all; messages of an older epoch than the newest heard are ignored.
//
// Live counters are trusted per agent identity: the agent's certificate
// name must be the name its contributions carry (quic.require_agent_cn),
// or the comparison would be between different agents. The aggregator
// grants no live streams otherwise.
package liveview

import (
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Durable is the merge store's side of the view (merge.Store.CampaignLive):
// the merged series of campaign-minutes, their uniques, and the counters
// each agent epoch has contributed durably, read together.
type Durable interface {
	CampaignLive(cms []merge.CampaignMinute, fn func(cm merge.CampaignMinute, series []sketch.Minute, uniques uint64,
		totals map[merge.AgentEpoch]wire.LiveCounters)) error
}

// Config configures a View.
type Config struct {
	// Store is the merge store.
	Store Durable
	// Out receives the updates (the fan-out to every node's hub).
	Out live.Publisher
	// Owns says whether this node owns a campaign; live counters of other
	// campaigns are dropped (the agent's membership was stale). Nil: this
	// node owns every campaign.
	Owns func(campaign string) bool
	// Window is how far back, from now, minutes take live counters.
	// Default 5m.
	Window time.Duration
	// MaxRecords bounds the (agent epoch, campaign-minute) records held.
	// Default 100000.
	MaxRecords int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Logger receives the view's few logs.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults (Store and Out still to be set).
func DefaultConfig() Config {
	return Config{Window: 5 * time.Minute, MaxRecords: 100000, Now: time.Now, Logger: slog.Default()}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Store == nil || c.Out == nil:
		return errConfig("Store and Out are required")
	case c.Window < time.Minute:
		return errConfig("Window below one minute")
	case c.MaxRecords < 1:
		return errConfig("MaxRecords below 1")
	}
	return nil
}

type errConfig string

func (e errConfig) Error() string { return "liveview: " + string(e) }

// Outcomes of live records, the label of tally_aggregator_live_records_total.
const (
	OutcomeApplied  = "applied"  // newer than what the view held
	OutcomeRepeated = "repeated" // a sequence the view has seen or passed
	OutcomeForeign  = "foreign"  // a campaign another node owns
	OutcomeStale    = "stale"    // a minute outside the window
	OutcomeFull     = "full"     // MaxRecords reached
)

type record struct {
	seq uint64
	c   wire.LiveCounters
	at  time.Time
	ttl time.Duration
}

// base is a campaign-minute's figure being built, money in micro-units
// so differences add exactly.
type base struct {
	k                       kpi.KPIs
	valueMicros, costMicros int64
}

// View is the live overlay of one node. It implements live.Publisher (the
// writer publishes durable updates through it) and takes live messages
// with HandleLive. Safe for concurrent use.
type View struct {
	cfg Config

	mu      sync.Mutex
	records map[merge.CampaignMinute]map[merge.AgentEpoch]*record
	n       int
	shown   map[merge.CampaignMinute]bool // last published provisional
	epochs  map[string]uint32             // agent → latest epoch heard
	fullLog time.Time                     // when "full" was last logged

	outcomes    *prometheus.CounterVec
	provisional prometheus.Counter
	expired     prometheus.Counter
}

// New returns a View registering its metrics with reg (may be nil).
func New(cfg Config, reg prometheus.Registerer) (*View, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &View{cfg: cfg, records: map[merge.CampaignMinute]map[merge.AgentEpoch]*record{},
		shown: map[merge.CampaignMinute]bool{}, epochs: map[string]uint32{}}
	v.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_live_records_total",
		Help: "Agents' live campaign-minute records, by outcome (applied, repeated, foreign, stale, full)."}, []string{"outcome"})
	for _, o := range []string{OutcomeApplied, OutcomeRepeated, OutcomeForeign, OutcomeStale, OutcomeFull} {
		v.outcomes.WithLabelValues(o)
	}
	v.provisional = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_live_provisional_updates_total",
		Help: "Campaign-minute updates published with live counters no flush has confirmed yet."})
	v.expired = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_live_records_expired_total",
		Help: "Live records dropped because no flush confirmed them in time."})
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_live_records",
		Help: "Live records (agent epoch × campaign-minute) the view holds."}, func() float64 {
		v.mu.Lock()
		defer v.mu.Unlock()
		return float64(v.n)
	})
	if reg != nil {
		reg.MustRegister(v.outcomes, v.provisional, v.expired, held)
	}
	return v, nil
}

// HandleLive takes one live message of agent and publishes the
// campaign-minutes it changed.
func (v *View) HandleLive(agent string, m *wire.Live) {
	now := v.cfg.Now()
	cutoff, ahead := v.cutoff(now), now.Add(2*time.Minute).Unix()
	ttl := max(2*m.Flush+10*time.Second, 15*time.Second)
	ae := merge.AgentEpoch{Agent: agent, Epoch: m.Epoch}
	var counts [5]int
	const (
		applied = iota
		repeated
		foreign
		stale
		full
	)
	v.mu.Lock()
	defer v.mu.Unlock()
	var touched []merge.CampaignMinute
	switch last := v.epochs[agent]; {
	case m.Epoch < last:
		// A stream of the agent's previous process: what it took and
		// did not flush is replayed under the new epoch, or lost.
		v.outcomes.WithLabelValues(OutcomeRepeated).Add(float64(len(m.Records)))
		return
	case m.Epoch > last:
		v.epochs[agent] = m.Epoch
		touched = v.dropEpochsLocked(agent, m.Epoch)
	}
	for _, r := range m.Records {
		cm := merge.CampaignMinute{Campaign: r.Campaign, Minute: r.Minute}
		switch {
		case r.Minute < cutoff || r.Minute > ahead:
			counts[stale]++
			continue
		case v.cfg.Owns != nil && !v.cfg.Owns(r.Campaign):
			counts[foreign]++
			continue
		}
		byAgent := v.records[cm]
		rec := byAgent[ae]
		switch {
		case rec != nil && m.Seq <= rec.seq:
			counts[repeated]++
			continue
		case rec == nil && v.n >= v.cfg.MaxRecords:
			counts[full]++
			continue
		case rec == nil:
			if byAgent == nil {
				byAgent = map[merge.AgentEpoch]*record{}
				v.records[cm] = byAgent
			}
			rec = &record{}
			byAgent[ae] = rec
			v.n++
		}
		rec.seq, rec.c, rec.at, rec.ttl = m.Seq, r.Counters, now, min(ttl, v.cfg.Window)
		counts[applied]++
		touched = append(touched, cm)
	}
	for i, o := range []string{OutcomeApplied, OutcomeRepeated, OutcomeForeign, OutcomeStale, OutcomeFull} {
		if counts[i] > 0 {
			v.outcomes.WithLabelValues(o).Add(float64(counts[i]))
		}
	}
	if counts[full] > 0 && now.Sub(v.fullLog) >= time.Minute {
		v.fullLog = now // once a minute at most; the metric counts them all
		v.cfg.Logger.Warn("live view full; live counters of new campaign-minutes wait for the flush", "reason", "live_view_full",
			"max_records", v.cfg.MaxRecords, "dropped", counts[full])
	}
	v.publishLocked(touched, nil)
}

// dropEpochsLocked drops the agent's live records of epochs before
// epoch: the agent restarted, and its earlier process's unflushed events
// come again under the new epoch (replayed from its journal) or not at
// all. It returns the campaign-minutes to publish again.
func (v *View) dropEpochsLocked(agent string, epoch uint32) []merge.CampaignMinute {
	var touched []merge.CampaignMinute
	for cm, byAgent := range v.records {
		for ae := range byAgent {
			if ae.Agent == agent && ae.Epoch < epoch {
				delete(byAgent, ae)
				v.n--
				touched = append(touched, cm)
			}
		}
		if len(byAgent) == 0 {
			delete(v.records, cm)
		}
	}
	return touched
}

// Publish takes the durable updates of a write round (live.Publisher)
// and publishes the figures of their campaign-minutes as the store holds
// them now, with the live counters no flush has confirmed laid over.
// Minutes older than the window pass through as they are.
func (v *View) Publish(us []live.Update) {
	if len(us) == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cutoff := v.cutoff(v.cfg.Now())
	var cms []merge.CampaignMinute
	var through []live.Update
	for _, u := range us {
		if u.Minute < cutoff {
			through = append(through, u)
			continue
		}
		cms = append(cms, merge.CampaignMinute{Campaign: u.Campaign, Minute: u.Minute})
	}
	v.publishLocked(cms, through)
}

// Expire drops live records no flush confirmed in time and the figures of
// minutes older than the window, and publishes what changed. Run calls
// it every second.
func (v *View) Expire() {
	now := v.cfg.Now()
	cutoff := v.cutoff(now)
	v.mu.Lock()
	defer v.mu.Unlock()
	var touched []merge.CampaignMinute
	for cm, byAgent := range v.records {
		for ae, rec := range byAgent {
			if cm.Minute >= cutoff && now.Sub(rec.at) <= rec.ttl {
				continue
			}
			delete(byAgent, ae)
			v.n--
			v.expired.Inc()
			if cm.Minute >= cutoff && v.shown[cm] {
				touched = append(touched, cm)
			}
		}
		if len(byAgent) == 0 {
			delete(v.records, cm)
		}
	}
	for cm := range v.shown {
		if cm.Minute < cutoff {
			delete(v.shown, cm)
		}
	}
	v.publishLocked(touched, nil)
}

// Run calls Expire every second until stop is closed.
func (v *View) Run(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			v.Expire()
		}
	}
}

func (v *View) cutoff(now time.Time) int64 {
	c := now.Add(-v.cfg.Window).Unix()
	return c - c%60
}

// publishLocked publishes the figures of cms, each what the store holds
// with the live counters laid over it, and through as they are.
func (v *View) publishLocked(cms []merge.CampaignMinute, through []live.Update) {
	if len(cms) == 0 && len(through) == 0 {
		return
	}
	pending := make(map[merge.CampaignMinute]bool, len(cms))
	uniq := cms[:0:0]
	for _, cm := range cms {
		if pending[cm] {
			continue
		}
		if v.cfg.Owns != nil && !v.cfg.Owns(cm.Campaign) {
			// Ownership moved: the new owner publishes this campaign
			// (this node may no longer hold its minutes at all).
			continue
		}
		pending[cm] = true
		uniq = append(uniq, cm)
	}
	out := through
	err := v.cfg.Store.CampaignLive(uniq, func(cm merge.CampaignMinute, series []sketch.Minute, uniques uint64,
		durable map[merge.AgentEpoch]wire.LiveCounters) {
		delete(pending, cm)
		acc := kpi.Accumulator{SkipUniques: true}
		for _, m := range series {
			_ = acc.Add(m) // cannot fail without uniques
		}
		k, _ := acc.Result()
		k.Uniques = uniques
		b := baseOf(k)
		provisional := false
		for ae, rec := range v.records[cm] {
			d := durable[ae]
			if rec.c.Events() <= d.Events() {
				continue // the flush has landed: it wins
			}
			provisional = true
			ahead := rec.c
			ahead.Sub(d)
			b.add(ahead)
		}
		out = append(out, v.update(cm, b, provisional))
	})
	if err != nil {
		v.cfg.Logger.Error("cannot read the durable view for live counters", "reason", "live_view_failed", "err", err)
		return
	}
	// A campaign-minute the store holds nothing of yet: every live
	// record of it is ahead of nothing.
	for _, cm := range uniq {
		if !pending[cm] {
			continue
		}
		var b base
		for _, rec := range v.records[cm] {
			b.add(rec.c)
		}
		out = append(out, v.update(cm, b, len(v.records[cm]) > 0))
	}
	for _, u := range out[len(through):] {
		v.shown[merge.CampaignMinute{Campaign: u.Campaign, Minute: u.Minute}] = u.Provisional
		if u.Provisional {
			v.provisional.Inc()
		}
	}
	if len(out) > 0 {
		v.cfg.Out.Publish(out)
	}
}

func (v *View) update(cm merge.CampaignMinute, b base, provisional bool) live.Update {
	k := b.k
	k.Revenue, k.Cost = sketch.FromMicros(b.valueMicros), sketch.FromMicros(b.costMicros)
	if provisional {
		k.SetRatios()
	}
	return live.Update{Campaign: cm.Campaign, Minute: cm.Minute, KPIs: k, Provisional: provisional}
}

func baseOf(k kpi.KPIs) base {
	return base{k: k, valueMicros: toMicros(k.Revenue), costMicros: toMicros(k.Cost)}
}

func toMicros(f float64) int64 { return int64(math.Round(f * sketch.MicrosPerUnit)) }

// add adds the counters of events the durable figure does not hold yet.
// A count that would fall below zero (the durable figure of some series
// was cut after the live message, of others before) stays at zero.
func (b *base) add(d wire.LiveCounters) {
	b.k.Impressions = addCount(b.k.Impressions, d.Impressions)
	b.k.Clicks = addCount(b.k.Clicks, d.Clicks)
	b.k.Conversions = addCount(b.k.Conversions, d.Conversions)
	b.k.Pageviews = addCount(b.k.Pageviews, d.Pageviews)
	b.k.BotsFiltered = addCount(b.k.BotsFiltered, d.Bots)
	b.valueMicros += d.ValueMicros
	b.costMicros += d.CostMicros
}

// addCount adds a difference held in a uint64 (two's complement when
// negative), stopping at zero.
func addCount(v, d uint64) uint64 {
	s := int64(v) + int64(d)
	if s < 0 {
		return 0
	}
	return uint64(s)
}
