package event

import "strings"

// countryCodes are the ISO 3166-1 alpha-2 codes officially assigned
// (249), one line per first letter. NoCountry (ZZ, user-assigned) is
// not among them.
var countryCodes = strings.Join([]string{
	"AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ",
	"BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ",
	"CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ",
	"DE DJ DK DM DO DZ",
	"EC EE EG EH ER ES ET",
	"FI FJ FK FM FO FR",
	"GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY",
	"HK HM HN HR HT HU",
	"ID IE IL IM IN IO IQ IR IS IT",
	"JE JM JO JP",
	"KE KG KH KI KM KN KP KR KW KY KZ",
	"LA LB LC LI LK LR LS LT LU LV LY",
	"MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ",
	"NA NC NE NF NG NI NL NO NP NR NU NZ",
	"OM",
	"PA PE PF PG PH PK PL PM PN PR PS PT PW PY",
	"QA",
	"RE RO RS RU RW",
	"SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ",
	"TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ",
	"UA UG UM US UY UZ",
	"VA VC VE VG VI VN VU",
	"WF WS",
	"YE YT",
	"ZA ZM ZW",
}, " ")

// countries holds the canonical string of every code in countryCodes at
// the index of its two letters, "" elsewhere: a country becomes a tag
// value, so it must come from a closed set, and it is looked up for every
// event.
var countries = func() (t [26 * 26]string) {
	for _, c := range strings.Fields(countryCodes) {
		t[int(c[0]-'A')*26+int(c[1]-'A')] = c
	}
	return t
}()

// CleanCountry returns the canonical (upper-case, interned) form of an ISO
// 3166-1 alpha-2 code given in any case, or NoCountry for anything else.
func CleanCountry(s string) string {
	s = strings.TrimSpace(s)
	if len(s) != 2 {
		return NoCountry
	}
	var idx [2]int
	for i := range 2 {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c < 'A' || c > 'Z' {
			return NoCountry
		}
		idx[i] = int(c - 'A')
	}
	if cc := countries[idx[0]*26+idx[1]]; cc != "" {
		return cc
	}
	return NoCountry
}
