package live

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/kpi"
)

// BenchmarkFanout1000 streams to 1,000 concurrent SSE clients on one hub
// over loopback, publishing once a second (as the merge pipeline does)
// 10 or 100 changed campaign-minutes (about 2.5 or 25 KB a message);
// each iteration is one publish. It reports:
//
//   - cpu_cores: process CPU time per second of wall clock while
//     streaming (server and the 1,000 clients together: one process);
//   - idle_heap_MB after a GC with every client connected, heap_MB and
//     rss_MB the most seen while streaming (garbage not yet collected
//     included; server and clients: each client holds a 4 KB buffer);
//   - lag_p50_ms and lag_p99_ms: publish to client receipt;
//   - msgs/s delivered and drops (must stay 0).
//
// go test -run='^$' -bench=Fanout1000 -benchtime=20x ./aggregator/live/
func BenchmarkFanout1000(b *testing.B) {
	for _, campaigns := range []int{10, 100} {
		b.Run(fmt.Sprintf("updates=%d", campaigns), func(b *testing.B) { fanout(b, 1000, campaigns) })
	}
}

func fanout(b *testing.B, clients, campaigns int) {
	h := NewHub(HubConfig{}, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Serve(w, r, func(string) bool { return true }, Status{Node: "bench", Members: 1})
	}))
	defer srv.Close()
	defer h.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	var (
		mu       sync.Mutex
		received = map[uint64][]time.Time{} // message id → receipt times
		wg       sync.WaitGroup
	)
	for i := 0; i < clients; i++ {
		wg.Go(func() {
			resp, err := hc.Get(srv.URL)
			if err != nil {
				b.Error(err)
				return
			}
			defer resp.Body.Close()
			// A small buffer, as a browser's would be: the long data
			// lines are skipped, only event and id lines matter here.
			br := bufio.NewReaderSize(resp.Body, 4<<10)
			var name string
			var id uint64
			skipping := false
			for {
				line, err := br.ReadSlice('\n')
				if err == bufio.ErrBufferFull {
					skipping = true
					continue
				}
				if err != nil {
					return
				}
				if skipping {
					skipping = false
					continue
				}
				s := string(line[:len(line)-1])
				switch {
				case strings.HasPrefix(s, "event: "):
					name = s[7:]
				case strings.HasPrefix(s, "id: "):
					id, _ = strconv.ParseUint(s[4:], 10, 64)
				case s == "" && name == "minutes":
					now := time.Now()
					mu.Lock()
					received[id] = append(received[id], now)
					mu.Unlock()
					name = ""
				case s == "":
					name = ""
				}
			}
		})
	}
	for h.Subscribers() < clients {
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	idleHeapMB := float64(ms.HeapInuse) / (1 << 20)
	heapMB, rssMB := idleHeapMB, rssMiB()

	// heap_MB is the most seen during streaming, sampled at each publish.
	sampleHeap := func() {
		runtime.ReadMemStats(&ms)
		heapMB = max(heapMB, float64(ms.HeapInuse)/(1<<20))
		rssMB = max(rssMB, rssMiB())
	}
	published := map[uint64]time.Time{}
	minute := time.Now().Unix() / 60 * 60
	cpu0, wall0 := cpuTime(), time.Now()
	tick := time.NewTicker(time.Second) // the merge pipeline's cadence
	defer tick.Stop()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		<-tick.C
		us := make([]Update, campaigns)
		for j := range us {
			us[j] = Update{Campaign: fmt.Sprintf("campaign-%03d", j), Minute: minute,
				KPIs: kpi.KPIs{Impressions: uint64(1000*i + j), Clicks: uint64(i), CTR: 0.05, Revenue: float64(i) * 1.5}}
		}
		t := time.Now()
		h.Publish(us)
		h.mu.Lock()
		published[h.seq] = t
		h.mu.Unlock()
		time.Sleep(500 * time.Millisecond)
		sampleHeap()
	}
	time.Sleep(time.Second) // the last message's way to the clients
	b.StopTimer()
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	h.Close()
	srv.CloseClientConnections()
	wg.Wait()

	var lags []float64
	delivered := 0
	for id, times := range received {
		pub, ok := published[id]
		if !ok {
			continue
		}
		for _, t := range times {
			lags = append(lags, float64(t.Sub(pub).Microseconds())/1000)
		}
		delivered += len(times)
	}
	if len(lags) == 0 {
		b.Fatal("no message received")
	}
	slices.Sort(lags)
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu_cores")
	b.ReportMetric(idleHeapMB, "idle_heap_MB")
	b.ReportMetric(heapMB, "heap_MB")
	b.ReportMetric(rssMB, "rss_MB")
	b.ReportMetric(lags[len(lags)/2], "lag_p50_ms")
	b.ReportMetric(lags[len(lags)*99/100], "lag_p99_ms")
	b.ReportMetric(float64(delivered)/wall.Seconds(), "msgs/s")
	b.ReportMetric(float64(clients*b.N-delivered), "missed")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssMiB reads the resident set size from /proc (0 where there is none).
func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize()) / (1 << 20)
}
