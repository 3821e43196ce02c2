package hostdouble

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// CCA return and reason codes the double uses. Sources: IBM "CCA Basic
// Services Reference" for Linux on IBM Z (ibm.com/docs/en/linuxonibm/lxcc):
// "Reason codes that accompany return code 4" (wskc_r_retcode4reasoncodes),
// "... return code 8" (wskc_r_appareascod8), "... return code 12"
// (wskc_r_appareascod12); and the codes openCryptoki's cca_specific.c
// handles (reference note host-libraries.md §1.15). Codes marked CHOSEN
// were not found documented for that situation; the double picks the
// nearest documented code and says so.
const (
	rsVerifyFailed   = 1    // 4/1: the verification test failed
	rsSigNotVerified = 429  // 4/429: the digital signature is not verified
	rsTVVInternal    = 29   // 8/29: the token-validation value in an internal key token is not valid
	rsKeyword        = 33   // 8/33: a rule_array or other parameter specifies a keyword that is not valid
	rsCombination    = 34   // 8/34: a keyword combination is not valid / conflicts with another keyword
	rsRuleCount      = 35   // 8/35: a rule_array_count is not valid
	rsCVViolation    = 39   // 8/39: a control vector violation occurred (key type not usable by the verb)
	rsMKVP           = 48   // 8/48: a key's master key verification pattern is not valid (OCK cca_mkchange.c)
	rsLength         = 72   // 8/72: a length parameter (key token, key or text field) is not valid
	rsTextLength     = 25   // 8/25: the value the text_length parameter specifies is not valid
	rsKeySizePKB     = 760  // 8/760: key size (CSNDPKB; OCK maps it to CKR_KEY_SIZE_RANGE)
	rsCurve          = 874  // 8/874: curve not supported (OCK is_curve_error)
	rsOAEPDecode     = 2053 // 8/2053: OAEP decoding failed (OCK maps to CKR_ENCRYPTED_DATA_INVALID)
	rsGCMTag         = 2947 // 8/2947: GCM authentication failed (OCK token_specific_aes_gcm)
	rsNoDevice       = 338  // 12/338: device driver not installed / not responding, CCA not loaded
	rsMKNotLoaded    = 764  // 12/764: the master keys are not loaded
	rsOldMK          = 10001
)

// ccaErr is a refusal: return and reason code plus what the double saw.
type ccaErr struct {
	rc, reason int64
	why        string
}

func (e *ccaErr) Error() string { return fmt.Sprintf("CCA %d/%d: %s", e.rc, e.reason, e.why) }

func refuse(rc, reason int64, format string, args ...any) error {
	return &ccaErr{rc: rc, reason: reason, why: fmt.Sprintf(format, args...)}
}

// ccaVerb is one verb: its argument count (the C parameter list, every
// parameter one argument) and handler.
type ccaVerb struct {
	nargs int
	fn    func(s *Server, c *call) error
}

var ccaVerbs = map[string]ccaVerb{
	"CSUACFV":  {6, (*Server).csuacfv},
	"CSUACFQ":  {8, (*Server).csuacfq},
	"CSUACRA":  {8, (*Server).csuacra},
	"CSUACRD":  {8, (*Server).csuacrd},
	"CSNBKTB2": {18, (*Server).csnbktb2},
	"CSNBKGN2": {25, (*Server).csnbkgn2},
	"CSNBKGN":  {12, (*Server).csnbkgn},
	"CSNDPKB":  {22, (*Server).csndpkb},
	"CSNDPKG":  {13, (*Server).csndpkg},
	"CSNDPKX":  {10, (*Server).csndpkx},
	"CSNBKTC":  {7, (*Server).csnbktc},
	"CSNBKTC2": {8, (*Server).csnbktc2},
	"CSNDKTC":  {8, (*Server).csndktc},
}

// UnimplementedCCA is what the double answers for the verbs it exports
// (openCryptoki resolves 97, host-libraries.md §1.1) but does not
// implement: 12/338, as if the coprocessor did not run that service, so a
// backend that calls one fails loudly.
const unimplementedReason = rsNoDevice

func (s *Server) cca(c *call) error {
	v, ok := ccaVerbs[c.req.Func]
	if !ok {
		// An exported but unimplemented verb: the C side sends the four
		// common parameters only.
		if err := c.nargs(4); err != nil {
			return err
		}
		return c.setCodes(12, unimplementedReason)
	}
	if err := c.nargs(v.nargs); err != nil {
		return err
	}
	err := v.fn(s, c)
	var ce *ccaErr
	switch {
	case err == nil:
		return c.setCodes(c.rc, c.reason)
	case errors.As(err, &ce):
		s.log.Debug().Str("verb", c.req.Func).Int64("rc", ce.rc).Int64("reason", ce.reason).Str("why", ce.why).Msg("CCA double refused")
		c.outs = c.outs[:0]
		c.outs = append(c.outs, c.lengthBack...)
		return c.setCodes(ce.rc, ce.reason)
	default:
		return err
	}
}

func (c *call) setCodes(rc, reason int64) error {
	c.rc, c.reason = rc, reason
	if err := c.setInt(0, rc); err != nil {
		return err
	}
	return c.setInt(1, reason)
}

// ---- rule arrays -------------------------------------------------------

// ruleGroup is a set of mutually exclusive keywords: at most one may be
// given; required groups must be given unless def names a default.
type ruleGroup struct {
	words    []string
	required bool
	def      string
}

// rules parses the rule array of arguments (countIdx, countIdx+1): 8-byte
// keywords, left-aligned and padded with blanks (csulincl.h, IBM
// "Parameters common to all verbs"). It returns the chosen keyword per
// group ("" when absent and no default). min/max bound the count (8/35).
func (c *call) rules(countIdx, min, max int, groups ...ruleGroup) ([]string, error) {
	n, ok := c.intArg(countIdx)
	if !ok {
		return nil, refuse(8, rsRuleCount, "rule_array_count is NULL")
	}
	if n < int64(min) || n > int64(max) {
		return nil, refuse(8, rsRuleCount, "rule_array_count %d, this verb takes %d..%d", n, min, max)
	}
	raw, ok := c.buf(countIdx + 1)
	if n > 0 && (!ok || len(raw) < int(n)*8) {
		return nil, refuse(8, rsRuleCount, "rule_array holds fewer than %d keywords", n)
	}
	words := make([]string, n)
	for i := range words {
		w, err := keyword(raw[i*8 : i*8+8])
		if err != nil {
			return nil, err
		}
		words[i] = w
	}
	chosen := make([]string, len(groups))
	for _, w := range words {
		found := false
		for gi, g := range groups {
			for _, gw := range g.words {
				if gw != w {
					continue
				}
				if chosen[gi] != "" {
					return nil, refuse(8, rsCombination, "keywords %s and %s conflict", chosen[gi], w)
				}
				chosen[gi], found = w, true
			}
		}
		if !found {
			return nil, refuse(8, rsKeyword, "keyword %q is not valid for %s", w, c.req.Func)
		}
	}
	for gi, g := range groups {
		if chosen[gi] == "" {
			if g.required {
				return nil, refuse(8, rsCombination, "%s needs one of %s", c.req.Func, strings.Join(g.words, ", "))
			}
			chosen[gi] = g.def
		}
	}
	return chosen, nil
}

