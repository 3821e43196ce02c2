package cca

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// CSUACFQ (Cryptographic Facility Query) answers in the rule array, in
// 8-byte elements, or in the verb data (IBM "CSUACFQ parameters";
// host-libraries.md §1.4, §1.5). The rule array buffer holds 32 elements,
// more than any keyword used here returns.
const queryRuleCap = 32

// query calls CSUACFQ with one keyword on the selected adapter and domain
// and returns the rule array as written back and the verb data.
func (l *Library) query(where, keyword string, verbDataLen int) (rules, data []byte, err error) {
	c := newCall("CSUACFQ")
	count, arr := c.rules(queryRuleCap, keyword)
	var dl, d *slot
	if verbDataLen > 0 {
		dl = c.long(int64(verbDataLen))
		d = c.buf(nil, verbDataLen)
	} else {
		dl = c.long(0)
		c.null()
	}
	codes, err := l.verb(c)
	if err != nil {
		return nil, nil, err
	}
	if codes.Return != 0 {
		return nil, nil, codeError("CSUACFQ "+keyword, where, codes)
	}
	n := count.long
	if n < 0 || n > queryRuleCap {
		return nil, nil, errclass.New(errclass.Internal, "CSUACFQ %s on %s returned a rule array count of %d (buffer holds %d)", keyword, where, n, queryRuleCap)
	}
	rules = arr.data[:8*n]
	if d != nil {
		m := dl.long
		if m < 0 || m > int64(verbDataLen) {
			return nil, nil, errclass.New(errclass.Internal, "CSUACFQ %s on %s returned a verb data length of %d (buffer holds %d)", keyword, where, m, verbDataLen)
		}
		data = d.data[:m]
	}
	return rules, data, nil
}

// element returns rule-array element i (0-based) without padding.
func element(rules []byte, i int) (string, bool) {
	if 8*i+8 > len(rules) {
		return "", false
	}
	e := rules[8*i : 8*i+8]
	if j := bytes.IndexByte(e, 0); j >= 0 {
		e = e[:j]
	}
	return strings.TrimSpace(string(e)), true
}

// adapterInfo is what STATCRD2 says about the selected adapter: the
// number of adapters (element 0, ASCII decimal) and the serial number
// (element 14, byte offset 112), as openCryptoki and zkey read them.
func (l *Library) adapterInfo(where string) (count int, serial string, err error) {
	rules, _, err := l.query(where, "STATCRD2", 0)
	if err != nil {
		return 0, "", err
	}
	cs, ok := element(rules, 0)
	n, perr := strconv.Atoi(cs)
	if !ok || perr != nil || n < 0 || n > 99 {
		return 0, "", errclass.New(errclass.Internal, "CSUACFQ STATCRD2 on %s: adapter count %q is not a number 0..99", where, cs)
	}
	serial, ok = element(rules, 14)
	if !ok {
		return 0, "", errclass.New(errclass.Internal, "CSUACFQ STATCRD2 on %s returned %d elements, the serial number is element 15", where, len(rules)/8)
	}
	return n, serial, nil
}

// regStates reads the NEW, CURRENT and OLD register states of one master
// key type from STATCCAE (SYM), STATAES or STATAPKA: each an ASCII digit
// in its own element — NMK element 1 (1 empty, 2 partial, 3 full), CMK
// element 2 and OMK element 3 (1 empty, 2 valid). openCryptoki reads the
// NMK and CMK digits at bytes 0 and 8 (cca_get_mk_state); the OMK element
// follows IBM's element list for these keywords.
func regStates(where, keyword string, rules []byte) (nw, cur, old apqn.RegState, err error) {
	digit := func(i int) (int, error) {
		s, ok := element(rules, i)
		if !ok || len(s) != 1 || s[0] < '0' || s[0] > '9' {
			return 0, errclass.New(errclass.Internal, "CSUACFQ %s on %s: element %d is %q, not a register state digit", keyword, where, i+1, s)
		}
		return int(s[0] - '0'), nil
	}
	n, err := digit(0)
	if err != nil {
		return
	}
	switch n {
	case 1:
		nw = apqn.StateEmpty
	case 2:
		nw = apqn.StatePartial
	case 3:
		nw = apqn.StateFull
	default:
		return 0, 0, 0, errclass.New(errclass.Internal, "CSUACFQ %s on %s: NMK state %d is not 1, 2 or 3", keyword, where, n)
	}
	two := func(i int, name string) (apqn.RegState, error) {
		d, err := digit(i)
		if err != nil {
			return 0, err
		}
		switch d {
		case 1:
			return apqn.StateInvalid, nil
		case 2:
			return apqn.StateValid, nil
		}
		return 0, errclass.New(errclass.Internal, "CSUACFQ %s on %s: %s state %d is not 1 or 2", keyword, where, name, d)
	}
	if cur, err = two(1, "CMK"); err != nil {
		return
	}
	old, err = two(2, "OMK")
	return
}

// STATICSB verb data holds each master key verification pattern, 8
// bytes, after a 2-byte big-endian register ID, at the offsets
// openCryptoki reads (cca_stdll.h CCA_STATICSB_*; IBM "STATICSB": fields
// in a fixed order, multi-byte values big-endian, the IDs to be checked).
// The IDs of NEW and CURRENT are openCryptoki's. The OLD entries are not
// in openCryptoki; their offsets and IDs here are inferred from the order
// IBM gives (OLD, CURRENT, NEW per type, IDs descending) and used only
// when the ID found there matches.
type staticsbEntry struct {
	at int    // offset of the ID; the pattern follows it
	id uint16 // register ID
}

var staticsbIDs = map[mkvp.Type]struct{ nw, cur, old staticsbEntry }{
	mkvp.CCASYM:  {staticsbEntry{146, 0x0F06}, staticsbEntry{134, 0x0F07}, staticsbEntry{122, 0x0F08}},
	mkvp.CCAAES:  {staticsbEntry{194, 0x0F0A}, staticsbEntry{182, 0x0F0B}, staticsbEntry{170, 0x0F0C}},
	mkvp.CCAAPKA: {staticsbEntry{230, 0x0F0D}, staticsbEntry{218, 0x0F0E}, staticsbEntry{206, 0x0F0F}},
}

// staticsbLen is the verb data buffer for STATICSB (openCryptoki: 256).
const staticsbLen = 256

// staticsbValue returns the pattern of entry e, or ok false when the
// data is too short or carries another ID there.
func staticsbValue(data []byte, e staticsbEntry) ([]byte, bool) {
	if e.at+10 > len(data) || binary.BigEndian.Uint16(data[e.at:]) != e.id {
		return nil, false
	}
	return data[e.at+2 : e.at+10], true
}

// pattern8 makes a CCA pattern from a STATICSB value.
func pattern8(where string, t mkvp.Type, id uint16, v []byte) (mkvp.Pattern, error) {
	if len(v) != 8 {
		return mkvp.Pattern{}, errclass.New(errclass.Internal, "CSUACFQ STATICSB on %s: %s block 0x%04X has %d bytes, want 8", where, t, id, len(v))
	}
	return mkvp.ForType(t, v)
}
