package logparse

// Hand-written time parsers: time.Parse costs about 200 ns and allocates
// on some paths, more than the rest of a line. These read the fixed
// layouts nginx and Apache write, validate every field, and compute unix
// time directly from the civil date.

// parseTimeLocal reads nginx $time_local / Apache %t:
// "02/Jan/2006:15:04:05 -0700" (exactly 26 bytes).
func parseTimeLocal(b []byte) (int64, bool) {
	if len(b) != 26 || b[2] != '/' || b[6] != '/' || b[11] != ':' || b[14] != ':' || b[17] != ':' || b[20] != ' ' {
		return 0, false
	}
	day, ok1 := num2(b[0:])
	year, ok2 := num4(b[7:])
	hh, ok3 := num2(b[12:])
	mm, ok4 := num2(b[15:])
	ss, ok5 := num2(b[18:])
	month := monthOf(b[3:6])
	if !(ok1 && ok2 && ok3 && ok4 && ok5) || month == 0 {
		return 0, false
	}
	off, ok := zoneHHMM(b[21:], false)
	if !ok {
		return 0, false
	}
	return civilMillis(year, month, day, hh, mm, ss, 0, off)
}

// parseISO reads RFC 3339 / nginx $time_iso8601: "2006-01-02T15:04:05",
// an optional fraction (milliseconds kept), and a zone: "Z", "+07:00",
// "+0700" or "+07". A space may stand for the T.
func parseISO(b []byte) (int64, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't' && b[10] != ' ') ||
		b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	year, ok1 := num4(b[0:])
	month, ok2 := num2(b[5:])
	day, ok3 := num2(b[8:])
	hh, ok4 := num2(b[11:])
	mm, ok5 := num2(b[14:])
	ss, ok6 := num2(b[17:])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return 0, false
	}
	rest := b[19:]
	ms := 0
	if rest[0] == '.' || rest[0] == ',' {
		i := 1
		for i < len(rest) && isDigit(rest[i]) {
			if i <= 3 {
				ms = ms*10 + int(rest[i]-'0')
			}
			i++
		}
		if i == 1 {
			return 0, false
		}
		for d := i; d <= 3; d++ { // ".5" is 500 ms
			ms *= 10
		}
		rest = rest[i:]
	}
	var off int
	switch {
	case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
	case len(rest) > 0:
		var ok bool
		if off, ok = zoneHHMM(rest, true); !ok {
			return 0, false
		}
	default:
		return 0, false // no zone: ambiguous, refuse rather than guess
	}
	return civilMillis(year, month, day, hh, mm, ss, ms, off)
}

// parseEpoch reads nginx $msec ("1136214245.123", seconds with a
// fraction), whole seconds, or whole milliseconds (an integer of 12 or
// more digits: seconds that large are beyond the year 5000).
func parseEpoch(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 24 {
		return 0, false
	}
	var sec int64
	i := 0
	for i < len(b) && isDigit(b[i]) {
		sec = sec*10 + int64(b[i]-'0')
		i++
	}
	if i == 0 || i > 16 {
		return 0, false
	}
	if i == len(b) {
		if i >= 12 {
			return sec, true
		}
		return sec * 1000, true
	}
	if b[i] != '.' || i > 11 {
		return 0, false
	}
	ms := 0
	j := i + 1
	for ; j < len(b) && isDigit(b[j]); j++ {
		if j-i <= 3 {
			ms = ms*10 + int(b[j]-'0')
		}
	}
	if j != len(b) {
		return 0, false
	}
	for d := j - i; d <= 3; d++ {
		ms *= 10
	}
	return sec*1000 + int64(ms), true
}

// parseAnyTime reads whichever of the three forms b is in (json lines).
func parseAnyTime(b []byte) (int64, bool) {
	switch {
	case len(b) > 4 && b[4] == '-':
		return parseISO(b)
	case len(b) > 2 && b[2] == '/':
		return parseTimeLocal(b)
	}
	return parseEpoch(b)
}

// zoneHHMM reads "+0700", and with colon also "+07:00" and "+07".
func zoneHHMM(b []byte, colon bool) (int, bool) {
	if len(b) < 3 || (b[0] != '+' && b[0] != '-') {
		return 0, false
	}
	h, ok := num2(b[1:])
	if !ok {
		return 0, false
	}
	m := 0
	switch {
	case len(b) == 5:
		if m, ok = num2(b[3:]); !ok {
			return 0, false
		}
	case colon && len(b) == 6 && b[3] == ':':
		if m, ok = num2(b[4:]); !ok {
			return 0, false
		}
	case colon && len(b) == 3:
	default:
		return 0, false
	}
	if h > 23 || m > 59 {
		return 0, false
	}
	off := h*3600 + m*60
	if b[0] == '-' {
		off = -off
	}
	return off, true
}

// civilMillis validates a civil time at the given zone offset (seconds
// east of UTC) and returns it in unix milliseconds.
func civilMillis(year, month, day, hh, mm, ss, ms, off int) (int64, bool) {
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hh > 23 || mm > 59 || ss > 60 {
		return 0, false
	}
	// days from civil (H. Hinnant), year >= 0 here.
	y := year
	if month <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400
	mp := (month + 9) % 12
	doy := (153*mp+2)/5 + day - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	days := int64(era*146097+doe) - 719468
	sec := days*86400 + int64(hh*3600+mm*60+ss) - int64(off)
	return sec*1000 + int64(ms), true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

func monthOf(b []byte) int {
	switch string(b) {
	case "Jan":
		return 1
	case "Feb":
		return 2
	case "Mar":
		return 3
	case "Apr":
		return 4
	case "May":
		return 5
	case "Jun":
		return 6
	case "Jul":
		return 7
	case "Aug":
		return 8
	case "Sep":
		return 9
	case "Oct":
		return 10
	case "Nov":
		return 11
	case "Dec":
		return 12
	}
	return 0
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func num2(b []byte) (int, bool) {
	if len(b) < 2 || !isDigit(b[0]) || !isDigit(b[1]) {
		return 0, false
	}
	return int(b[0]-'0')*10 + int(b[1]-'0'), true
}

func num4(b []byte) (int, bool) {
	hi, ok1 := num2(b)
	if !ok1 || len(b) < 4 {
		return 0, false
	}
	lo, ok2 := num2(b[2:])
	return hi*100 + lo, ok2
}

// timeCache remembers the last time string parsed and its value: an access
// log holds runs of lines within the same second, so most lines cost one
// 26-byte comparison.
type timeCache struct {
	key [32]byte
	n   int
	ms  int64
}

func (c *timeCache) lookup(b []byte) (int64, bool) {
	if c.n == len(b) && c.n > 0 && string(c.key[:c.n]) == string(b) {
		return c.ms, true
	}
	return 0, false
}

func (c *timeCache) store(b []byte, ms int64) {
	if len(b) <= len(c.key) {
		c.n = copy(c.key[:], b)
		c.ms = ms
	}
}
