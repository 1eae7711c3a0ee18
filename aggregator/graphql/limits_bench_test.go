package graphql

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/complexity"
	"github.com/vektah/gqlparser/v2"

	"github.com/tally-edge/tally/aggregator/graphql/internal/gen"
)

// BenchmarkFragmentBomb compares the two ways of sizing a query whose n
// fragments each spread the previous one twice (2^n fields): gqlgen's
// complexity walk, which expands every spread and doubles its time with
// each fragment, and shapeLimit's count, which sizes each fragment once.
// shapeLimit runs first and refuses such a query, so the walk never sees
// it. Reproduce with
//
//	go test -run='^$' -bench=BenchmarkFragmentBomb ./aggregator/graphql/
func BenchmarkFragmentBomb(b *testing.B) {
	es := gen.NewExecutableSchema(gen.Config{Resolvers: &resolver{}, Complexity: costs()})
	for _, n := range []int{12, 16, 20, 40} {
		var q strings.Builder
		fmt.Fprintf(&q, "query { ...F%d }\nfragment F0 on Query { whoami { role } }\n", n)
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&q, "fragment F%d on Query { ...F%d ...F%d }\n", i, i-1, i-1)
		}
		doc, errs := gqlparser.LoadQuery(es.Schema(), q.String())
		if errs != nil {
			b.Fatal(errs)
		}
		op := doc.Operations[0]
		if n <= 20 {
			b.Run(fmt.Sprintf("gqlgen_walk_2^%d", n), func(b *testing.B) {
				for b.Loop() {
					if c := complexity.Calculate(context.Background(), es, op, nil); c < 1<<n {
						b.Fatal(c)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("shape_count_2^%d", n), func(b *testing.B) {
			for b.Loop() {
				if sh := (&shaper{cap: 1001, fragments: map[string]shape{}}).of(op.SelectionSet); sh.fields != 1001 {
					b.Fatal(sh)
				}
			}
		})
	}
}
