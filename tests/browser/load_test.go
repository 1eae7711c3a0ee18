package browser

import (
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// frameStats are the page's animation-frame intervals and render costs.
type frameStats struct {
	Intervals    []float64 `json:"intervals"`
	Renders      int       `json:"renders"`
	RenderMsMax  float64   `json:"renderMsMax"`
	RenderMsMean float64   `json:"renderMsMean"`
	FitMsMean    float64   `json:"fitMsMean"`
	Messages     int       `json:"messages"`
}

// TestDashboardManyCampaigns runs the live view with 500 campaigns that
// all change every second, measures the page's frame intervals with
// requestAnimationFrame and logs them. It asserts only loosely (no frame
// gap of seconds, the table keeps up); the figures are for reading.
func TestDashboardManyCampaigns(t *testing.T) {
	browserContext(t)
	const campaigns, seconds = 500, 12
	b := newFakeBackend(t, fakeOptions{Campaigns: campaigns, HistoryDays: 0, Seed: 2})
	tb := signInByLink(t, b, roleAdmin)
	tb.waitJS("500 rows", `document.querySelectorAll("#campaigns tbody tr").length === 500`, 20*time.Second)
	tb.waitJS("the live state", `document.getElementById("status").textContent === "live"`, 10*time.Second)

	eval[bool](tb, `(() => {
		window.frameTimes = [];
		window.statsAtStart = Object.assign({}, window.tallyStats);
		const loop = (t) => { window.frameTimes.push(t); if (window.frameTimes.length < 100000) requestAnimationFrame(loop); };
		requestAnimationFrame(loop);
		return true;
	})()`)

	// Every campaign gets traffic every second, for a bounded time.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(3, 4))
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for range seconds {
			for _, c := range b.Campaigns() {
				b.SendClicks(tb.ctx, c, 1+rng.IntN(3))
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	// Meanwhile a user sorts and filters.
	time.Sleep(3 * time.Second)
	tb.do("sort by impressions", press(`#campaigns th[data-sort=impressions]`))
	time.Sleep(2 * time.Second)
	tb.do("filter", chromedp.SendKeys(chromedp.CSS("#filter"), "_1"))
	tb.waitJS("the filtered table", `document.querySelectorAll("#campaigns tbody tr:not([hidden])").length === 100`, 5*time.Second)
	time.Sleep(2 * time.Second)
	tb.do("pick a campaign", press(`#campaigns tbody tr:not([hidden])`))
	wg.Wait()

	st := eval[frameStats](tb, `(() => {
		const f = window.frameTimes, s = window.tallyStats, s0 = window.statsAtStart;
		const intervals = [];
		for (let i = 1; i < f.length; i++) intervals.push(f[i] - f[i-1]);
		const renders = s.renders - s0.renders;
		return {intervals, renders, renderMsMax: s.renderMsMax,
			renderMsMean: renders ? (s.renderMsTotal - s0.renderMsTotal) / renders : 0,
			fitMsMean: renders ? (s.fitMsTotal - s0.fitMsTotal) / renders : 0,
			messages: s.streamMessages - s0.streamMessages};
	})()`)
	tb.shot("500")
	iv := st.Intervals
	if len(iv) == 0 {
		t.Fatal("no animation frames at all")
	}
	sort.Float64s(iv)
	pct := func(p float64) float64 { return iv[min(len(iv)-1, int(p*float64(len(iv))))] }
	t.Logf("500 campaigns, %d s of one update/s: %d frames, frame interval p50 %.1f ms, p99 %.1f ms, max %.1f ms; %d renders (mean %.2f ms, of which fitting tile numbers %.2f ms; max %.2f ms) for %d stream messages",
		seconds, len(iv)+1, pct(0.5), pct(0.99), iv[len(iv)-1], st.Renders, st.RenderMsMean, st.FitMsMean, st.RenderMsMax, st.Messages)

	// Loose: the page never froze for seconds, and it kept up.
	if iv[len(iv)-1] > 2000 {
		t.Errorf("the page froze for %.0f ms", iv[len(iv)-1])
	}
	if st.Messages < seconds/2 {
		t.Errorf("only %d stream messages in %d s", st.Messages, seconds)
	}
	tb.waitTile("clicks", clicksOf(t, b, "60m", []string{eval[string](tb, `document.getElementById("campaign").value`)}), 0, 10*time.Second)
}
