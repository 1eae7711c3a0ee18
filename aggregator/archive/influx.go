package archive

import (
	"context"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/rollup"
)

// InfluxSource reads merged minutes from InfluxDB through the
// aggregator's reader: the archive's only tie to the storage schema.
type InfluxSource struct{ Reader *influx.Reader }

// EachMinute implements Source.
func (s InfluxSource) EachMinute(ctx context.Context, q Query, fn func(Minute) error) error {
	mq := influx.MinuteQuery{From: q.From, To: q.To, CountersOnly: q.CountersOnly}
	switch {
	case q.All:
		mq.AllCampaigns = true
	case q.Campaign == "":
		mq.Campaign = influx.NoneTag // stored for an empty campaign
	default:
		mq.Campaign = q.Campaign
	}
	return s.Reader.EachMinute(ctx, mq, fn)
}

// InfluxSink writes restored minutes to InfluxDB as merged points,
// marking their hours and days changed first so that the hourly and daily
// rollups are recomputed from them (rollup.MarkChanged).
type InfluxSink struct{ Writer *influx.Writer }

// WriteMinutes implements Sink.
func (s InfluxSink) WriteMinutes(ctx context.Context, minutes []Minute) error {
	if err := rollup.MarkChanged(ctx, s.Writer, minutes); err != nil {
		return err
	}
	return s.Writer.Write(ctx, minutes, nil)
}
