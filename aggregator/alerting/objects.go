package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/influx"
)

// Kinds of alerting objects.
const (
	KindRule    = "rule"
	KindBudget  = "budget"
	KindSilence = "silence"
)

// Where an object comes from.
const (
	SourceFile = "file" // the configuration file: read-only through the API
	SourceAPI  = "api"  // the admin API: stored in InfluxDB
)

// ObjectStorage keeps the objects edited through the API (influx.Writer
// and influx.Reader).
type ObjectStorage interface {
	WriteConfigDocs(ctx context.Context, docs []influx.ConfigDoc) error
	LoadConfigDocs(ctx context.Context, from, to time.Time) ([]influx.ConfigDoc, error)
}

// objectDoc is one stored version of an object: the document of
// tally_alert_config. Version orders the versions of one object (the
// nanosecond it was edited); a refresh writes a version again under a
// newer point time, so the version, not the point's time, says which is
// the latest.
type objectDoc struct {
	Version int64          `json:"version"`
	Deleted bool           `json:"deleted,omitempty"`
	By      string         `json:"by,omitempty"`
	Rule    *alert.Rule    `json:"rule,omitempty"`
	Budget  *alert.Budget  `json:"budget,omitempty"`
	Silence *alert.Silence `json:"silence,omitempty"`
}

type objectKey struct{ kind, name string }

// Objects are the rules, budgets and silences in force: those of the
// configuration file and those edited through the admin API.
//
// # Why InfluxDB, and how every node agrees
//
// Every node must judge its campaigns by the same rules, and an edit must
// survive any node, including all of them restarting: so the edits are
// stored where the data is, as versioned documents (one point per edit,
// tally_alert_config), and every node reads them back every ObjectsPoll.
// No node is special: an edit is written by whichever node the admin
// reached, applied there at once and on the others within a poll. Two
// edits of one object at once: the later version wins on every node (the
// versions are nanosecond times; equal ones are ordered by the document
// bytes). A deletion is a version too (a tombstone), so a node that missed
// it cannot bring the object back.
//
// The bucket's retention policy would in time drop the versions in force,
// so the node that keeps the objects (Refresh, one node at a time) writes
// every latest version again each ObjectsRefresh, under a new point time
// and the same version; a node reads only the last two refresh periods.
//
// Objects is safe for concurrent use.
type Objects struct {
	file    alert.Config
	storage ObjectStorage
	refresh time.Duration
	log     *slog.Logger
	now     func() time.Time

	mu       sync.RWMutex
	latest   map[objectKey]objectDoc
	merged   alert.Config
	source   map[objectKey]string
	readTo   time.Time // the point times up to which the storage was read
	fullRead time.Time // when the storage was last read in full
	version  uint64    // counts changes of merged
}

// Version changes whenever the objects in force do.
func (o *Objects) Version() uint64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.version
}

// NewObjects returns the objects of the file configuration; Poll adds the
// stored ones.
func NewObjects(file alert.Config, storage ObjectStorage, refresh time.Duration, logger *slog.Logger) (*Objects, error) {
	if err := file.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := &Objects{file: file, storage: storage, refresh: refresh, log: logger.With("component", "alert-objects"), now: time.Now,
		latest: map[objectKey]objectDoc{}}
	o.rebuildLocked()
	return o, nil
}

// Current returns the configuration in force: the file's objects and the
// API's, without the silences that ended.
func (o *Objects) Current() alert.Config {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.merged.Prune(o.now())
}

// Source says where an object comes from ("" when there is no such
// object).
func (o *Objects) Source(kind, name string) string {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.source[objectKey{kind, name}]
}