// keyword decodes one 8-byte rule-array element: printable ASCII, left
// aligned, blank padded; anything else (NUL padding, lower case, an
// embedded blank) is not a keyword CCA knows (8/33).
func keyword(b []byte) (string, error) {
	w := strings.TrimRight(string(b), " ")
	if w == "" {
		return "", refuse(8, rsKeyword, "an empty (all blank) keyword")
	}
	for _, ch := range []byte(w) {
		if ch <= ' ' || ch > '~' || (ch >= 'a' && ch <= 'z') {
			return "", refuse(8, rsKeyword, "keyword %q is not 8 blank-padded upper-case characters", b)
		}
	}
	return w, nil
}

// kwParam checks a fixed 8-byte keyword parameter (key_form, key_length,
// key_type_1/2 of CSNBKGN/CSNBKGN2): blank padded; all blanks gives "".
func kwParam(b []byte, ok bool) (string, error) {
	if !ok || len(b) != 8 {
		return "", refuse(8, rsKeyword, "an 8-byte keyword parameter is missing")
	}
	if string(b) == "        " {
		return "", nil
	}
	return keyword(b)
}

// ---- lengths -----------------------------------------------------------

// inBuf is an input buffer whose length is argument lenIdx: it must be
// given and within [min, max] (8/72 otherwise).
func (c *call) inBuf(lenIdx int, min, max int64, name string) ([]byte, error) {
	n, ok := c.intArg(lenIdx)
	if !ok {
		return nil, refuse(8, rsLength, "%s_length is NULL", name)
	}
	if n < min || n > max {
		return nil, refuse(8, rsLength, "%s_length %d is outside %d..%d", name, n, min, max)
	}
	if n == 0 {
		return nil, nil
	}
	b, ok := c.buf(lenIdx + 1)
	if !ok || int64(len(b)) != n {
		return nil, refuse(8, rsLength, "%s is NULL or unreadable", name)
	}
	return b, nil
}

// zeroLen checks an unused length/data pair: a NULL length or a length of
// 0 (OCK passes both forms, host-libraries.md §1.7).
func (c *call) zeroLen(lenIdx int, name string) error {
	if c.isNull(lenIdx) {
		return nil
	}
	if n, _ := c.intArg(lenIdx); n != 0 {
		return refuse(8, rsLength, "%s_length must be 0, it is %d", name, n)
	}
	return nil
}

// output returns out through the buffer of argument lenIdx+1 and its
// length in lenIdx. A buffer too small is 8/72 with the needed length
// returned in the length parameter (the length-back behaviour the IBM
// pages describe for in/out length parameters; CHOSEN where a verb's page
// does not say).
func (c *call) output(lenIdx int, out []byte, name string) error {
	return c.outputAt(lenIdx, lenIdx+1, out, name)
}

// outputAt is output for a buffer that does not follow its length.
func (c *call) outputAt(lenIdx, bufIdx int, out []byte, name string) error {
	n, ok := c.intArg(lenIdx)
	if !ok {
		return refuse(8, rsLength, "%s_length is NULL", name)
	}
	if n < int64(len(out)) || int64(c.capOf(bufIdx)) < int64(len(out)) {
		c.lengthBack = append(c.lengthBack, Output{Index: uint16(lenIdx), Int: int64(len(out)), IsInt: true})
		return refuse(8, rsLength, "%s buffer of %d bytes, %d needed", name, n, len(out))
	}
	if err := c.setBytes(bufIdx, out); err != nil {
		return err
	}
	return c.setInt(lenIdx, int64(len(out)))
}

// ---- APQN selection (host-libraries.md §1.4) ---------------------------

// ccaCards lists the CCA coprocessors (card numbers, ascending) and their
// domains. CRPnn names the nn-th (1-based) of them: openCryptoki iterates
// DEVICE CRP01..CRPnn for the STATCRD2 count (§1.4).
func (s *Server) ccaCards(c *call) ([]uint8, map[uint8][]hsm.QueueInfo, error) {
	qs, err := s.h.Queues(c.ctx)
	if err != nil {
		return nil, nil, refuse(12, rsNoDevice, "simulator: %v", err)
	}
	byCard := map[uint8][]hsm.QueueInfo{}
	var cards []uint8
	for _, q := range qs {
		if q.Mode != apqn.ModeCCA {
			continue
		}
		if _, seen := byCard[q.ID.Card]; !seen {
			cards = append(cards, q.ID.Card)
		}
		byCard[q.ID.Card] = append(byCard[q.ID.Card], q)
	}
	if len(cards) == 0 {
		return nil, nil, refuse(12, rsNoDevice, "no CCA coprocessor in the simulator")
	}
	return cards, byCard, nil
}

// apqn is the APQN a verb runs on: the coprocessor the calling thread
// allocated (CSUACRA DEVICE/SERIAL, per thread), else the default adapter
// (CSU_DEFAULT_ADAPTER=CRPnn; unset or DEV-ANY: the first coprocessor);
// the domain the process allocated (CSUACRA DOMNnnnn), else
// CSU_DEFAULT_DOMAIN (a decimal domain; unset or DOM-ANY: the lowest
// domain of the card). An adapter or domain the simulator lacks, or an
// offline APQN, is 12/338.
func (s *Server) apqn(c *call) (hsm.QueueInfo, error) {
	cards, byCard, err := s.ccaCards(c)
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	idx := int(c.req.SelCard)
	if idx < 0 {
		idx = 0
		if v := s.env("CSU_DEFAULT_ADAPTER"); v != "" && v != "DEV-ANY" {
			n, ok := crpIndex(v)
			if !ok {
				return hsm.QueueInfo{}, refuse(12, rsNoDevice, "CSU_DEFAULT_ADAPTER=%q is not DEV-ANY or CRPnn", v)
			}
			idx = n
		}
	}
	if idx >= len(cards) {
		return hsm.QueueInfo{}, refuse(12, rsNoDevice, "CRP%02d: there are %d CCA coprocessors", idx+1, len(cards))
	}
	card := cards[idx]
	dom := int(c.req.SelDomain)
	if dom < 0 {
		dom = int(byCard[card][0].ID.Domain)
		if v := s.env("CSU_DEFAULT_DOMAIN"); v != "" && v != "DOM-ANY" {
			d, err := strconv.Atoi(v)
			if err != nil || d < 0 || d > 0xffff {
				return hsm.QueueInfo{}, refuse(12, rsNoDevice, "CSU_DEFAULT_DOMAIN=%q is not DOM-ANY or a domain number", v)
			}
			dom = d
		}
	}
	for _, q := range byCard[card] {
		if int(q.ID.Domain) == dom {
			if !q.Online {
				return hsm.QueueInfo{}, refuse(12, rsNoDevice, "APQN %s is offline", q.ID)
			}
			return q, nil
		}
	}
	return hsm.QueueInfo{}, refuse(12, rsNoDevice, "card %02X has no CCA domain %d", card, dom)
}

