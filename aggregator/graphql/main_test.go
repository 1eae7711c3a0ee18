package graphql_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (the handler
// starts none of its own; gqlgen resolves fields on goroutines that end
// with the request).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