// rebuildLocked merges the file's objects with the API's live ones. The
// API never stores an object that clashes with the file (Put refuses it),
// so the union is valid; a stored object that clashes anyway (the file
// changed since) is left out and logged.
func (o *Objects) rebuildLocked() {
	cfg := alert.Config{Rules: slices.Clone(o.file.Rules), Budgets: slices.Clone(o.file.Budgets), Silences: slices.Clone(o.file.Silences)}
	src := map[objectKey]string{}
	for _, r := range cfg.Rules {
		src[objectKey{KindRule, r.Name}] = SourceFile
	}
	for _, b := range cfg.Budgets {
		src[objectKey{KindBudget, b.Campaign}] = SourceFile
	}
	for _, s := range cfg.Silences {
		src[objectKey{KindSilence, s.ID}] = SourceFile
	}
	keys := make([]objectKey, 0, len(o.latest))
	for k := range o.latest {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b objectKey) int { return strings.Compare(a.kind+"\x00"+a.name, b.kind+"\x00"+b.name) })
	for _, k := range keys {
		d := o.latest[k]
		if d.Deleted {
			continue
		}
		if src[k] == SourceFile {
			o.log.Warn("an object stored through the API has the name of one in the configuration file; the file's wins", "kind", k.kind, "name", k.name)
			continue
		}
		next := cfg
		switch {
		case d.Rule != nil:
			next.Rules = append(slices.Clone(cfg.Rules), *d.Rule)
		case d.Budget != nil:
			next.Budgets = append(slices.Clone(cfg.Budgets), *d.Budget)
		case d.Silence != nil:
			next.Silences = append(slices.Clone(cfg.Silences), *d.Silence)
		default:
			continue
		}
		if err := next.Validate(); err != nil {
			o.log.Warn("a stored alerting object is not valid with the others; left out", "kind", k.kind, "name", k.name, "err", err)
			continue
		}
		cfg = next
		src[k] = SourceAPI
	}
	o.merged, o.source = cfg, src
	o.version++
}

// newer reports whether version a of an object comes after b.
func newer(a, b objectDoc, araw, braw []byte) bool {
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	return bytes.Compare(araw, braw) > 0
}

// apply takes stored versions, keeping the latest of each object; it
// reports whether anything changed.
func (o *Objects) applyLocked(docs []influx.ConfigDoc) bool {
	changed := false
	raw := map[objectKey][]byte{}
	for _, d := range docs {
		var od objectDoc
		if err := json.Unmarshal(d.Doc, &od); err != nil {
			o.log.Warn("unreadable alerting object in storage; ignored", "kind", d.Kind, "name", d.Name, "err", err)
			continue
		}
		k := objectKey{d.Kind, d.Name}
		cur, ok := o.latest[k]
		if ok {
			curRaw, seen := raw[k]
			if !seen {
				curRaw, _ = json.Marshal(cur)
			}
			if !newer(od, cur, d.Doc, curRaw) {
				continue
			}
		}
		o.latest[k] = od
		raw[k] = d.Doc
		changed = true
	}
	return changed
}

// Poll reads what was stored since the last poll (everything of the last
// two refresh periods, every ten polls' worth of time or at the first)
// and applies it.
func (o *Objects) Poll(ctx context.Context, every time.Duration) error {
	if o.storage == nil {
		return nil
	}
	now := o.now()
	o.mu.RLock()
	from := o.readTo.Add(-time.Minute) // writes of other nodes in flight
	if o.fullRead.IsZero() || now.Sub(o.fullRead) > 10*every {
		from = now.Add(-2 * o.refresh)
	}
	o.mu.RUnlock()
	docs, err := o.storage.LoadConfigDocs(ctx, from, now.Add(time.Minute))
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if from.Equal(now.Add(-2 * o.refresh)) {
		o.fullRead = now
	}
	o.readTo = now
	if o.applyLocked(docs) {
		o.rebuildLocked()
	}
	return nil
}

// Refresh writes every latest version again under the present time (see
// Objects); the versions stay what they were.
func (o *Objects) Refresh(ctx context.Context) error {
	o.mu.RLock()
	now := o.now()
	var docs []influx.ConfigDoc
	for k, d := range o.latest {
		if d.Silence != nil && now.After(d.Silence.Ends) {
			continue // ended: nothing to keep in force
		}
		b, err := json.Marshal(d)
		if err != nil {
			o.mu.RUnlock()
			return err
		}
		docs = append(docs, influx.ConfigDoc{Kind: k.kind, Name: k.name, Written: now, Doc: b})
	}
	o.mu.RUnlock()
	return o.storage.WriteConfigDocs(ctx, docs)
}

// ObjectError is an edit the API refuses (400, 403, 404).
type ObjectError struct {
	// Status is the HTTP status the API answers with.
	Status int
	Msg    string
}

func (e *ObjectError) Error() string { return e.Msg }

