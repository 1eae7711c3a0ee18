// Package logparse turns web server access-log lines into events: one line
// in, one event.Raw (or the reason there is none) out. It is the parsing
// half of log tailing and import-log; reading files is someone else's job.
//
// A Spec names the line format (combined, common, any nginx log_format, or
// JSON lines), the rules that map requests to event types, and the proxies
// whose X-Forwarded-For is believed. Compile checks it once and returns a
// Parser. From each line the Parser takes the event time, the client IP,
// the user agent, the referrer, the URL and its UTM parameters, and asks
// the rules which event the request is: a click on /click, a conversion
// with its value on /thanks, a pageview for any successful GET of a page,
// nothing for assets, failures, HEAD and OPTIONS. README.md describes the
// formats, the variables, the rules and their configuration.
//
// # Results
//
// Parse returns nil for an event, an error matching ErrSkip for a
// well-formed line that is no event, or an *Error with a stable Code for a
// malformed line. Reason turns any of them into a short metric label, so a
// reader counts outcomes without logging per line.
//
// # Performance and ownership
//
// The text formats are matched by a compiled program of literal separators
// and variables with byte scanning, no regular expressions; times are read
// by hand with a one-entry cache. A line costs a few hundred nanoseconds
// and no allocation in the steady state: the strings that outlive a line
// (campaign, source, ...) are interned per Parser, and the others (IP, UA,
// URL, referrer) point into the line or the Parser's scratch space. Those
// stay valid only until the next Parse call; see Parse and Detach.
//
// A Parser is not safe for concurrent use; Clone one per goroutine.
package logparse
