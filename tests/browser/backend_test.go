package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// Roles of the API contract.
const (
	roleAdmin   = "admin"
	roleAnalyst = "analyst"
	roleViewer  = "viewer"
)

// backend is what the scenarios run against: something that serves the
// dashboard and the /api/v1 contract at URL(), knows a token per role,
// and can take in traffic. The fake (fakeBackend) implements it today;
// a backend of real aggregator + agent processes over InfluxDB is the
// same interface, so switching the scenarios over is one constructor.
type backend interface {
	// URL is the base URL of the node serving the dashboard, no trailing /.
	URL() string
	// Token returns a bearer token of the role.
	Token(role string) string
	// ViewerCampaigns are the campaigns Token(roleViewer) is scoped to.
	ViewerCampaigns() []string
	// Campaigns are campaigns with traffic in the live window.
	Campaigns() []string
	// SendClicks makes n clicks (and 10n impressions) of campaign happen
	// now. A real backend posts them to an agent's /v1/events.
	SendClicks(ctx context.Context, campaign string, n int) error
}

// streamBreaker is a backend whose live stream alone a test can take
// down and bring back.
type streamBreaker interface {
	SetStreamDown(down bool)
	// ResumeIDs are the Last-Event-ID headers of stream reconnects.
	ResumeIDs() []string
}

// nodeBreaker is a backend whose node a test can take down (it stops
// answering at all) and bring back.
type nodeBreaker interface {
	SetNodeDown(t testing.TB, down bool)
}

// requestFailer is a backend that can make single requests fail while
// the rest of the API answers.
type requestFailer interface {
	FailRequests(path string, n int)
}

// fakeBackend serves the fake API (fakeapi_test.go).
type fakeBackend struct{ f *fakeAPI }

func newFakeBackend(t testing.TB, opts fakeOptions) *fakeBackend {
	f := newFakeAPI(opts)
	t.Cleanup(f.Close)
	return &fakeBackend{f}
}

func (b *fakeBackend) URL() string { return b.f.srv.URL }

func (b *fakeBackend) Token(role string) string {
	switch role {
	case roleAdmin:
		return fakeAdminToken
	case roleAnalyst:
		return fakeAnalystToken
	case roleViewer:
		return fakeViewerToken
	}
	panic("unknown role " + role)
}

func (b *fakeBackend) ViewerCampaigns() []string { return b.f.tokens[fakeViewerToken].Campaigns }
func (b *fakeBackend) Campaigns() []string       { return b.f.campaigns }

func (b *fakeBackend) SendClicks(ctx context.Context, campaign string, n int) error {
	b.f.add(campaign, dims{"google", "cpc", "eu", "DE", "desktop"}, counters{Clicks: uint64(n), Impressions: 10 * uint64(n)})
	return nil
}

func (b *fakeBackend) SetStreamDown(down bool) { b.f.setStreamDown(down) }

// SetProvisional marks the current minute of campaign provisional on the
// stream, or not.
func (b *fakeBackend) SetProvisional(campaign string, on bool) { b.f.setProvisional(campaign, on) }
func (b *fakeBackend) ResumeIDs() []string                     { return b.f.resumeIDs() }

func (b *fakeBackend) SetNodeDown(_ testing.TB, down bool) { b.f.setNodeDown(down) }

func (b *fakeBackend) FailRequests(path string, n int) { b.f.failRequests(path, n) }

// apiGet reads an /api/v1 route with the role's token into out: the
// ground truth the page's numbers are checked against.
func apiGet(t testing.TB, b backend, role, path string, params url.Values, out any) {
	t.Helper()
	// Generous: on a loaded machine one query of a real node can take
	// seconds; the scenario's waits bound the time, not this.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", b.URL()+"/api/v1/"+path+"?"+params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.Token(role))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s?%s: %s", path, params.Encode(), resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
}

// kpiSet is the part of the KPIs object the checks read.
type kpiSet struct {
	Impressions float64 `json:"impressions"`
	Clicks      float64 `json:"clicks"`
	Conversions float64 `json:"conversions"`
	Revenue     float64 `json:"revenue"`
	Cost        float64 `json:"cost"`
}

type campaignsBody struct {
	Campaigns []struct {
		Campaign string `json:"campaign"`
		KPIs     kpiSet `json:"kpis"`
	} `json:"campaigns"`
}

// truthClicks adds up the clicks of the given campaigns (all visible to
// role if nil) over window, from the API.
func truthClicks(t testing.TB, b backend, role, window string, campaigns []string) float64 {
	t.Helper()
	var body campaignsBody
	apiGet(t, b, role, "campaigns", url.Values{"window": {window}}, &body)
	want := map[string]bool{}
	for _, c := range campaigns {
		want[c] = true
	}
	sum := 0.0
	for _, c := range body.Campaigns {
		if campaigns == nil || want[c.Campaign] {
			sum += c.KPIs.Clicks
		}
	}
	return sum
}

// truthTotal is the API's KPI of every campaign the role sees together
// (uniques merged, not summed) over window.
func truthTotal(t testing.TB, b backend, role, window, kpi string) func() float64 {
	return func() float64 {
		var body struct {
			Total struct {
				KPIs map[string]float64 `json:"kpis"`
			} `json:"total"`
		}
		apiGet(t, b, role, "campaigns", url.Values{"window": {window}}, &body)
		return body.Total.KPIs[kpi]
	}
}

func sameNumber(got, want float64) error {
	if d := got - want; d > 1e-6*max(1, want) || -d > 1e-6*max(1, want) {
		return fmt.Errorf("shows %v, API says %v", got, want)
	}
	return nil
}
