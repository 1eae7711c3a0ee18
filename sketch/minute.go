package sketch

// Minute is the merged state of one series in one minute: what the
// aggregator's merge store produces, InfluxDB's "tally" measurement
// stores, and KPIs are computed from. It is the one record type those
// three share, so a minute never needs converting on its way from the
// merge to storage, the live view or an API answer.
//
// State is often shared with the store or a reader that produced it:
// read it, never modify it, unless you built it yourself.
type Minute struct {
	Series Series
	// Minute is the unix time in seconds of the start of the minute.
	Minute int64
	State  *State
	// Ledger, when set, lists the contributions State merges (their
	// identity, version, counters and quantiles: a StoredContribsV1
	// value without HyperLogLogs), written with the merged minute so
	// that later data for the minute merges exactly once the
	// contribution points are gone. The merge store sets it for the
	// minutes it writes; points read back for answers leave it nil.
	Ledger []byte
}

// Key returns the series-minute the Minute is the state of.
func (m Minute) Key() Key { return Key{Series: m.Series, Minute: m.Minute} }
