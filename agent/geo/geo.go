// Package geo maps client IP addresses to countries at the edge, with a
// MaxMind-format database that the operator provides: GeoIP2 or GeoLite2
// Country or City, or DB-IP's free country and city lite editions, which
// use the same format and record layout. The agent never downloads one
// (see README.md).
//
// A lookup parses the address with net/netip, skips private and
// non-global addresses, and answers from a lock-free cache of recently
// seen networks (see cache). Only a miss walks the database, and it
// decodes the country's iso_code once per distinct country record, not
// once per lookup.
//
// Open checks the file before the agent relies on it: its metadata, and
// the layout of its first records. A record damaged further in costs only
// the lookups that reach it (they return "" and are counted); the reader,
// maxminddb-golang v2, bounds its work on damaged data instead of
// recursing or looping on it.
//
// The whole file is read into memory instead of being memory-mapped: an
// operator who overwrites the file in place (cp instead of mv) would make
// a mapped reader crash the agent with SIGBUS, and a DB in memory lets
// Close run while lookups are in flight without a lock on the hot path.
// A GeoLite2-Country file is under 10 MiB; a City file costs several
// times that and answers the same question.
package geo

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
)

// MaxFileSize caps the database file read by Open. The largest commercial
// City editions are a few hundred MiB; anything bigger is the wrong file.
const MaxFileSize = 1 << 30

// Errors returned by Open, matched with errors.Is; the message says what
// was wrong with which file.
var (
	// ErrCorrupt means the file is not a readable MaxMind DB: not one at
	// all, compressed, truncated or damaged.
	ErrCorrupt = errors.New("not a valid MaxMind DB file")
	// ErrNotCountry means the file is a valid MaxMind DB that does not map
	// addresses to countries, such as an ASN or anonymous-IP database.
	ErrNotCountry = errors.New("not a country database")
)

// metadataMarker starts the metadata section at the end of every MaxMind
// DB file (MaxMind DB format specification, "Database Metadata").
const metadataMarker = "\xab\xcd\xefMaxMind.com"

// probeRecords is how many records Open decodes to check their layout:
// enough to meet a country in every real database, cheap at start-up.
// probeNetworks bounds the networks, with or without data, that it walks
// to find them, which bounds the work of Open on a damaged search tree.
const (
	probeRecords  = 256
	probeNetworks = 1 << 16
)

// maxCountryOffsets bounds the decoded-country memo. Real databases share
// one record per country (about 250); a database that does not is still
// correct, only slower on misses.
const maxCountryOffsets = 4096

// hitSample: one cache hit in hitSample is counted, as hitSample hits, so
// that hits write no shared memory.
const hitSample = 32

// DB maps IP addresses to ISO 3166-1 alpha-2 country codes. All its
// methods are safe for concurrent use, Close included: lookups that race
// with Close finish normally, and later ones return "".
type DB struct {
	info  Info
	ipv4  bool // the database has no IPv6 networks
	cache *cache
	// pairs holds every two-letter code from "AA" to "ZZ", so that Country
	// returns a substring of it instead of allocating one.
	pairs string

	reader atomic.Pointer[maxminddb.Reader] // nil once closed

	// countries memoises the code at each country record offset.
	mu        sync.RWMutex
	countries map[uintptr]uint16

	hits, misses, errors atomic.Uint64
}

// Info describes the loaded database, for the start-up log.
type Info struct {
	// Type is the database_type of the metadata, e.g. "GeoLite2-Country"
	// or "DBIP-Country-Lite".
	Type string
	// Built is when the vendor built the file; country data older than a
	// few months drifts as address blocks change hands.
	Built time.Time
	// IPVersion is 4 for an IPv4-only database, 6 otherwise.
	IPVersion int
}

// Open reads and checks the MaxMind-format database at path. It fails
// with ErrCorrupt when the file cannot be read as a MaxMind DB and with
// ErrNotCountry when its type or records are not those of a country or
// city database.
func Open(path string) (*DB, error) {
	return open(path, true)
}

func open(path string, cached bool) (*DB, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return load(path, data, cached)
}

