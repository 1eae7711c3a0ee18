package ship

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestDeadlineFollowsSizeAndGoodput: until a connection has shown its
// goodput the fallback applies; then the deadline grows with the batch,
// with what is in flight before it, and with each miss, within the
// bounds.
func TestDeadlineFollowsSizeAndGoodput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newLinkMeter("a", nil, 0)
		if d := m.deadline(100_000, 0, 0, 30*time.Second, 5*time.Minute); d != 30*time.Second {
			t.Fatalf("deadline %v before any measurement, want the fallback 30s", d)
		}
		// 10 KB/s for 10 s.
		for range 10 {
			if _, err := m.acquire(context.Background(), 10_000); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			m.release(10_000, true)
		}
		if g := m.goodput(); g < 9_500 || g > 10_500 {
			t.Fatalf("goodput %.0f B/s, want about 10000", g)
		}
		small := m.deadline(1_000, 0, 0, 30*time.Second, 5*time.Minute)
		big := m.deadline(200_000, 0, 0, 30*time.Second, 5*time.Minute)
		behind := m.deadline(200_000, 200_000, 0, 30*time.Second, 5*time.Minute)
		missed := m.deadline(200_000, 0, 1, 30*time.Second, 5*time.Minute)
		if small != minDeadline {
			t.Fatalf("1 KB at 10 KB/s: deadline %v, want the floor %v", small, minDeadline)
		}
		if want := 45 * time.Second; big < want-time.Second || big > want+time.Second {
			t.Fatalf("200 KB at 10 KB/s: deadline %v, want 2×20 s + 5 s", big)
		}
		if behind <= big || missed != 2*big {
			t.Fatalf("deadlines %v with 200 KB ahead and %v after a miss, against %v alone", behind, missed, big)
		}
		if d := m.deadline(100_000_000, 0, 0, 30*time.Second, 5*time.Minute); d != 5*time.Minute {
			t.Fatalf("100 MB: deadline %v, want the cap", d)
		}
		// 20 s in flight and nothing delivered: goodput falls.
		if _, err := m.acquire(context.Background(), 10_000); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second)
		m.release(10_000, false)
		if g := m.goodput(); g > 5_000 {
			t.Fatalf("goodput %.0f B/s after 20 s without an ack, want it well below 10000", g)
		}
	})
}

// TestWindowHoldsBackSecondBatch: the in-flight window lets one batch
// through before goodput is known and holds a second one until the first
// is settled.
func TestWindowHoldsBackSecondBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newLinkMeter("a", nil, 0)
		if _, err := m.acquire(context.Background(), initialWindow); err != nil {
			t.Fatal(err)
		}
		got := make(chan int, 1)
		go func() {
			ahead, _ := m.acquire(context.Background(), 1000)
			got <- ahead
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("a second batch went out past a full window")
		default:
		}
		time.Sleep(time.Second)
		m.release(initialWindow, true)
		if ahead := <-got; ahead != 0 {
			t.Fatalf("%d bytes ahead after the first was settled", ahead)
		}
	})
}