func crpIndex(v string) (int, bool) {
	if len(v) != 5 || !strings.HasPrefix(v, "CRP") {
		return 0, false
	}
	n, err := strconv.Atoi(v[3:])
	if err != nil || n < 1 || n > 65 {
		return 0, false
	}
	return n - 1, true
}

// simErr maps a simulator error to the CCA codes the real coprocessor
// gives for that situation.
func simErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, hsm.ErrWrongMK):
		return refuse(8, rsMKVP, "%v", err)
	case errors.Is(err, hsm.ErrRegisterState):
		return refuse(12, rsMKNotLoaded, "%v", err)
	case errors.Is(err, hsm.ErrOffline), errors.Is(err, hsm.ErrNoSuchAPQN):
		return refuse(12, rsNoDevice, "%v", err)
	case errors.Is(err, hsm.ErrBadBlob):
		return refuse(8, rsTVVInternal, "%v", err)
	case errors.Is(err, hsm.ErrWrongMode), errors.Is(err, hsm.ErrMechanism):
		return refuse(8, rsCVViolation, "%v", err)
	case errors.Is(err, hsm.ErrSignature):
		return refuse(4, rsSigNotVerified, "%v", err)
	case errors.Is(err, hsm.ErrBadData):
		return refuse(8, rsTextLength, "%v", err)
	}
	return refuse(16, 0, "simulator: %v", err)
}

// keyToken decodes a secure key token the verb was given and checks it is
// one of the layouts the verb accepts (8/39 otherwise: the key is not of
// a type the verb may use), and that its pattern names the CURRENT or OLD
// register of its master key on q (8/48; a key under OLD gets 0/10001 on
// success, IBM "Reason codes that accompany return code 0" as cited in
// opencryptoki-mkchange.md §4.6).
func (c *call) keyToken(q hsm.QueueInfo, tok []byte, layouts ...hsm.Layout) (hsm.Blob, error) {
	b, err := hsm.DecodeBlob(tok)
	if err != nil {
		return hsm.Blob{}, refuse(8, rsTVVInternal, "key token: %v", err)
	}
	ok := false
	for _, l := range layouts {
		ok = ok || l == b.Layout
	}
	if !ok {
		return hsm.Blob{}, refuse(8, rsCVViolation, "a %s token cannot be used by %s", b.Layout, c.req.Func)
	}
	regs := q.MK[b.MKType]
	switch {
	case regs.Current.State == apqn.StateValid && regs.Current.Pattern == b.Pattern:
	case regs.Old.State == apqn.StateValid && regs.Old.Pattern == b.Pattern:
		c.rc, c.reason = 0, rsOldMK
	default:
		return hsm.Blob{}, refuse(8, rsMKVP, "APQN %s: the token's %s pattern %s is neither CURRENT nor OLD", q.ID, b.MKType, b.Pattern)
	}
	return b, nil
}

// ---- CSUACFV, CSUACFQ, CSUACRA, CSUACRD --------------------------------

// DoubleVersion is what CSUACFV reports: a CCA 8.x library, above the
// 7.1 openCryptoki requires (host-libraries.md §1.2).
const DoubleVersion = "8.4.0"

// csuacfv: version_data_length (in/out), version_data: "V.R.M" NUL
// terminated (§1.2).
func (s *Server) csuacfv(c *call) error {
	out := append([]byte(DoubleVersion), 0)
	return c.output(4, out, "version_data")
}