// load checks data, the contents of the file at path.
func load(path string, data []byte, cached bool) (*DB, error) {
	if !bytes.Contains(data, []byte(metadataMarker)) {
		return nil, fmt.Errorf("geo database %s: %w: it has no MaxMind DB metadata (an empty or truncated download, or another kind of file)",
			path, ErrCorrupt)
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, fmt.Errorf("geo database %s: %w: %w", path, ErrCorrupt, err)
	}
	m := r.Metadata
	if m.BinaryFormatMajorVersion != 2 || (m.IPVersion != 4 && m.IPVersion != 6) {
		return nil, fmt.Errorf("geo database %s: %w: format version %d, IP version %d (want 2, and 4 or 6)",
			path, ErrCorrupt, m.BinaryFormatMajorVersion, m.IPVersion)
	}
	if !countryType(m.DatabaseType) {
		return nil, fmt.Errorf("geo database %s: %w: its type is %q; want a Country or City database (GeoIP2, GeoLite2 or DB-IP)",
			path, ErrNotCountry, m.DatabaseType)
	}
	if err := probe(r); err != nil {
		return nil, fmt.Errorf("geo database %s (%s): %w", path, m.DatabaseType, err)
	}
	d := &DB{
		info: Info{Type: m.DatabaseType, Built: time.Unix(int64(m.BuildEpoch), 0).UTC(),
			IPVersion: int(m.IPVersion)},
		ipv4:      m.IPVersion == 4,
		pairs:     pairs(),
		countries: make(map[uintptr]uint16),
	}
	if cached {
		d.cache = newCache()
	}
	d.reader.Store(r)
	return d, nil
}

// readFile reads the database whole, refusing what cannot be one before
// the library sees it: too big, or still compressed as downloaded.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("geo database: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("geo database %s: not a regular file", path)
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("geo database %s: %w: %d bytes is more than the %d allowed",
			path, ErrCorrupt, st.Size(), MaxFileSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("geo database: %w", err)
	}
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		return nil, fmt.Errorf("geo database %s: %w: it is gzip-compressed; extract the .mmdb file first",
			path, ErrCorrupt)
	}
	return data, nil
}

// countryType reports whether a database_type names a database whose
// records carry country and registered_country: GeoIP2/GeoLite2 Country
// and City, GeoIP2 Enterprise, and DB-IP's Country, City and Location
// editions ("DBIP-Location (compat=City)").
func countryType(t string) bool {
	t = strings.ToLower(t)
	for _, s := range []string{"country", "city", "enterprise", "location"} {
		if strings.Contains(t, s) {
			return true
		}
	}
	return false
}

// probeRecord is the layout Open expects; a different one fails to
// decode into it.
type probeRecord struct {
	Country    isoRecord `maxminddb:"country"`
	Registered isoRecord `maxminddb:"registered_country"`
}

type isoRecord struct {
	ISOCode string `maxminddb:"iso_code"`
}

// probe decodes the first probeRecords records of the database: a wrong
// record layout fails here rather than as "" on every event, and so does
// a damaged search tree near its start.
//
// It walks networks without data too (IncludeNetworksWithoutData) so that
// it regains control at every leaf: a damaged tree can hold 2^40 empty
// networks or more (TestOpenDamagedTree), and an iteration that skips
// them would not return in the life of the agent.
func probe(r *maxminddb.Reader) error {
	var walked, seen, withCountry int
	for res := range r.Networks(maxminddb.IncludeNetworksWithoutData()) {
		if err := res.Err(); err != nil {
			return fmt.Errorf("%w: search tree: %w", ErrCorrupt, err)
		}
		if walked++; walked > probeNetworks {
			break
		}
		if !res.Found() {
			continue
		}
		var rec probeRecord
		if err := res.Decode(&rec); err != nil {
			var typeErr maxminddb.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return fmt.Errorf("%w: the record of %v has no country/iso_code: %w", ErrNotCountry, res.Prefix(), err)
			}
			return fmt.Errorf("%w: record of %v: %w", ErrCorrupt, res.Prefix(), err)
		}
		if code(rec.Country.ISOCode) != 0 || code(rec.Registered.ISOCode) != 0 {
			withCountry++
		}
		if seen++; seen == probeRecords {
			break
		}
	}
	switch {
	case seen == 0 && walked > probeNetworks:
		return fmt.Errorf("%w: no data in its first %d networks", ErrNotCountry, probeNetworks)
	case seen == 0:
		return fmt.Errorf("%w: it holds no networks", ErrNotCountry)
	case withCountry == 0:
		return fmt.Errorf("%w: none of its first %d records has a country or registered_country iso_code", ErrNotCountry, seen)
	}
	return nil
}

// Info describes the database.
func (d *DB) Info() Info { return d.info }

