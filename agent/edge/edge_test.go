package edge

import (
	"sync"
	"testing"
)

func TestTokensReplace(t *testing.T) {
	const old, added = "old-server-token-0123456789", "new-server-token-0123456789"
	var zero Tokens
	if !zero.Empty() || zero.Match(old) || (*Tokens)(nil).Match(old) {
		t.Fatal("the zero Tokens and nil hold a token")
	}
	tok := NewTokens(old, "")
	if tok.Empty() || !tok.Match(old) || tok.Match(added) || tok.Match("") {
		t.Fatal("NewTokens holds the wrong set")
	}
	// Replace while requests are checked (run with -race).
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				tok.Match(old)
				tok.Empty()
			}
		}
	})
	tok.Replace(added)
	close(stop)
	wg.Wait()
	if tok.Match(old) || !tok.Match(added) {
		t.Fatal("after Replace the removed token matches or the added one does not")
	}
	tok.Replace()
	if !tok.Empty() || tok.Match(added) {
		t.Fatal("after Replace with none a token still matches")
	}
}
