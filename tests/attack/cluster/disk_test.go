package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// aggFailingDisk is the shell run before a node (in a mount namespace of
// its own, so nothing changes in the machine's): a tmpfs holding an ext4
// image, loop-mounted as the node's data directory, with 4 MiB to spare
// beyond what the image uses after mkfs. Once the node has written about
// that much (less than the write-ahead log's first 16 MiB segment, which
// is never released before it is full), the kernel cannot write the image
// back and fsync fails, as on a dying disk. The namespace,
// the mounts and the loop device (autoclear) go when the node exits.
const aggFailingDisk = `set -e
mount -t tmpfs -o size=1g "tally-attack-disk-$AGG_PID" "$AGG_T"
truncate -s 128M "$AGG_T/disk"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$AGG_T/disk"
used=$(du -k "$AGG_T/disk" | cut -f1)
mount -o remount,size=$((used + 4096))k "$AGG_T"
mount -o loop "$AGG_T/disk" "$AGG_M"
mkdir -p "$AGG_M/data"
exec "$@"
`

// aggDelayProxy forwards TCP to upstream, holding each request (a chunk
// after a pause) for delay: a slow InfluxDB, so a node's last write takes
// long enough to be seen.
func aggDelayProxy(t *testing.T, upstream string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
			wg.Go(func() {
				defer u.Close()
				buf := make([]byte, 64<<10)
				last := time.Time{}
				for {
					n, err := c.Read(buf)
					if n > 0 {
						// A chunk after a pause starts a request.
						if time.Since(last) > 50*time.Millisecond {
							time.Sleep(delay)
						}
						last = time.Now()
						if _, werr := u.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// TestAggBrokenLogStopsTheNode: the disk under the write-ahead log fails
// (fsync returns an error). The first release went on answering every
// batch "busy" with /readyz green, for ever. Now /readyz fails at once,
// the node stops taking batches, writes to InfluxDB everything it merged,
// and exits non-zero; every batch it acknowledged is in InfluxDB, and
// resending the unacknowledged ones to the restarted node (on a good
// disk) counts every event exactly once.
func TestAggBrokenLogStopsTheNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace and a loop device")
	}
	for _, tool := range []string{"unshare", "mkfs.ext4", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (util-linux, e2fsprogs)", tool)
		}
	}
	e := aggNewEnv(t, influxtest.Options{}, []string{"legit"}, []string{"agg-1"})
	slow := aggDelayProxy(t, strings.TrimPrefix(e.influx.URL(), "http://"), 300*time.Millisecond)
	tdir, mdir := filepath.Join(e.dir, "tmpfs"), filepath.Join(e.dir, "mnt")
	for _, d := range []string{tdir, mdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n := e.aggStart("agg-1", aggNodeOptions{DataDir: filepath.Join(mdir, "data"), InfluxURL: "http://" + slow,
		Wrap: []string{"unshare", "-m", "--propagation", "private", "sh", "-c", aggFailingDisk, "sh"},
		Env:  []string{"AGG_T=" + tdir, "AGG_M=" + mdir, fmt.Sprintf("AGG_PID=%d", os.Getpid())}})

	// /readyz, watched closely.
	var saw503 atomic.Value
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go func() {
		cl := &http.Client{Timeout: 2 * time.Second}
		for watchCtx.Err() == nil {
			if resp, err := cl.Get("http://" + n.http + "/readyz"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 503 && strings.Contains(string(b), "write-ahead log") {
					saw503.Store(string(b))
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// Send 3 MB batches until one is not acknowledged.
	c := e.aggClient("legit", n, wire.ALPN)
	minute := time.Now().Truncate(time.Minute).Unix()
	var acked, pending []*wire.Batch
	for seq := uint64(1); seq < 200; seq++ {
		b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "legit", Region: "eu", Seq: seq}
		for i := range 500 {
			st := sketch.State{Count: 1}
			for v := range 1500 {
				st.AddVisitor(seq<<32 | uint64(i)<<16 | uint64(v) + 1)
			}
			enc, err := st.Encode()
			if err != nil {
				t.Fatal(err)
			}
			b.Contributions = append(b.Contributions, wire.Contribution{Series: sketch.Series{Campaign: "disk", Source: fmt.Sprint(i % 50),
				Type: "click", Region: "eu"}, Minute: minute, CID: seq<<16 | uint64(i), Version: 1, State: enc})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ack, err := c.Send(ctx, b)
		cancel()
		if err != nil || ack.Status != wire.AckOK {
			pending = append(pending, b)
			t.Logf("batch %d not acknowledged (%v %v): the disk failed after %d batches", seq, err, ack, len(acked))
			break
		}
		acked = append(acked, b)
	}
	if len(pending) == 0 {
		t.Fatal("the disk never failed")
	}
	code, err := n.proc.Wait(60 * time.Second)
	if err != nil {
		t.Fatalf("the node goes on running on a broken write-ahead log: %v", err)
	}
	stopWatch()
	if code == 0 {
		t.Fatal("the node exited 0 on a broken write-ahead log")
	}
	if saw503.Load() == nil {
		t.Fatal("/readyz never answered 503 for the broken write-ahead log before the node exited")
	}
	events := func(bs []*wire.Batch) uint64 { return uint64(len(bs) * 500) }
	// Every acknowledged batch was saved; the one answered "busy" may be
	// too (it was merged before its fsync failed): the sender resends it
	// and the merge absorbs the repeat.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := e.aggStored(ctx)
	if err != nil || got["disk"] < events(acked) || got["disk"] > events(acked)+events(pending) {
		t.Fatalf("after the node stopped InfluxDB holds %d events (%v); it acknowledged %d", got["disk"], err, events(acked))
	}

	// The node comes back on a good disk; the sender resends what was
	// not acknowledged; every event counts once.
	n2 := e.aggStart("agg-1", aggNodeOptions{})
	c2 := e.aggClient("legit", n2, wire.ALPN)
	for _, b := range pending {
		aggSendAll(t, c2, b)
	}
	e.aggWaitStored(map[string]uint64{"disk": events(acked) + events(pending)}, 60*time.Second)
}