// Country returns the ISO 3166-1 alpha-2 code, in upper case, of the
// country of ip (an IPv4 or IPv6 address in text form, IPv4-mapped IPv6
// included, no zone), or "" when ip is not an address, is private, loopback,
// link-local or otherwise not global unicast, or the database does not
// know it. It falls back to the registered country of the network when the
// database has no location for it (anycast, satellite). It does not
// allocate on a cache hit, nor for most strings that are not addresses.
func (d *DB) Country(ip string) string {
	r := d.reader.Load()
	if r == nil {
		return ""
	}
	if !addrLike(ip) {
		return ""
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	addr = addr.Unmap()
	if !addr.IsGlobalUnicast() || addr.IsPrivate() || (d.ipv4 && addr.Is6()) {
		return ""
	}
	if d.cache != nil {
		if c, ok := d.cache.get(addr); ok {
			if rand.Uint32()%hitSample == 0 {
				d.hits.Add(hitSample)
			}
			return d.name(c)
		}
	}
	d.misses.Add(1)
	c, bits, err := d.lookup(r, addr)
	if err != nil {
		// A damaged part of the file: counted, not cached, and not
		// fatal to the event, which keeps its country unknown.
		d.errors.Add(1)
		return ""
	}
	if d.cache != nil {
		d.cache.put(addr, bits, c)
	}
	return d.name(c)
}

// addrLike reports whether s may be an IPv4 or IPv6 address without a
// zone (a zone only qualifies link-local addresses, which have no
// country). It spares ParseAddr the error it allocates for the usual
// non-addresses, such as "-" or "unknown" from log files.
func addrLike(s string) bool {
	if len(s) < 2 || len(s) > len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// notFound marks a record field absent from the database record.
const notFound = ^uintptr(0)

// record captures where the country records are instead of decoding
// them: MaxMind databases store each country once and point to it, so
// the offset is a key for the decoded code.
type record struct {
	Country    uintptr `maxminddb:"country"`
	Registered uintptr `maxminddb:"registered_country"`
}

// lookup walks the database for addr and returns its country code and the
// prefix length of its network, in bits of addr's family.
func (d *DB) lookup(r *maxminddb.Reader, addr netip.Addr) (code uint16, bits int, err error) {
	res := r.Lookup(addr)
	if err := res.Err(); err != nil {
		return 0, 0, err
	}
	p := res.Prefix()
	switch bits = p.Bits(); {
	case !p.IsValid():
		bits = 128 // cache nothing
	case addr.Is4() && p.Addr().Is6():
		// One record covers the whole IPv4 space of an IPv6 database.
		bits = 0
	}
	if !res.Found() {
		return 0, bits, nil
	}
	rec := record{Country: notFound, Registered: notFound}
	if err := res.Decode(&rec); err != nil {
		return 0, 0, err
	}
	if code, err = d.countryAt(r, rec.Country); code != 0 || err != nil {
		return code, bits, err
	}
	code, err = d.countryAt(r, rec.Registered)
	return code, bits, err
}

// countryAt returns the code of the country record at offset, decoding it
// the first time.
func (d *DB) countryAt(r *maxminddb.Reader, offset uintptr) (uint16, error) {
	if offset == notFound {
		return 0, nil
	}
	d.mu.RLock()
	c, ok := d.countries[offset]
	d.mu.RUnlock()
	if ok {
		return c, nil
	}
	var rec isoRecord
	if err := r.LookupOffset(offset).Decode(&rec); err != nil {
		return 0, err
	}
	c = code(rec.ISOCode)
	d.mu.Lock()
	if len(d.countries) < maxCountryOffsets {
		d.countries[offset] = c
	}
	d.mu.Unlock()
	return c, nil
}

// code packs a two-letter country code in 10 bits (5 per letter, A=1), or
// returns 0 for anything else. "ZZ" (unknown, in some vendors' data) is 0
// too: Country returns "" for it.
func code(s string) uint16 {
	if len(s) != 2 {
		return 0
	}
	a, b := s[0]|0x20, s[1]|0x20 // ASCII lower case
	if a < 'a' || a > 'z' || b < 'a' || b > 'z' || (a == 'z' && b == 'z') {
		return 0
	}
	return uint16(a-'a'+1)<<5 | uint16(b-'a'+1)
}

// name returns the upper-case code packed in c, or "".
func (d *DB) name(c uint16) string {
	if c == 0 {
		return ""
	}
	i := (int(c>>5)-1)*26 + int(c&31) - 1
	return d.pairs[2*i : 2*i+2]
}

// pairs returns "AAABAC…ZZ": every code that name can return.
func pairs() string {
	var b strings.Builder
	b.Grow(26 * 26 * 2)
	for x := byte('A'); x <= 'Z'; x++ {
		for y := byte('A'); y <= 'Z'; y++ {
			b.WriteByte(x)
			b.WriteByte(y)
		}
	}
	return b.String()
}

// Close releases the database. It is safe to call more than once and
// while lookups are in flight; Country returns "" afterwards. It always
// returns nil.
func (d *DB) Close() error {
	// Only the reference is dropped: the reader's own Close would race
	// with lookups in flight, and its memory is the garbage collector's.
	d.reader.Store(nil)
	return nil
}

// Stats are a DB's counters since Open.
type Stats struct {
	// CacheHits and CacheMisses count lookups of global addresses. Hits
	// are sampled (one in 32 counted as 32) so that they write no shared
	// memory: exact in expectation only.
	CacheHits, CacheMisses uint64
	// Errors counts lookups that failed on a damaged record; they return
	// "".
	Errors uint64
}

// Stats returns the DB's counters.
func (d *DB) Stats() Stats {
	return Stats{CacheHits: d.hits.Load(), CacheMisses: d.misses.Load(), Errors: d.errors.Load()}
}
