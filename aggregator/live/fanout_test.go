package live

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/internal/pki"
)

// memNet delivers broadcasts to the other fan-outs in memory.
type memNet struct {
	mu    sync.Mutex
	nodes map[string]*Fanout
	from  string
}

func (n *memNet) Broadcast(msg []byte) error {
	n.mu.Lock()
	var to []*Fanout
	for name, f := range n.nodes {
		if name != n.from {
			to = append(to, f)
		}
	}
	n.mu.Unlock()
	for _, f := range to {
		f.Receive(msg)
	}
	return nil
}

type recorder struct {
	mu sync.Mutex
	us []Update
}

func (r *recorder) Publish(us []Update) {
	r.mu.Lock()
	r.us = append(r.us, us...)
	r.mu.Unlock()
}

func (r *recorder) get() []Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Update{}, r.us...)
}

// TestFanoutTakesOnlySignedMessagesOfMembers: updates reach every
// member's hub; a message signed with an agent's key, by a node of another
// CA, by a node that is not a member, altered, replayed, stale or of the
// unsigned first version is refused.
func TestFanoutTakesOnlySignedMessagesOfMembers(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if _, err := pki.GenerateDev(dir, pki.DevOptions{Agents: []string{"edge"}, Aggregators: []string{"a", "b", "gone"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.GenerateDev(other, pki.DevOptions{Aggregators: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	verifier, err := pki.LoadNodeVerifier(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	members := map[string]bool{"a": true, "b": true}
	net := map[string]*Fanout{}
	hubs := map[string]*recorder{}
	var mu sync.Mutex
	for _, name := range []string{"a", "b"} {
		s, err := pki.LoadNodeSigner(pki.DevFiles(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		hubs[name] = &recorder{}
		f, err := NewFanout(FanoutConfig{Node: name, Local: hubs[name], Peers: &memNet{nodes: net, from: name}, Signer: s, Verifier: verifier,
			IsMember: func(n string) bool { mu.Lock(); defer mu.Unlock(); return members[n] }})
		if err != nil {
			t.Fatal(err)
		}
		net[name] = f
		f.Start()
		defer f.Close()
	}
	u := Update{Campaign: "spring", Minute: 1_700_000_040, KPIs: kpi.KPIs{Clicks: 7}}
	net["a"].Publish([]Update{u})
	deadline := time.Now().Add(10 * time.Second)
	for len(hubs["b"].get()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("b never got a's update")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := hubs["b"].get(); got[0] != u || len(hubs["a"].get()) != 1 {
		t.Fatalf("b got %+v; a's own hub %+v", got, hubs["a"].get())
	}
	b := net["b"]
	before := b.Stats().Refused

	sign := func(s Signer, bd body) []byte {
		raw, _ := msgpack.Marshal(bd)
		cert, sig, err := s.Sign(raw)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := msgpack.Marshal(envelope{Version: MessageVersion, Body: raw, Cert: cert, Sig: sig})
		return msg
	}
	now := time.Now().UnixMilli()
	fake := []Update{{Campaign: "spring", Minute: 1_700_000_040, KPIs: kpi.KPIs{Clicks: 1_000_000}}}
	aSigner, _ := pki.LoadNodeSigner(pki.DevFiles(dir, "a"))
	goneSigner, _ := pki.LoadNodeSigner(pki.DevFiles(dir, "gone"))
	foreignSigner, _ := pki.LoadNodeSigner(pki.DevFiles(other, "a"))
	agentPair, err := tls.LoadX509KeyPair(filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	agent := agentSigner{cert: agentPair.Leaf.Raw, key: agentPair.PrivateKey.(crypto.Signer)}
	replay := sign(aSigner, body{Node: "a", Seq: 1<<62 + 1, Millis: now, Updates: []Update{u}})
	b.Receive(replay) // taken: a new sequence
	altered := sign(aSigner, body{Node: "a", Seq: 1<<62 + 2, Millis: now, Updates: fake})
	var env envelope
	_ = msgpack.Unmarshal(altered, &env)
	env.Body[len(env.Body)-1] ^= 1
	alteredMsg, _ := msgpack.Marshal(env)
	unsigned, _ := msgpack.Marshal(struct {
		Kind    uint8    `msgpack:"k"`
		Updates []Update `msgpack:"u"`
	}{1, fake})
	for name, msg := range map[string][]byte{
		"unsigned first version": unsigned,
		"agent key":              sign(agent, body{Node: "edge", Seq: 1 << 62, Millis: now, Updates: fake}),
		"node of another CA":     sign(foreignSigner, body{Node: "a", Seq: 1<<62 + 10, Millis: now, Updates: fake}),
		"not a member":           sign(goneSigner, body{Node: "gone", Seq: 1 << 62, Millis: now, Updates: fake}),
		"name not the signer's":  sign(aSigner, body{Node: "b", Seq: 1<<62 + 11, Millis: now, Updates: fake}),
		"altered":                alteredMsg,
		"replayed":               replay,
		"stale":                  sign(aSigner, body{Node: "a", Seq: 1<<62 + 12, Millis: now - int64(time.Hour/time.Millisecond), Updates: fake}),
		"garbage":                []byte("\x00\x01garbage"),
	} {
		n := b.Stats().Refused
		b.Receive(msg)
		if b.Stats().Refused != n+1 {
			t.Fatalf("%s: message taken", name)
		}
	}
	for _, got := range hubs["b"].get() {
		if got.KPIs.Clicks == 1_000_000 {
			t.Fatal("a forged figure reached the hub")
		}
	}
	if got := b.Stats().Refused - before; got != 9 {
		t.Fatalf("%d refused, want 9", got)
	}
}

type agentSigner struct {
	cert []byte
	key  crypto.Signer
}

// Sign signs like a node, with an agent's key and certificate.
func (s agentSigner) Sign(msg []byte) ([]byte, []byte, error) {
	h := sha256.Sum256(msg)
	sig, err := s.key.Sign(rand.Reader, h[:], crypto.SHA256)
	return s.cert, sig, err
}
