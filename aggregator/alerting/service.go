package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/forecast"
	"github.com/tally-edge/tally/aggregator/influx"
)

// Reader is what the service reads from storage (influx.Reader).
type Reader interface {
	LoadAlerts(ctx context.Context, q influx.AlertQuery) ([]influx.StoredAlert, error)
	CampaignSteps(ctx context.Context, campaigns []string, from, to time.Time, every time.Duration) ([]influx.StepTotals, error)
}

// Service answers the API's questions about alerts, alerting objects and
// forecasts, on any node, from storage: what the owners decided is in
// InfluxDB, so every node answers alike. Its methods are the API's (and
// any other front end's) to call; it is safe for concurrent use.
type Service struct {
	reader   Reader
	objects  *Objects
	forecast forecast.Config
	now      func() time.Time

	mu    sync.Mutex
	cache map[string]cachedForecast
}

type cachedForecast struct {
	at time.Time
	f  Forecast
}

// forecastCacheTTL is how long a campaign's forecast is reused: it reads
// four weeks of storage, and it changes little within a minute.
const forecastCacheTTL = 30 * time.Second

// maxForecastCache bounds the cached forecasts.
const maxForecastCache = 1000

// NewService returns the read side over reader and objects.
func NewService(reader Reader, objects *Objects, fc forecast.Config) *Service {
	return &Service{reader: reader, objects: objects, forecast: fc, now: time.Now, cache: map[string]cachedForecast{}}
}

// AlertQuery selects alerts for a list.
type AlertQuery struct {
	// Campaigns the caller may see and asked for; All for every campaign
	// (admins and analysts).
	Campaigns []string
	All       bool
	// From and To bound the alerts' start; zero To is now, zero From a
	// day before To.
	From, To time.Time
	// State keeps only firing ("firing") or resolved ("resolved") alerts;
	// "" keeps both.
	State string
	// Limit bounds the answer (newest first). Default and most 1000.
	Limit int
}

// AlertView is one alert as a list shows it: its latest transition.
type AlertView struct {
	alert.Alert
	// Delivered is set once every notification target was done with the
	// latest transition.
	Delivered bool `json:"delivered"`
}

// AlertList is the answer of Alerts.
type AlertList struct {
	From   time.Time   `json:"from"`
	To     time.Time   `json:"to"`
	Alerts []AlertView `json:"alerts"`
	// Firing counts the alerts firing among them.
	Firing int `json:"firing"`
	// Truncated is set when more alerts matched than the limit.
	Truncated bool `json:"truncated,omitempty"`
}

// MaxAlertSpan bounds the start times one list covers.
const MaxAlertSpan = 31 * 24 * time.Hour