// Put stores a new version of an object, after checking that the
// configuration with it stays valid and that it is not one of the file's.
// by names the admin (audited in the document).
func (o *Objects) Put(ctx context.Context, obj any, by string) error {
	d := objectDoc{By: by}
	var name, kind string
	switch v := obj.(type) {
	case alert.Rule:
		d.Rule, name, kind = &v, v.Name, KindRule
	case alert.Budget:
		d.Budget, name, kind = &v, v.Campaign, KindBudget
	case alert.Silence:
		if v.Starts.IsZero() {
			v.Starts = o.now().UTC().Truncate(time.Second)
		}
		if v.CreatedBy == "" {
			v.CreatedBy = by
		}
		d.Silence, name, kind = &v, v.ID, KindSilence
	default:
		return fmt.Errorf("alerting objects: %T is not a rule, budget or silence", obj)
	}
	return o.write(ctx, objectKey{kind, name}, d)
}

// Delete stores a tombstone for an object of the API.
func (o *Objects) Delete(ctx context.Context, kind, name, by string) error {
	return o.write(ctx, objectKey{kind, name}, objectDoc{Deleted: true, By: by})
}

func (o *Objects) write(ctx context.Context, k objectKey, d objectDoc) error {
	if o.storage == nil {
		return &ObjectError{Status: 503, Msg: "alerting objects cannot be edited: no storage"}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch src := o.source[k]; {
	case src == SourceFile:
		return &ObjectError{Status: 403, Msg: fmt.Sprintf("%s %q is defined in the configuration file; change it there", k.kind, k.name)}
	case d.Deleted && src == "":
		return &ObjectError{Status: 404, Msg: fmt.Sprintf("no %s %q", k.kind, k.name)}
	}
	if !d.Deleted {
		// The configuration with this object instead of its old version.
		next := alert.Config{}
		for _, r := range o.merged.Rules {
			if !(k.kind == KindRule && r.Name == k.name) {
				next.Rules = append(next.Rules, r)
			}
		}
		for _, b := range o.merged.Budgets {
			if !(k.kind == KindBudget && b.Campaign == k.name) {
				next.Budgets = append(next.Budgets, b)
			}
		}
		for _, s := range o.merged.Silences {
			if !(k.kind == KindSilence && s.ID == k.name) {
				next.Silences = append(next.Silences, s)
			}
		}
		switch {
		case d.Rule != nil:
			next.Rules = append(next.Rules, *d.Rule)
		case d.Budget != nil:
			next.Budgets = append(next.Budgets, *d.Budget)
		case d.Silence != nil:
			next.Silences = append(next.Silences, *d.Silence)
		}
		if err := next.Validate(); err != nil {
			return &ObjectError{Status: 400, Msg: err.Error()}
		}
	}
	now := o.now()
	d.Version = now.UnixNano()
	if cur, ok := o.latest[k]; ok && cur.Version >= d.Version {
		d.Version = cur.Version + 1
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if len(b) > influx.MaxStringField {
		return &ObjectError{Status: 400, Msg: "object too large"}
	}
	if err := o.storage.WriteConfigDocs(ctx, []influx.ConfigDoc{{Kind: k.kind, Name: k.name, Written: now, Doc: b}}); err != nil {
		return fmt.Errorf("store %s %q: %w", k.kind, k.name, err)
	}
	o.latest[k] = d
	o.rebuildLocked()
	return nil
}

// Run polls until ctx is done; when keeper says this node keeps the
// objects, it also refreshes them every refresh period.
func (o *Objects) Run(ctx context.Context, every time.Duration, keeper func() bool) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastRefresh time.Time
	failures := 0
	for {
		if err := o.Poll(ctx, every); err != nil && ctx.Err() == nil {
			if failures++; failures == 1 || failures%60 == 0 {
				o.log.Warn("cannot read alerting objects from InfluxDB; keeping the ones read before", "reason", "objects_read_failed", "err", err)
			}
		} else {
			failures = 0
		}
		if keeper != nil && keeper() && o.now().Sub(lastRefresh) >= o.refresh {
			if err := o.Refresh(ctx); err != nil && ctx.Err() == nil {
				o.log.Warn("cannot refresh alerting objects in InfluxDB; retrying", "reason", "objects_refresh_failed", "err", err)
			} else {
				lastRefresh = o.now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
