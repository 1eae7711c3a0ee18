package logparse_test

import (
	"errors"
	"fmt"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/logparse"
)

// A reader parses each line and counts what it cannot use by reason. The
// event is used (here printed; in the agent, normalised) before the next
// line is parsed, as the ownership rules of Parse require.
func ExampleParser_Parse() {
	spec := logparse.DefaultSpec()
	spec.Site = "www.example.com"
	spec.Rules = []logparse.Rule{
		{Name: "ad click", Match: "/click", Type: "click", CampaignParam: "cid"},
		{Name: "order", Match: "/checkout/thanks", Type: "conversion", ValueParam: "total"},
	}
	p, err := logparse.Compile(spec)
	if err != nil {
		fmt.Println(err)
		return
	}
	lines := []string{
		`203.0.113.9 - - [10/Mar/2024:13:55:36 +0100] "GET /?utm_source=google&utm_medium=cpc HTTP/1.1" 200 512 "-" "Mozilla/5.0"`,
		`203.0.113.9 - - [10/Mar/2024:13:55:37 +0100] "GET /static/app.css HTTP/1.1" 200 9120 "-" "Mozilla/5.0"`,
		`203.0.113.9 - - [10/Mar/2024:13:55:40 +0100] "GET /click?cid=spring_sale HTTP/1.1" 302 0 "-" "Mozilla/5.0"`,
		`203.0.113.9 - - [10/Mar/2024:13:57:02 +0100] "GET /checkout/thanks?total=49.90 HTTP/1.1" 200 2048 "-" "Mozilla/5.0"`,
		`203.0.113.9 - - [10/Mar/2024:13:57:02 +0100] "GET /nope HTTP/1.1" 404 0 "-" "Mozilla/5.0"`,
		`203.0.113.9 - - [10/Mar/2024:13:57 +0100] "GET / HTTP/1.1" 200 0 "-" "Mozilla/5.0"`,
	}
	var r event.Raw
	for _, line := range lines {
		switch err := p.Parse([]byte(line), &r); {
		case err == nil:
			value := ""
			if r.Value != nil {
				value = fmt.Sprintf(" value=%.2f", *r.Value)
			}
			fmt.Printf("%s %s campaign=%q source=%q%s\n", r.Type, r.URL, r.Campaign, r.Source, value)
		case errors.Is(err, logparse.ErrSkip):
			fmt.Println("skipped:", logparse.Reason(err))
		default:
			fmt.Println("malformed:", logparse.Reason(err))
		}
	}
	// Output:
	// pageview https://www.example.com/?utm_source=google&utm_medium=cpc campaign="" source="google"
	// skipped: skip_asset
	// click https://www.example.com/click?cid=spring_sale campaign="spring_sale" source=""
	// conversion https://www.example.com/checkout/thanks?total=49.90 campaign="" source="" value=49.90
	// skipped: skip_status
	// malformed: bad_time
}