// csuacfq answers the queries of §1.4/§1.5. Each query applies to the
// APQN the thread selected.
func (s *Server) csuacfq(c *call) error {
	ch, err := c.rules(4, 1, 1, ruleGroup{words: []string{"STATCCA", "STATCCAE", "STATAES", "STATAPKA", "STATICSB", "STATCRD2", "DOM-NUMS", "DOM-USAG"}, required: true})
	if err != nil {
		return err
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	elems := func(words ...string) error {
		capacity := c.capOf(5)
		out := make([]byte, 8*len(words))
		for i, w := range words {
			copy(out[i*8:], fmt.Sprintf("%-8s", w))
		}
		if len(out) > capacity {
			return refuse(4, 16, "rule_array of %d bytes cannot hold the %d keywords of %s", capacity, len(words), ch[0])
		}
		if err := c.setBytes(5, out); err != nil {
			return err
		}
		return c.setInt(4, int64(len(words)))
	}
	verbData := func(out []byte) error {
		if err := c.zeroLenOK(6); err != nil {
			return err
		}
		return c.output(6, out, "verb_data")
	}
	switch ch[0] {
	case "STATCCAE", "STATAES", "STATAPKA":
		// NMK state at element 1 (1 clear, 2 partial, 3 full), CMK at
		// element 2 (1 clear, 2 full) — OCK cca_stdll.h CCA_STAT*_NMK/CMK.
		// Element 3, the OLD register (1 clear, 2 full), follows IBM's
		// STATCCAE description; OCK does not read it.
		t := map[string]mkvp.Type{"STATCCAE": mkvp.CCASYM, "STATAES": mkvp.CCAAES, "STATAPKA": mkvp.CCAAPKA}[ch[0]]
		r := q.MK[t]
		return elems(newDigit(r.New.State), curDigit(r.Current.State), curDigit(r.Old.State))
	case "STATCCA":
		// Element 4 (byte 24) is the card's CCA version V.R.M (OCK
		// CCA_STATCCA_CCA_VERSION_OFFSET); elements 1..3 are the SYM
		// register states as in STATCCAE.
		r := q.MK[mkvp.CCASYM]
		return elems(newDigit(r.New.State), curDigit(r.Current.State), curDigit(r.Old.State), DoubleVersion)
	case "STATCRD2":
		// Element 1: number of coprocessors (ASCII decimal); element 15
		// (byte 112): the selected coprocessor's 8-character serial, as in
		// sysfs serialnr (OCK CCA_STATCRD2_*; zkey reads the same).
		cards, _, err := s.ccaCards(c)
		if err != nil {
			return err
		}
		w := make([]string, 15)
		for i := range w {
			w[i] = ""
		}
		w[0] = strconv.Itoa(len(cards))
		w[14] = ccaSerial(q.ID.Card)
		return elems(w...)
	case "STATICSB":
		return verbData(staticsb(q))
	case "DOM-NUMS", "DOM-USAG":
		_, byCard, err := s.ccaCards(c)
		if err != nil {
			return err
		}
		doms := byCard[q.ID.Card]
		if ch[0] == "DOM-NUMS" {
			return verbData(binary.BigEndian.AppendUint32(nil, uint32(len(doms))))
		}
		var out []byte
		for _, d := range doms {
			out = binary.BigEndian.AppendUint16(out, d.ID.Domain)
		}
		return verbData(out)
	}
	return fmt.Errorf("host-double: CSUACFQ %s unhandled", ch[0])
}

// zeroLenOK accepts any given verb_data_length (a query checks the needed
// size in output).
func (c *call) zeroLenOK(i int) error {
	if c.isNull(i) {
		return refuse(8, rsLength, "verb_data_length is NULL")
	}
	return nil
}

// ccaSerial is the serial number the simulator's sysfs shows for a CCA
// card (hsm/sim/sysfs.go).
func ccaSerial(card uint8) string { return fmt.Sprintf("93AAC%03X", card) }

func newDigit(st apqn.RegState) string {
	switch st {
	case apqn.StatePartial:
		return "2"
	case apqn.StateFull:
		return "3"
	}
	return "1"
}

func curDigit(st apqn.RegState) string {
	if st == apqn.StateValid {
		return "2"
	}
	return "1"
}

// staticsb lays out the STATICSB verb data: each 8-byte MKVP preceded by
// its 2-byte big-endian register ID (OCK cca_stdll.h CCA_STATICSB_*; IBM
// STATICSB page): SYM CMK 0x0F07 @134, NMK 0x0F06 @146; AES CMK 0x0F0B
// @182, NMK 0x0F0A @194; APKA CMK 0x0F0E @218, NMK 0x0F0D @230. Registers
// without a key carry zero patterns. The rest of the 240 bytes is zero: the
// other entries were not found in the sources read.
func staticsb(q hsm.QueueInfo) []byte {
	out := make([]byte, 240)
	put := func(at int, id uint16, r hsm.Register) {
		binary.BigEndian.PutUint16(out[at:], id)
		if r.Pattern.Len() == 8 {
			copy(out[at+2:at+10], r.Pattern.Bytes())
		}
	}
	sym, aes, apka := q.MK[mkvp.CCASYM], q.MK[mkvp.CCAAES], q.MK[mkvp.CCAAPKA]
	put(134, 0x0F07, sym.Current)
	put(146, 0x0F06, sym.New)
	put(182, 0x0F0B, aes.Current)
	put(194, 0x0F0A, aes.New)
	put(218, 0x0F0E, apka.Current)
	put(230, 0x0F0D, apka.New)
	return out
}

// resource parses CSUACRA/CSUACRD's device keyword and resource name
// (IBM "CSUACRA parameters": DEVICE with "CRPnn", length 5, nn 01..65;
// SERIAL with the 8-character serial number). It returns the coprocessor
// index.
func (s *Server) resource(c *call, kw string) (int, error) {
	name, err := c.inBuf(6, 0, 64, "resource_name")
	if err != nil {
		return 0, err
	}
	cards, _, err := s.ccaCards(c)
	if err != nil {
		return 0, err
	}
	switch kw {
	case "DEVICE":
		if len(name) != 5 {
			return 0, refuse(8, rsLength, "DEVICE needs a 5-byte resource name CRPnn, got %d bytes", len(name))
		}
		idx, ok := crpIndex(string(name))
		if !ok {
			return 0, refuse(8, rsKeyword, "resource name %q is not CRP01..CRP65", name)
		}
		if idx >= len(cards) {
			return 0, refuse(12, rsNoDevice, "%s: there are %d CCA coprocessors", name, len(cards))
		}
		return idx, nil
	case "SERIAL":
		if len(name) != 8 {
			return 0, refuse(8, rsLength, "SERIAL needs an 8-byte serial number, got %d bytes", len(name))
		}
		for i, card := range cards {
			if ccaSerial(card) == string(name) {
				return i, nil
			}
		}
		return 0, refuse(12, rsNoDevice, "no CCA coprocessor has serial number %q", name)
	}
	return 0, fmt.Errorf("host-double: resource keyword %s", kw)
}

// domainKW parses DOMNnnnn (4 decimal digits, OCK cca_specific.c) and
// checks the domain exists on some CCA coprocessor (12/338 otherwise).
func (s *Server) domainKW(c *call, kw string) (int, error) {
	d, err := strconv.Atoi(kw[4:])
	if err != nil || len(kw) != 8 {
		return 0, refuse(8, rsKeyword, "%q is not DOMN followed by 4 digits", kw)
	}
	_, byCard, err := s.ccaCards(c)
	if err != nil {
		return 0, err
	}
	for _, qs := range byCard {
		for _, q := range qs {
			if int(q.ID.Domain) == d {
				return d, nil
			}
		}
	}
	return 0, refuse(12, rsNoDevice, "no CCA coprocessor has domain %d", d)
}

// csuacra allocates a coprocessor to the calling thread and/or a domain to
// the process (IBM "Cryptographic Resource Allocate": coprocessor
// allocation is scoped to a thread, domain allocation to a process; "you
// cannot allocate a cryptographic resource while one is already
// allocated" — refused with 8/34, CHOSEN: no reason code was found for
// it). Rule count 1 or 2 (§1.4: IBM says 1, OCK passes 2).
func (s *Server) csuacra(c *call) error {
	words, err := c.rules(4, 1, 2,
		ruleGroup{words: []string{"DEVICE", "SERIAL", "DEV-ANY"}},
		ruleGroup{words: domnWords(c)})
	if err != nil {
		return err
	}
	if words[0] == "" && words[1] == "" {
		return refuse(8, rsCombination, "CSUACRA needs DEVICE, SERIAL, DEV-ANY or DOMNnnnn")
	}
	newCard, newDom := int64(c.req.SelCard), int64(c.req.SelDomain)
	switch words[0] {
	case "DEVICE", "SERIAL":
		if c.req.SelCard >= 0 {
			return refuse(8, rsCombination, "this thread already has CRP%02d allocated; deallocate it first (CSUACRD)", c.req.SelCard+1)
		}
		idx, err := s.resource(c, words[0])
		if err != nil {
			return err
		}
		newCard = int64(idx)
	case "DEV-ANY":
		// AUTOSELECT: the double balances nothing and uses the default.
		if err := c.zeroLen(6, "resource_name"); err != nil && !c.isNull(6) {
			n, _ := c.intArg(6)
			if n != 5 {
				return err
			}
		}
	default:
		if err := c.zeroLen(6, "resource_name"); err != nil {
			return err
		}
	}
	if words[1] != "" {
		if c.req.SelDomain >= 0 {
			return refuse(8, rsCombination, "domain %d is already allocated to this process", c.req.SelDomain)
		}
		d, err := s.domainKW(c, words[1])
		if err != nil {
			return err
		}
		newDom = int64(d)
	}
	c.special(OutSelCard, newCard)
	c.special(OutSelDomain, newDom)
	return nil
}

// domnWords lists the DOMNnnnn keywords present in the call so that the
// group accepts exactly those (their digits are checked in domainKW).
func domnWords(c *call) []string {
	var out []string
	raw, _ := c.buf(5)
	for i := 0; i+8 <= len(raw); i += 8 {
		w := strings.TrimRight(string(raw[i:i+8]), " ")
		if strings.HasPrefix(w, "DOMN") && w != "DOMN-DEF" {
			out = append(out, w)
		}
	}
	return append(out, "DOMN-DEF")
}

// csuacrd deallocates: DEVICE/SERIAL must name the coprocessor the thread
// allocated; DEV-ANY with CRP00 switches AUTOSELECT off (zkey);
// DOMN-DEF returns the process to the default domain (§1.4). Deallocating
// what is not allocated is 8/34 (CHOSEN).
func (s *Server) csuacrd(c *call) error {
	words, err := c.rules(4, 1, 2,
		ruleGroup{words: []string{"DEVICE", "SERIAL", "DEV-ANY"}},
		ruleGroup{words: []string{"DOMN-DEF"}})
	if err != nil {
		return err
	}
	if words[0] == "" && words[1] == "" {
		return refuse(8, rsCombination, "CSUACRD needs DEVICE, SERIAL, DEV-ANY or DOMN-DEF")
	}
	newCard, newDom := int64(c.req.SelCard), int64(c.req.SelDomain)
	switch words[0] {
	case "DEVICE", "SERIAL":
		idx, err := s.resource(c, words[0])
		if err != nil {
			return err
		}
		if int32(idx) != c.req.SelCard {
			return refuse(8, rsCombination, "CRP%02d is not allocated to this thread", idx+1)
		}
		newCard = -1
	case "DEV-ANY":
		name, err := c.inBuf(6, 0, 64, "resource_name")
		if err != nil {
			return err
		}
		if string(name) != "CRP00" {
			return refuse(8, rsKeyword, "DEV-ANY deallocation takes resource name CRP00, got %q", name)
		}
	}
	if words[1] == "DOMN-DEF" {
		newDom = -1
	}
	c.special(OutSelCard, newCard)
	c.special(OutSelDomain, newDom)
	return nil
}

// ---- key generation (§1.6, §1.7) ---------------------------------------

// Skeleton tokens. CSNBKTB2 and CSNDPKB build a token without key material
// that CSNBKGN2 / CSNDPKG then fill. They are the simulator's layouts
// (hsm/blob.go) with the key-material state 0x00 ("no key", IBM
// "AES CIPHER key token" byte 8) and no sealed payload.
func skeletonVL(alg byte) []byte {
	tok := make([]byte, 46)
	tok[0] = 0x01
	binary.BigEndian.PutUint16(tok[2:], 46)
	tok[4] = 0x05
	tok[26], tok[27] = 0x02, 0x02
	tok[41] = alg
	if alg == 0x02 {
		binary.BigEndian.PutUint16(tok[42:], 0x0001)
	} else {
		binary.BigEndian.PutUint16(tok[42:], 0x0002)
	}
	return tok
}

// skeletonPKA is the CSNDPKB skeleton: 0x1F header, then the private
// section ID (0x20 ECC, 0x31 RSA-AESC), the key bits at byte 20 and no
// MKVP, section length 8+... as the simulator's layouts, sealed length 0.
func skeletonPKA(section byte, bits int) []byte {
	tok := make([]byte, 24)
	tok[0] = 0x1f
	binary.BigEndian.PutUint16(tok[2:], uint16(len(tok)))
	tok[8] = section
	binary.BigEndian.PutUint16(tok[10:], 16)
	tok[12] = 0x00 // key-material state: none
	binary.BigEndian.PutUint16(tok[20:], uint16(bits))
	return tok
}

func parseSkeletonPKA(tok []byte) (section byte, bits int, ok bool) {
	if len(tok) != 24 || tok[0] != 0x1f || binary.BigEndian.Uint16(tok[2:]) != 24 || binary.BigEndian.Uint16(tok[10:]) != 16 || tok[12] != 0 {
		return 0, 0, false
	}
	return tok[8], int(binary.BigEndian.Uint16(tok[20:])), tok[8] == 0x20 || tok[8] == 0x31
}

var noexWords = []string{"NOEX-SYM", "NOEXUASY", "NOEXAASY", "NOEX-DES", "NOEX-AES", "NOEX-RSA"}

// csnbktb2 builds an AES CIPHER or HMAC skeleton (§1.6): INTERNAL, AES
// CIPHER NO-KEY ANY-MODE or HMAC MAC GENERATE, optional NOEX-* and
// XPRTCPAC. Every other length must be 0 (a clear key value is not taken
// with NO-KEY).
func (s *Server) csnbktb2(c *call) error {
	groups := []ruleGroup{
		{words: []string{"INTERNAL"}, required: true},
		{words: []string{"AES", "HMAC"}, required: true},
		{words: []string{"CIPHER", "MAC"}, required: true},
		{words: []string{"NO-KEY"}},
		{words: []string{"ANY-MODE"}},
		{words: []string{"GENERATE"}},
		{words: []string{"XPRTCPAC"}},
	}
	for _, w := range noexWords {
		groups = append(groups, ruleGroup{words: []string{w}})
	}
	ch, err := c.rules(4, 3, 16, groups...)
	if err != nil {
		return err
	}
	switch {
	case ch[1] == "AES" && ch[2] != "CIPHER", ch[1] == "HMAC" && ch[2] != "MAC":
		return refuse(8, rsCombination, "%s keys cannot be of key type %s", ch[1], ch[2])
	case ch[1] == "HMAC" && (ch[4] != "" || ch[6] != ""):
		return refuse(8, rsCombination, "ANY-MODE and XPRTCPAC are AES keywords")
	case ch[1] == "AES" && ch[5] != "":
		return refuse(8, rsCombination, "GENERATE is an HMAC key-usage keyword")
	case ch[3] != "NO-KEY" && ch[1] == "AES":
		return refuse(8, rsCombination, "the double builds skeletons only: give NO-KEY")
	}
	for i, name := range map[int]string{6: "clear_key_bit", 8: "key_name", 10: "user_associated_data", 12: "token_data", 14: "reserved"} {
		if err := c.zeroLen(i, name); err != nil {
			return err
		}
	}
	alg := byte(0x02)
	if ch[1] == "HMAC" {
		alg = 0x03
	}
	return c.output(16, skeletonVL(alg), "target_key_token")
}

// csnbkgn2 generates an AES or HMAC key into a CSNBKTB2 skeleton (§1.6):
// rules AES|HMAC + OP, key_type_1 TOKEN, key_type_2 blanks, bits
// 128/192/256 (AES) or 80..2048 (HMAC, OCK's range), all names, UADs and
// KEKs empty.
func (s *Server) csnbkgn2(c *call) error {
	ch, err := c.rules(4, 2, 2,
		ruleGroup{words: []string{"AES", "HMAC"}, required: true},
		ruleGroup{words: []string{"OP"}, required: true})
	if err != nil {
		return err
	}
	bits, ok := c.intArg(6)
	if !ok {
		return refuse(8, rsLength, "clear_key_bit_length is NULL")
	}
	kt1, err := kwParam(c.buf(7))
	if err != nil {
		return err
	}
	kt2, err := kwParam(c.buf(8))
	if err != nil {
		return err
	}
	if kt1 != "TOKEN" || kt2 != "" {
		return refuse(8, rsKeyword, "key_type_1 %q / key_type_2 %q: the double takes TOKEN and blanks", kt1, kt2)
	}
	for i, name := range map[int]string{9: "key_name_1", 11: "key_name_2", 13: "user_associated_data_1", 15: "user_associated_data_2", 17: "KEK_key_identifier_1", 19: "KEK_key_identifier_2", 23: "generated_key_identifier_2"} {
		if err := c.zeroLen(i, name); err != nil {
			return err
		}
	}
	spec := hsm.KeySpec{Type: hsm.KeyAES, Bits: int(bits)}
	alg := byte(0x02)
	if ch[0] == "HMAC" {
		spec.Type, alg = hsm.KeyHMAC, 0x03
		if bits < 80 || bits > 2048 || bits%8 != 0 {
			return refuse(8, rsLength, "HMAC key of %d bits (80..2048, multiple of 8)", bits)
		}
	} else if bits != 128 && bits != 192 && bits != 256 {
		return refuse(8, rsLength, "AES key of %d bits (128, 192, 256)", bits)
	}
	skel, err := c.inBuf(21, 1, MaxBuffer, "generated_key_identifier_1")
	if err != nil {
		return err
	}
	// The buffer may be larger than the skeleton (OCK passes its 455- or
	// 8000-byte buffer); the token's own length field (bytes 2-3) says
	// where it ends, as for every variable-length token.
	if len(skel) >= 4 && int(binary.BigEndian.Uint16(skel[2:])) <= len(skel) {
		skel = skel[:binary.BigEndian.Uint16(skel[2:])]
	}
	if len(skel) != 46 || string(skel) != string(skeletonVL(alg)) {
		return refuse(8, rsTVVInternal, "generated_key_identifier_1 is not a %s skeleton from CSNBKTB2", ch[0])
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	key, err := s.h.GenerateKey(c.ctx, q.ID, spec)
	if err != nil {
		return simErr(err)
	}
	return c.output(21, key, "generated_key_identifier_1")
}

// csnbkgn generates a DES DATA key (§1.6): key_form OP, key_length
// TRIPLE-O (the simulator makes three-key DES3 only; KEYLN8 and DOUBLE-O
// are refused with 8/33), key_type_1 DATA, key_type_2 eight zero bytes,
// KEKs 64 zero bytes. AES DATA (AESTOKEN) is not backed by the simulator
// (its AES keys are CIPHER tokens) and is refused with 8/33.
//
// The real token is 64 bytes; the simulator's DATA token is that 64-byte
// header followed by the sealed key (hsm/blob.go), so the generated-key
// buffers of this double hold CCADataTokenMax bytes (csulcca_double.h).
func (s *Server) csnbkgn(c *call) error {
	form, err := kwParam(c.buf(4))
	if err != nil {
		return err
	}
	klen, err := kwParam(c.buf(5))
	if err != nil {
		return err
	}
	kt1, err := kwParam(c.buf(6))
	if err != nil {
		return err
	}
	kt2raw, _ := c.buf(7)
	if form != "OP" {
		return refuse(8, rsKeyword, "key_form %q: the double generates OP keys only", form)
	}
	if kt1 != "DATA" {
		return refuse(8, rsKeyword, "key_type_1 %q: the double generates DES DATA keys only (AES: CSNBKTB2 + CSNBKGN2)", kt1)
	}
	if klen != "TRIPLE-O" {
		return refuse(8, rsKeyword, "key_length %q: the simulator has three-key DES3 only (TRIPLE-O)", klen)
	}
	if string(kt2raw) != string(make([]byte, 8)) {
		return refuse(8, rsKeyword, "key_type_2 must be 8 zero bytes for a single key")
	}
	for _, i := range []int{8, 9} {
		if b, _ := c.buf(i); string(b) != string(make([]byte, 64)) {
			return refuse(8, rsKeyword, "KEK_key_identifier_%d must be 64 zero bytes for OP", i-7)
		}
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	key, err := s.h.GenerateKey(c.ctx, q.ID, hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192})
	if err != nil {
		return simErr(err)
	}
	if len(key) > c.capOf(10) {
		return fmt.Errorf("host-double: DES token of %d bytes exceeds the fixed buffer of %d", len(key), c.capOf(10))
	}
	return c.setBytes(10, key)
}

// csndpkb builds an RSA or ECC skeleton (§1.7). RSA: RSA-AESC KEY-MGMT,
// key-values structure with the modulus bits BE16 @0, the exponent length
// @4 and the exponent @18 (0 or 65537: the simulator's RSA keys use
// 65537). ECC: ECC-PAIR KEY-MGMT ECC-VER1, 8-byte structure: curve type
// 0x00 (prime) @0, bits BE16 @2 (256 or 384), key lengths 0; reserved_2
// carries the 4-byte derivation data (0x02 AES, 0x01 DATA or 0x04 CIPHER,
// BE16 bits).
func (s *Server) csndpkb(c *call) error {
	ch, err := c.rules(4, 2, 3,
		ruleGroup{words: []string{"RSA-AESC", "ECC-PAIR"}, required: true},
		ruleGroup{words: []string{"KEY-MGMT"}, required: true},
		ruleGroup{words: []string{"ECC-VER1"}})
	if err != nil {
		return err
	}
	kvs, err := c.inBuf(6, 1, 8000, "key_values_structure")
	if err != nil {
		return err
	}
	if err := c.zeroLen(8, "key_name"); err != nil {
		return err
	}
	for _, i := range []int{14, 16, 18} {
		if err := c.zeroLen(i, fmt.Sprintf("reserved_%d", (i-10)/2+1)); err != nil {
			return err
		}
	}
	if err := c.zeroLen(10, "customer_data"); err != nil {
		return err
	}
	be := binary.BigEndian
	var skel []byte
	if ch[0] == "RSA-AESC" {
		if ch[2] != "" {
			return refuse(8, rsCombination, "ECC-VER1 is an ECC keyword")
		}
		if err := c.zeroLen(12, "reserved_2"); err != nil {
			return err
		}
		if len(kvs) < 18 {
			return refuse(8, rsLength, "RSA key-values structure of %d bytes is shorter than 18", len(kvs))
		}
		bits := int(be.Uint16(kvs[0:]))
		elen := int(be.Uint16(kvs[4:]))
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return refuse(8, rsKeySizePKB, "RSA modulus of %d bits (the simulator makes 2048, 3072, 4096)", bits)
		}
		if 18+elen > len(kvs) {
			return refuse(8, rsLength, "public exponent of %d bytes runs past the structure", elen)
		}
		e := new(big.Int).SetBytes(kvs[18 : 18+elen])
		if elen != 0 && e.Int64() != 65537 {
			return refuse(8, rsKeySizePKB, "public exponent %s: the simulator's RSA keys use 65537 (give 0 or 65537)", e)
		}
		skel = skeletonPKA(0x31, bits)
	} else {
		if ch[2] != "ECC-VER1" {
			return refuse(8, rsCombination, "ECC-PAIR needs ECC-VER1 (OCK) for KEY-MGMT keys")
		}
		if len(kvs) != 8 {
			return refuse(8, rsLength, "ECC key-values structure of %d bytes, want 8", len(kvs))
		}
		bits := int(be.Uint16(kvs[2:]))
		if kvs[0] != 0x00 || (bits != 256 && bits != 384) {
			return refuse(8, rsCurve, "curve type 0x%02x of %d bits: the simulator has prime P-256 and P-384", kvs[0], bits)
		}
		if be.Uint16(kvs[4:]) != 0 || be.Uint16(kvs[6:]) != 0 {
			return refuse(8, rsLength, "private and public key lengths must be 0 in a skeleton")
		}
		deriv, err := c.inBuf(12, 4, 4, "reserved_2")
		if err != nil {
			return err
		}
		if deriv[0] != 0x02 || (deriv[1] != 0x01 && deriv[1] != 0x04) {
			return refuse(8, rsKeyword, "ECC key-derivation data: algorithm 0x%02x, key type 0x%02x", deriv[0], deriv[1])
		}
		skel = skeletonPKA(0x20, bits)
	}
	return c.output(20, skel, "token")
}

// csndpkg generates the key pair of a CSNDPKB skeleton under the CURRENT
// APKA master key (rule MASTER, §1.7): no regeneration data, transport
// key 64 zero bytes.
func (s *Server) csndpkg(c *call) error {
	if _, err := c.rules(4, 1, 1, ruleGroup{words: []string{"MASTER"}, required: true}); err != nil {
		return err
	}
	if err := c.zeroLen(6, "regeneration_data"); err != nil {
		return err
	}
	skel, err := c.inBuf(8, 1, 8000, "skeleton_key_token")
	if err != nil {
		return err
	}
	section, bits, ok := parseSkeletonPKA(skel)
	if !ok {
		return refuse(8, rsTVVInternal, "skeleton_key_token is not a skeleton from CSNDPKB")
	}
	if tk, _ := c.buf(10); string(tk) != string(make([]byte, 64)) {
		return refuse(8, rsKeyword, "transport_key_identifier must be 64 zero bytes with MASTER")
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	spec := hsm.KeySpec{Type: hsm.KeyRSA, Bits: bits}
	if section == 0x20 {
		spec.Type = hsm.KeyEC
	}
	priv, _, err := s.h.GenerateKeyPair(c.ctx, q.ID, spec)
	if err != nil {
		return simErr(err)
	}
	return c.output(11, priv, "generated_key_identifier")
}

// csndpkx extracts the external public key token (first byte 0x1E) of a
// private token (§1.7, rule count 0). RSA: section 0x04 with the exponent
// length @+6, modulus bits @+8, modulus length @+10, e @+12, n after e.
// ECC: section 0x21, curve type @+8, bits @+10, Q length @+12, Q
// (uncompressed 0x04‖X‖Y) @+14. These are the offsets openCryptoki reads
// (cca_specific.c, cca_rsa_exttok_*, token_create_ec_keypair).
func (s *Server) csndpkx(c *call) error {
	if _, err := c.rules(4, 0, 0); err != nil {
		return err
	}
	src, err := c.inBuf(6, 1, 8000, "source_key_identifier")
	if err != nil {
		return err
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	if _, err := c.keyToken(q, src, hsm.LayoutCCAECC, hsm.LayoutCCARSACRT, hsm.LayoutCCARSAME); err != nil {
		return err
	}
	spki, err := s.h.PublicKey(c.ctx, q.ID, src)
	if err != nil {
		return simErr(err)
	}
	tok, err := PublicToken(spki)
	if err != nil {
		return err
	}
	return c.output(8, tok, "target_key_token")
}

// PublicToken lays out the CCA external public key token of a DER
// SubjectPublicKeyInfo (see csndpkx for the offsets).
func PublicToken(spki []byte) ([]byte, error) {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, errclass.New(errclass.Internal, "host-double: public key: %w", err)
	}
	be := binary.BigEndian
	var sec []byte
	switch k := pub.(type) {
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		n := k.N.Bytes()
		sec = make([]byte, 12, 12+len(e)+len(n))
		sec[0] = 0x04
		be.PutUint16(sec[6:], uint16(len(e)))
		be.PutUint16(sec[8:], uint16(k.N.BitLen()))
		be.PutUint16(sec[10:], uint16(len(n)))
		sec = append(append(sec, e...), n...)
	case *ecdsa.PublicKey:
		ek, err := k.ECDH()
		if err != nil {
			return nil, errclass.New(errclass.Internal, "host-double: EC key: %w", err)
		}
		pt := ek.Bytes()
		sec = make([]byte, 14, 14+len(pt))
		sec[0] = 0x21
		sec[8] = 0x00
		be.PutUint16(sec[10:], uint16(k.Curve.Params().BitSize))
		be.PutUint16(sec[12:], uint16(len(pt)))
		sec = append(sec, pt...)
	default:
		return nil, errclass.New(errclass.Internal, "host-double: public key of type %T", pub)
	}
	be.PutUint16(sec[2:], uint16(len(sec)))
	tok := make([]byte, 8, 8+len(sec))
	tok[0] = 0x1e
	tok = append(tok, sec...)
	be.PutUint16(tok[2:], uint16(len(tok)))
	return tok, nil
}

// ParsePublicToken is the inverse of PublicToken: it returns the DER
// SubjectPublicKeyInfo, or ok=false for anything that is not exactly an
// external public token.
func ParsePublicToken(tok []byte) ([]byte, bool) {
	be := binary.BigEndian
	if len(tok) < 8+14 || tok[0] != 0x1e || int(be.Uint16(tok[2:])) != len(tok) {
		return nil, false
	}
	sec := tok[8:]
	if int(be.Uint16(sec[2:])) != len(sec) {
		return nil, false
	}
	var pub any
	switch sec[0] {
	case 0x04:
		el, nl := int(be.Uint16(sec[6:])), int(be.Uint16(sec[10:]))
		if 12+el+nl != len(sec) || el == 0 || el > 8 {
			return nil, false
		}
		e := new(big.Int).SetBytes(sec[12 : 12+el])
		n := new(big.Int).SetBytes(sec[12+el:])
		if n.BitLen() != int(be.Uint16(sec[8:])) || !e.IsInt64() {
			return nil, false
		}
		pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
	case 0x21:
		ql := int(be.Uint16(sec[12:]))
		if 14+ql != len(sec) || sec[8] != 0 {
			return nil, false
		}
		var curve elliptic.Curve
		switch be.Uint16(sec[10:]) {
		case 256:
			curve = elliptic.P256()
		case 384:
			curve = elliptic.P384()
		default:
			return nil, false
		}
		x, y := elliptic.Unmarshal(curve, sec[14:]) //nolint:staticcheck // validated point decoding
		if x == nil {
			return nil, false
		}
		pub = &ecdsa.PublicKey{Curve: curve, X: x, Y: y}
	default:
		return nil, false
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, false
	}
	return der, true
}

// ---- re-encipher (§1.14) -----------------------------------------------

func (c *call) ktcRules(min, max int, algs ...string) (dir hsm.Direction, alg string, err error) {
	ch, err := c.rules(4, min, max,
		ruleGroup{words: []string{"RTNMK", "RTCMK"}, required: true},
		ruleGroup{words: algs, def: algs[0]})
	if err != nil {
		return 0, "", err
	}
	dir = hsm.ToNew
	if ch[0] == "RTCMK" {
		dir = hsm.FromOld
	}
	return dir, ch[1], nil
}

// reencipher runs RTNMK (CURRENT→NEW: NEW must be full, else 12/764;
// the token must be under CURRENT, else 8/48) or RTCMK (OLD→CURRENT: the
// token must be under OLD, else 8/48) on the selected APQN.
func (s *Server) reencipher(c *call, tok []byte, dir hsm.Direction, layouts ...hsm.Layout) ([]byte, error) {
	q, err := s.apqn(c)
	if err != nil {
		return nil, err
	}
	b, err := hsm.DecodeBlob(tok)
	if err != nil {
		return nil, refuse(8, rsTVVInternal, "key token: %v", err)
	}
	ok := false
	for _, l := range layouts {
		ok = ok || l == b.Layout
	}
	if !ok {
		return nil, refuse(8, rsCombination, "a %s token does not fit %s with these keywords", b.Layout, c.req.Func)
	}
	// The token is checked before the registers: its pattern must name the
	// register the direction starts from (8/48, OCK cca_mkchange.c).
	regs := q.MK[b.MKType]
	from := regs.Current
	if dir == hsm.FromOld {
		from = regs.Old
	}
	if from.State != apqn.StateValid || from.Pattern != b.Pattern {
		return nil, refuse(8, rsMKVP, "APQN %s: the token's %s pattern %s is not the %s register's", q.ID, b.MKType, b.Pattern,
			map[hsm.Direction]string{hsm.ToNew: "CURRENT", hsm.FromOld: "OLD"}[dir])
	}
	if dir == hsm.ToNew && regs.New.State != apqn.StateFull {
		return nil, refuse(12, rsMKNotLoaded, "APQN %s: RTNMK needs the NEW %s register full, it is %s", q.ID, b.MKType, regs.New.State)
	}
	out, err := s.h.Reencipher(c.ctx, q.ID, tok, dir)
	if err != nil {
		return nil, simErr(err)
	}
	if len(out) != len(tok) {
		return nil, fmt.Errorf("host-double: re-enciphered token changed length %d → %d", len(tok), len(out))
	}
	return out, nil
}

// csnbktc: 64-byte DATA tokens changed in place; RTNMK|RTCMK, then DES
// (default) or AES.
func (s *Server) csnbktc(c *call) error {
	dir, alg, err := c.ktcRules(1, 2, "DES", "AES")
	if err != nil {
		return err
	}
	tok, ok := c.buf(6)
	if !ok {
		return refuse(8, rsLength, "key_identifier is NULL or not a DATA token")
	}
	layout := hsm.LayoutCCADESData
	if alg == "AES" {
		layout = hsm.LayoutCCAAESData
	}
	out, err := s.reencipher(c, tok, dir, layout)
	if err != nil {
		return err
	}
	return c.setBytes(6, out)
}

// csnbktc2: variable-length tokens; count must be 2 and the algorithm
// keyword (AES or HMAC) is required (IBM "CSNBKTC2 parameters").
func (s *Server) csnbktc2(c *call) error {
	ch, err := c.rules(4, 2, 2,
		ruleGroup{words: []string{"RTNMK", "RTCMK"}, required: true},
		ruleGroup{words: []string{"AES", "HMAC"}, required: true})
	if err != nil {
		return err
	}
	dir := hsm.ToNew
	if ch[0] == "RTCMK" {
		dir = hsm.FromOld
	}
	tok, err := c.inBuf(6, 1, 8000, "key_identifier")
	if err != nil {
		return err
	}
	layout := hsm.LayoutCCAAESCipher
	if ch[1] == "HMAC" {
		layout = hsm.LayoutCCAHMAC
	}
	out, err := s.reencipher(c, tok, dir, layout)
	if err != nil {
		return err
	}
	return c.output(6, out, "key_identifier")
}

// csndktc: PKA private tokens; the token-type keyword RSA (default), ECC
// or QSA is optional (IBM "CSNDKTC parameters").
func (s *Server) csndktc(c *call) error {
	dir, alg, err := c.ktcRules(1, 2, "RSA", "ECC", "QSA")
	if err != nil {
		return err
	}
	tok, err := c.inBuf(6, 1, 8000, "key_id")
	if err != nil {
		return err
	}
	layouts := []hsm.Layout{hsm.LayoutCCARSACRT, hsm.LayoutCCARSAME}
	switch alg {
	case "ECC":
		layouts = []hsm.Layout{hsm.LayoutCCAECC}
	case "QSA":
		layouts = nil
	}
	out, err := s.reencipher(c, tok, dir, layouts...)
	if err != nil {
		return err
	}
	return c.output(6, out, "key_id")
}

// CCADESTokenLen is the length of a simulator DES DATA token, which the
// double's CSNBKGN writes into its fixed-size output buffers (see
// c/hostdouble.h, HD_CCA_DES_TOKEN_LEN).
const CCADESTokenLen = 64 + 28 + 24