// Alerts lists the alerts that started in the query's range, newest
// first, each as its latest transition (resolved wins over firing).
func (s *Service) Alerts(ctx context.Context, q AlertQuery) (AlertList, error) {
	if q.To.IsZero() {
		q.To = s.now().Add(time.Minute)
	}
	if q.From.IsZero() {
		q.From = q.To.Add(-24 * time.Hour)
	}
	if !q.From.Before(q.To) || q.To.Sub(q.From) > MaxAlertSpan {
		return AlertList{}, fmt.Errorf("from must be before to, at most %v apart", MaxAlertSpan)
	}
	if q.Limit <= 0 || q.Limit > 1000 {
		q.Limit = 1000
	}
	out := AlertList{From: q.From.UTC(), To: q.To.UTC(), Alerts: []AlertView{}}
	if !q.All && len(q.Campaigns) == 0 {
		return out, nil
	}
	stored, err := s.reader.LoadAlerts(ctx, influx.AlertQuery{Campaigns: q.Campaigns, AllCampaigns: q.All, From: q.From, To: q.To})
	if err != nil {
		return AlertList{}, err
	}
	latest := map[string]AlertView{}
	for _, sa := range stored {
		var a alert.Alert
		if err := json.Unmarshal(sa.Doc, &a); err != nil || a.ID == "" {
			continue
		}
		if cur, ok := latest[a.ID]; ok && cur.State == alert.StateResolved {
			continue
		}
		latest[a.ID] = AlertView{Alert: a, Delivered: sa.Delivered}
	}
	for _, v := range latest {
		if q.State != "" && v.State != q.State {
			continue
		}
		out.Alerts = append(out.Alerts, v)
	}
	slices.SortFunc(out.Alerts, func(a, b AlertView) int {
		if c := b.Start.Compare(a.Start); c != 0 {
			return c
		}
		return compareStrings(a.ID, b.ID)
	})
	if len(out.Alerts) > q.Limit {
		out.Alerts, out.Truncated = out.Alerts[:q.Limit], true
	}
	for _, a := range out.Alerts {
		if a.State == alert.StateFiring {
			out.Firing++
		}
	}
	return out, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ObjectView is one rule, budget or silence with where it comes from.
type ObjectView[T any] struct {
	Object T      `json:"object"`
	Source string `json:"source"`
}

// ObjectsView is every alerting object in force.
type ObjectsView struct {
	Rules    []ObjectView[alert.Rule]    `json:"rules"`
	Budgets  []ObjectView[alert.Budget]  `json:"budgets"`
	Silences []ObjectView[alert.Silence] `json:"silences"`
}

// Objects lists the rules, budgets and silences in force (ended silences
// left out).
func (s *Service) Objects() ObjectsView {
	cfg := s.objects.Current()
	v := ObjectsView{Rules: []ObjectView[alert.Rule]{}, Budgets: []ObjectView[alert.Budget]{}, Silences: []ObjectView[alert.Silence]{}}
	for _, r := range cfg.Rules {
		v.Rules = append(v.Rules, ObjectView[alert.Rule]{r, s.objects.Source(KindRule, r.Name)})
	}
	for _, b := range cfg.Budgets {
		v.Budgets = append(v.Budgets, ObjectView[alert.Budget]{b, s.objects.Source(KindBudget, b.Campaign)})
	}
	for _, x := range cfg.Silences {
		v.Silences = append(v.Silences, ObjectView[alert.Silence]{x, s.objects.Source(KindSilence, x.ID)})
	}
	return v
}

// PutObject stores a rule, budget or silence (an *ObjectError says why
// not, with the HTTP status).
func (s *Service) PutObject(ctx context.Context, obj any, by string) error {
	return s.objects.Put(ctx, obj, by)
}

// DeleteObject deletes one (kind KindRule, KindBudget or KindSilence).
func (s *Service) DeleteObject(ctx context.Context, kind, name, by string) error {
	switch kind {
	case KindRule, KindBudget, KindSilence:
	default:
		return &ObjectError{Status: 400, Msg: fmt.Sprintf("kind %q: want rule, budget or silence", kind)}
	}
	return s.objects.Delete(ctx, kind, name, by)
}

// Forecast is the answer of GET /api/v1/forecast.
type Forecast struct {
	Campaign string `json:"campaign"`
	// TimeZone is the campaign's day (its budget's time zone).
	TimeZone string       `json:"time_zone"`
	Day      forecast.Day `json:"day"`
	// Budget and Pacing are set when the campaign has a budget.
	Budget *alert.Budget    `json:"budget,omitempty"`
	Pacing *forecast.Pacing `json:"pacing,omitempty"`
	// Summary says in one sentence how the day is going ("at this pace
	// the daily budget runs out at 15:40").
	Summary string `json:"summary"`
}

// ErrNoData is returned by Forecast for a campaign with nothing stored.
var ErrNoData = errors.New("the campaign has no data in the forecast's history")

// Forecast projects the campaign's day (and, with a budget, its pacing and
// flight) at now, from the minutes stored: the same forecaster the owner
// runs, rebuilt from InfluxDB on whichever node asks. Answers are reused
// for 30 seconds.
func (s *Service) Forecast(ctx context.Context, campaign string, now time.Time) (Forecast, error) {
	s.mu.Lock()
	if c, ok := s.cache[campaign]; ok && now.Sub(c.at) < forecastCacheTTL && !now.Before(c.at) {
		s.mu.Unlock()
		return c.f, nil
	}
	s.mu.Unlock()
	cfg := s.forecast
	var budget *alert.Budget
	if b, ok := s.objects.Current().BudgetFor(campaign); ok {
		budget = &b
		if b.TimeZone != "" {
			cfg.TimeZone = b.TimeZone
		}
	}
	fc, err := forecast.New(cfg)
	if err != nil {
		return Forecast{}, err
	}
	end := now.Truncate(time.Minute)
	from := end.Add(-time.Duration(cfg.HistoryDays+1) * 24 * time.Hour).Truncate(cfg.Slot)
	steps, err := s.reader.CampaignSteps(ctx, []string{campaign}, from, end, cfg.Slot)
	if err != nil {
		return Forecast{}, err
	}
	if len(steps) == 0 {
		return Forecast{}, ErrNoData
	}
	for _, st := range steps {
		if err := fc.Observe(st.Start, StepOfTotals(st).Amounts()); err != nil {
			return Forecast{}, err
		}
	}
	f := Forecast{Campaign: campaign, TimeZone: cfg.TimeZone, Budget: budget}
	if f.Day, err = fc.Today(now); err != nil {
		return Forecast{}, err
	}
	if budget != nil {
		p, err := fc.Pacing(now, budget.ForecastBudget())
		if err != nil {
			return Forecast{}, err
		}
		f.Pacing = &p
	}
	f.Summary = summary(f)
	s.mu.Lock()
	if len(s.cache) >= maxForecastCache {
		clear(s.cache)
	}
	s.cache[campaign] = cachedForecast{at: now, f: f}
	s.mu.Unlock()
	return f, nil
}

// summary is the forecast in one sentence.
func summary(f Forecast) string {
	loc, err := time.LoadLocation(f.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	d := f.Day
	interval := money(d.Spend.Low) + "–" + money(d.Spend.High)
	if math.IsInf(d.Spend.High, 1) {
		interval = "at least " + money(d.Spend.Low) // no typical day yet bounds it
	}
	s := fmt.Sprintf("%s: %s spent so far today; projected %s by the end of the day (%s), %s conversions",
		f.Campaign, money(d.Spend.Actual), money(d.Spend.Projected), interval, money(d.Conversions.Projected))
	if p := f.Pacing; p != nil && p.DailyBudget > 0 {
		switch {
		case p.DailyExhausted && p.DailyRunsOutAt != nil:
			s += fmt.Sprintf("; the daily budget of %s ran out at %s", money(p.DailyBudget), p.DailyRunsOutAt.In(loc).Format("15:04"))
		case p.DailyRunsOutAt != nil:
			s += fmt.Sprintf("; at this pace the budget runs out at %s", p.DailyRunsOutAt.In(loc).Format("15:04"))
		default:
			s += fmt.Sprintf("; %.0f%% of the daily budget of %s spent, on pace to stay within it", 100*p.BudgetShare, money(p.DailyBudget))
		}
	}
	return s
}

func money(x float64) string {
	if x == float64(int64(x)) {
		return fmt.Sprintf("%d", int64(x))
	}
	return fmt.Sprintf("%.2f", x)
}
