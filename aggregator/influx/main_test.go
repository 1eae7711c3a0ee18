package influx

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Two influxd serve every test of the package except the outage tests,
// which need servers of their own to stop: one as InfluxDB 1.8 ships
// (Flux off) and one with Flux on. Each test gets a fresh database, so
// tests do not see each other's points.
var shared struct {
	mu      sync.Mutex
	servers map[bool]*sharedServerState // by Flux on
	dbs     atomic.Int64
}

type sharedServerState struct {
	once sync.Once
	srv  *influxtest.Server
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, st := range shared.servers {
		if st.srv != nil {
			if err := st.srv.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "close shared influxd: %v\n", err)
				code = 1
			}
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// sharedServer launches the shared influxd with Flux on (the test
// configuration) on first use.
func sharedServer(tb testing.TB) *influxtest.Server { return sharedServerFlux(tb, true) }

// sharedServerFlux launches the shared influxd with Flux on or off on
// first use.
func sharedServerFlux(tb testing.TB, flux bool) *influxtest.Server {
	tb.Helper()
	shared.mu.Lock()
	if shared.servers == nil {
		shared.servers = map[bool]*sharedServerState{}
	}
	st := shared.servers[flux]
	if st == nil {
		st = &sharedServerState{}
		shared.servers[flux] = st
	}
	shared.mu.Unlock()
	st.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		st.srv, st.err = influxtest.Launch(ctx, influxtest.Options{DisableFlux: !flux})
	})
	if st.err != nil {
		tb.Fatalf("influxtest: %v", st.err)
	}
	return st.srv
}

// freshBucket creates a new database on the shared server with Flux on
// and returns a Config for it.
func freshBucket(tb testing.TB) Config { return freshBucketOn(tb, sharedServer(tb)) }

// freshBucketOn creates a new database on srv and returns a Config for it.
func freshBucketOn(tb testing.TB, srv *influxtest.Server) Config {
	tb.Helper()
	db := freshName()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.CreateDatabase(ctx, db, "rp"); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("influxd log tail:\n%s", srv.LogTail(30))
		}
	})
	return Config{URL: srv.URL(), Token: srv.Token(), Org: srv.Org(), Bucket: db + "/rp"}
}

// freshName returns a database name no test has used.
func freshName() string { return fmt.Sprintf("t%d", shared.dbs.Add(1)) }

// baseMinute is the first minute the tests write (unix seconds).
var baseMinute = time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC).Unix()

// newState builds a merged state with visitors, values and bots drawn
// from a seeded generator.
func newState(seed uint64, events, visitors, values int) *sketch.State {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	st := &sketch.State{Count: uint64(events)}
	for i := 0; i < visitors; i++ {
		st.AddVisitor(rng.Uint64() | 1)
	}
	for i := 0; i < values; i++ {
		st.AddValue(int64(rng.IntN(500_000_000)) + 1) // up to 500.00 in micros
	}
	st.CostMicros = int64(rng.IntN(10_000_000))
	for i := 0; i < events/10; i++ {
		st.AddBot([]string{"ua", "rate", "datacenter"}[i%3])
	}
	// Votes with names that need escaping on their way to a field key.
	for i := 0; i < events/7; i++ {
		st.AddVotes(sketch.VoteKey([]string{"launch poll", "a/b"}[i%2], []string{"yes", "no, thanks", "50%=ok", "日本"}[i%4]), 1)
	}
	return st
}

// newContribution builds one contribution with cumulative state.
func newContribution(s sketch.Series, minute int64, cid, version uint64, st *sketch.State) wire.Contribution {
	enc, err := st.Encode()
	if err != nil {
		panic(err)
	}
	return wire.Contribution{Series: s, Minute: minute, CID: cid, Version: version, State: enc}
}
