package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// errCase is one input that must be rejected. line is the line the message
// must name (0: the message names the file without a line).
type errCase struct {
	name string
	in   string
	line int
	want string // substring of the message
}

func checkErrors(t *testing.T, file string, parse func(string, []byte) error, cases []errCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			err := parse(file, []byte(tt.in))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.in)
			}
			msg := err.Error()
			if !errors.Is(err, errclass.InvalidArgument) {
				t.Errorf("class = %v, want invalid argument (%s)", errclass.Of(err), msg)
			}
			if errclass.Hint(err) == "" {
				t.Errorf("no hint: %s", msg)
			}
			prefix := file + ":"
			if tt.line > 0 {
				prefix = fmt.Sprintf("%s:%d: ", file, tt.line)
			}
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("message %q does not start with %q", msg, prefix)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
		})
	}
}

const okGlobal = "hsm-backend = simulator\n"

func TestGrammarErrors(t *testing.T) {
	checkErrors(t, "g.conf", func(f string, b []byte) error { _, err := parseFile(f, b); return err }, []errCase{
		{"unterminated string", "a = \"abc\nb", 1, "unterminated quoted string"},
		{"unterminated string at EOF", "a = \"abc", 1, "unterminated quoted string"},
		{"control character", "a = \"a\x01b\"", 1, "control character 0x01"},
		{"invalid UTF-8", "a = \"\xff\"", 1, "not valid UTF-8"},
		{"octal-looking number", "\nslot 010 {}", 2, `invalid number "010": leading zeros`},
		{"bad hex", "a = 0x1g", 1, `invalid number "0x1g": not hexadecimal`},
		{"bare 0x", "a = 0x", 1, `invalid number "0x"`},
		{"number then letters", "a = 12ab", 1, "followed directly by letters"},
		{"three-part version", "a = 1.2.3", 1, "want major.minor"},
		{"version part too large", "a = 70000.1", 1, "at most 65535"},
		{"number too large", "a = 0x1ffffffffffffffff", 1, "too large"},
		{"decimal too large", "a = 99999999999999999999", 1, "too large"},
		{"unexpected character", "a = @", 1, "unexpected character '@'"},
		{"word starting with underscore", "_a", 1, "unexpected character '_'"},
		{"stray closing brace", "a\n}", 2, `unexpected "}" outside a block`},
		{"unclosed block", "a {\nb = 1\n", 1, "block opened here is not closed"},
		{"missing value", "a =\n", 1, `expected a value after "=", found end of line`},
		{"value is a brace", "a = {", 1, `expected a value after "="`},
		{"index without block", "slot 3 x", 1, `slot 3: expected "{", found word "x"`},
		{"index at EOF", "slot 3", 1, `slot 3: expected "{", found end of file`},
		{"trailing comma in list", "s (on,)", 1, `expected a word in the list, found ")"`},
		{"missing comma in list", "s (on off)", 1, `expected "," or ")"`},
		{"number in list", "s (1)", 1, "expected a word in the list, found number 1"},
		{"unclosed list", "s (on", 1, "found end of file"},
		{"single number in pair list", "L\n1\nEND", 2, "expected two numbers (adapter domain)"},
		{"three numbers in pair list", "L\n1 2 3\nEND", 2, "expected the end of the line after 1 2"},
		{"unterminated pair list", "L\n1 2\n", 1, "not terminated with END"},
		{"string in pair list", "L\n1 2\n\"x\"\n", 3, "expected a pair of numbers or END"},
		{"nesting too deep", strings.Repeat("a {\n", maxDepth+1), maxDepth + 1, "nested more than"},
		{"junk after file version", "version 1 2", 1, "after the file version"},
		{"element starting with =", "= 3", 1, `unexpected "="`},
		{"element starting with number", "3", 1, "unexpected number 3"},
		{"too large", strings.Repeat("#", maxFileSize+1), 0, "larger than"},
	})
}

func TestGlobalErrors(t *testing.T) {
	slot := func(body string) string { return okGlobal + "slot 1 {\n" + body + "\n}\n" }
	checkErrors(t, "pkcshsm.conf", func(f string, b []byte) error { _, err := ParseGlobal(f, b); return err }, []errCase{
		{"missing hsm-backend", "slot 1 { token-type = cca }", 0, "hsm-backend is not set"},
		{"empty file", "", 0, "hsm-backend is not set"},
		{"unknown backend", "hsm-backend = cca-hw", 1, `hsm-backend "cca-hw" is not supported`},
		{"backend without value", "hsm-backend", 1, "hsm-backend needs a value"},
		{"backend twice", okGlobal + okGlobal, 2, "hsm-backend is given twice (first on line 1)"},
		{"relative simulator-dir", okGlobal + "simulator-dir = sim", 2, "simulator-dir must be an absolute path"},
		{"simulator-dir without value", okGlobal + "simulator-dir", 2, "simulator-dir must be an absolute path"},
		{"slot number too large", okGlobal + "slot 1024 { token-type = cca }", 2, "slot 1024: slot number is too large"},
		{"slot number in hex too large", okGlobal + "slot 0x400 { token-type = cca }", 2, "slot 1024"},
		{"duplicate slot", okGlobal + "slot 1 { token-type = cca }\nslot 1 { token-type = ep11 }", 3, "slot 1 is defined twice (first on line 2)"},
		{"slot without number", okGlobal + "slot { token-type = cca }", 2, "slot needs a number"},
		{"slot as value", okGlobal + "slot = 3", 2, "slot needs a number"},
		{"unknown keyword", okGlobal + "foo = 1", 2, "unexpected number value foo at the top level"},
		{"keyword case", okGlobal + "Disable-Event-Support", 2, `unknown keyword "Disable-Event-Support"`},
		{"stray string", okGlobal + `"x"`, 2, `unexpected quoted string "x"`},
		{"version not first", okGlobal + "version x", 2, "version must be the first element"},
		{"disable-event-support with value", okGlobal + "disable-event-support = 1", 2, "takes no value"},
		{"disable-event-support twice", okGlobal + "disable-event-support\ndisable-event-support", 3, "given twice"},
		{"statistics not a list", okGlobal + "statistics = on", 2, "statistics needs a list"},
		{"statistics unknown value", okGlobal + "statistics (on, loud)", 2, `statistics: unknown value "loud"`},
		{"statistics off and on", okGlobal + "statistics (off, on)", 2, "off cannot be combined"},
		{"statistics implicit alone", okGlobal + "statistics (implicit)", 2, "implicit and internal need on"},
		{"statistics empty", okGlobal + "statistics ()", 2, "statistics: empty list"},
		{"statistics twice", okGlobal + "statistics (on)\nstatistics (off)", 3, "statistics is given twice (first on line 2)"},
		{"simulator-dir twice", okGlobal + "simulator-dir = /a\nsimulator-dir = /b", 3, "simulator-dir is given twice"},
		{"grammar error", okGlobal + "slot 1 { token-type = cca", 2, "block opened here is not closed"},
		{"statistics repeated value", okGlobal + "statistics (on, on)", 2, `"on" is given twice`},
		{"slot unknown key", slot("token-type = cca\ncolour = blue"), 4, "slot 1: unknown key colour"},
		{"slot key case", slot("Token-Type = cca"), 3, "slot 1: unknown key Token-Type"},
		{"slot stray string", slot(`"x"`), 3, `slot 1: unknown key "x"`},
		{"slot duplicate key", slot("token-type = cca\ntokname = a\ntokname = b"), 5, "slot 1: tokname is given twice (first on line 4)"},
		{"hwversion not a version", slot("token-type = cca\nhwversion = 1"), 4, "hwversion needs a major.minor version"},
		{"tokversion as string", slot("token-type = cca\ntokversion = \"3.12\""), 4, "tokversion needs a major.minor version"},
		{"description without value", slot("token-type = cca\ndescription"), 4, "description needs a word or a quoted string"},
		{"description as number", slot("token-type = cca\ndescription = 5"), 4, "description needs a word or a quoted string"},
		{"unsupported stdll", slot("stdll = libpkcs11_sw.so"), 2, `stdll "libpkcs11_sw.so" is not a token pkcshsm provides`},
		{"stdll contradicts token-type", slot("token-type = ep11\nstdll = libpkcs11_cca.so"), 3, "token-type ep11 contradicts stdll"},
		{"no token type", slot("tokname = x"), 2, "slot 1: the token type is not set"},
		{"unknown token type", slot("token-type = soft"), 3, `unknown token-type "soft"`},
		{"token type case", slot("token-type = CCA"), 3, `unknown token-type "CCA"`},
		{"description too long", slot("token-type = cca\ndescription = \"" + strings.Repeat("d", 65) + "\""), 4, "description is 65 characters long, the limit is 64"},
		{"manufacturer too long", slot("token-type = cca\nmanufacturer = \"" + strings.Repeat("m", 33) + "\""), 4, "limit is 32"},
		{"stdll too long", slot("stdll = \"" + strings.Repeat("s", 256) + "\""), 3, "limit is 255"},
		{"reserved tokname", slot("token-type = cca\ntokname = HSM_MK_CHANGE"), 4, "tokname HSM_MK_CHANGE is reserved"},
		{"reserved tokname other case", slot("token-type = cca\ntokname = hsm_mk_change"), 4, "is reserved"},
		{"tokname with slash", slot("token-type = cca\ntokname = a/b"), 4, `tokname "a/b" contains '/'`},
		{"tokname dotfile", slot("token-type = cca\ntokname = .hidden"), 4, "is not a plain name"},
		{"tokname dotdot", slot("token-type = cca\ntokname = .."), 4, "is not a plain name"},
		{"tokname empty", slot("token-type = cca\ntokname = \"\""), 4, "is not a plain name"},
		{"tokname with space", slot("token-type = cca\ntokname = \"a b\""), 4, "contains ' '"},
		{"tokname too long", slot("token-type = cca\ntokname = " + strings.Repeat("t", 65)), 4, "is not a plain name"},
		{"confname relative with slash", slot("token-type = cca\nconfname = sub/cca.conf"), 4, "neither an absolute path nor a plain file name"},
		{"confname dotdot", slot("token-type = cca\nconfname = .."), 4, "neither an absolute path"},
		{"confname empty", slot("token-type = cca\nconfname = \"\""), 4, "neither an absolute path"},
		{"usergroup starting with digit", slot("token-type = cca\nusergroup = \"1abc\""), 4, `usergroup "1abc" is not a valid group name`},
		{"usergroup with space", slot("token-type = cca\nusergroup = \"a b\""), 4, "not a valid group name"},
		{"duplicate default tokname", okGlobal + "slot 1 { token-type = cca }\nslot 2 { stdll = libpkcs11_cca.so }", 3, `slot 2: token name "ccatok" is already used by slot 1`},
		{"duplicate explicit tokname", okGlobal + "slot 1 { token-type = cca\ntokname = t }\nslot 2 {\ntoken-type = ep11\ntokname = t }", 4, `token name "t" is already used`},
	})
}

const okCCA = "APQN_ANY\n"

func TestCCAErrors(t *testing.T) {
	mk := func(body string) string { return "EXPECTED_MKVPS {\n" + body + "\n}\n" }
	checkErrors(t, "ccatok.conf", func(f string, b []byte) error { _, err := ParseCCA(f, b); return err }, []errCase{
		{"unknown keyword", "FOO", 1, "unknown keyword FOO"},
		{"grammar error", "APQN_ALLOWLIST\n1 2", 1, "not terminated with END"},
		{"LOGLEVEL", "LOGLEVEL = 3", 1, "unknown keyword LOGLEVEL"},
		{"EP11-only keyword", "STRICT_MODE", 1, "unknown keyword STRICT_MODE"},
		{"stray string", `"abc"`, 1, `unexpected quoted string "abc"`},
		{"short pattern", "\n\n" + mk("\nAES = \"12\""), 5, `EXPECTED_MKVPS: CCA AES pattern "12" is too short`},
		{"long pattern", mk("SYM = \"112233445566778899\""), 2, "is too long"},
		{"non-hex pattern", mk("APKA = \"11223344556677zz\""), 2, "is not hexadecimal"},
		{"ASYM pattern", mk("ASYM = \"1122334455667788\""), 2, "EXPECTED_MKVPS: unknown key ASYM"},
		{"unknown pattern key", mk("WK = \"1122334455667788\""), 2, "EXPECTED_MKVPS: unknown key WK"},
		{"string in pattern block", mk(`"1122334455667788"`), 2, "EXPECTED_MKVPS: unknown key \"1122334455667788\""},
		{"unquoted pattern", mk("AES = ABCDEF0123456789"), 2, "AES needs a quoted pattern"},
		{"duplicate pattern key", mk("AES = \"1122334455667788\"\naes = \"1122334455667788\""), 3, "EXPECTED_MKVPS: AES is given twice (first on line 2)"},
		{"pattern block as value", "EXPECTED_MKVPS = x", 1, "EXPECTED_MKVPS needs a { ... } block"},
		{"pattern block twice", mk("") + mk(""), 4, "EXPECTED_MKVPS is given twice"},
		{"AES_KEY_MODE case", "AES_KEY_MODE = data", 1, `AES_KEY_MODE: unknown value "data"`},
		{"AES_KEY_MODE unknown", "AES_KEY_MODE = VARIABLE", 1, `unknown value "VARIABLE"`},
		{"AES_KEY_MODE without value", "AES_KEY_MODE", 1, "AES_KEY_MODE needs a value"},
		{"AES_KEY_MODE old style", "AES_KEY_MODE CIPHER", 1, "AES_KEY_MODE needs a value"},
		{"PKEY_MODE EP11 value", "PKEY_MODE = ENABLE4ALL", 1, `PKEY_MODE: unknown value "ENABLE4ALL"`},
		{"ML_DSA_KEY_MODE unknown", "ML_DSA_KEY_MODE = BOTH", 1, "unknown value"},
		{"both APQN modes", "APQN_ANY\nAPQN_ALLOWLIST\n1 2\nEND", 2, "only one APQN mode may be given: APQN_ANY (line 1) and APQN_ALLOWLIST (line 2)"},
		{"allowlist without pairs", "APQN_ALLOWLIST\nEND", 1, "APQN_ALLOWLIST needs a list of adapter domain pairs"},
		{"allowlist other terminator", "APQN_ALLOWLIST\n1 2\nSTOP", 1, `list ends with "STOP" instead of END`},
		{"adapter out of range", "APQN_ALLOWLIST\n1 2\n256 1\nEND", 3, "adapter 256 is out of range"},
		{"domain out of range", "APQN_ALLOWLIST\n0x100 0x1\nEND", 2, "adapter 256 is out of range"},
		{"domain above 255", "APQN_ALLOWLIST\n1 0x100\nEND", 2, "domain 256 is out of range"},
		{"duplicate APQN", "APQN_ALLOWLIST\n1 2\n0x01 0x02\nEND", 3, "APQN 01.0002 is listed twice (first on line 2)"},
		{"two allowlists", "APQN_ALLOWLIST\n1 2\nEND\napqn_whitelist\n1 3\nEND", 4, "APQN_ALLOWLIST is given twice"},
		{"APQN_ANY with value", "APQN_ANY = yes", 1, "APQN_ANY takes no value"},
		{"FORCE_SENSITIVE with value", "FORCE_SENSITIVE = yes", 1, "FORCE_SENSITIVE takes no value"},
		{"FORCE_SENSITIVE twice", "FORCE_SENSITIVE\nforce_sensitive", 2, "FORCE_SENSITIVE is given twice"},
	})
}

func TestEP11Errors(t *testing.T) {
	checkErrors(t, "ep11tok.conf", func(f string, b []byte) error { _, err := ParseEP11(f, b); return err }, []errCase{
		{"no APQN mode", "FORCE_SENSITIVE", 0, "at least one APQN mode is required"},
		{"grammar error", "APQN_ANY\nCPFILTER = ", 2, "expected a value"},
		{"empty file", "", 0, "at least one APQN mode is required"},
		{"both APQN modes", "APQN_ALLOWLIST\n1 2\nEND\nAPQN_ANY", 4, "only one APQN mode may be given: APQN_ANY (line 4) and APQN_ALLOWLIST (line 1)"},
		{"allowlist and whitelist", "APQN_ALLOWLIST\n1 2\nEND\nAPQN_WHITELIST\n1 3\nEND", 4, "APQN_ALLOWLIST is given twice (first on line 1)"},
		{"FIPS with STRICT", "APQN_ANY\nSTRICT_MODE\nFIPS_SESSION_MODE", 3, "FIPS_SESSION_MODE cannot be combined with STRICT_MODE (line 2)"},
		{"FIPS with VHSM", "APQN_ANY\nFIPS_SESSION_MODE\nVHSM_MODE", 2, "cannot be combined with VHSM_MODE (line 3)"},
		{"keyword case", "APQN_ANY\nstrict_mode", 2, "unknown keyword strict_mode"},
		{"allowlist lower case", "apqn_allowlist\n1 2\nEND", 1, "unknown keyword apqn_allowlist"},
		{"LOGLEVEL", "APQN_ANY\nLOGLEVEL = 3", 2, "unknown keyword LOGLEVEL"},
		{"CCA-only keyword", "APQN_ANY\nAES_KEY_MODE = DATA", 2, "unknown keyword AES_KEY_MODE"},
		{"stray string", "APQN_ANY\n\"x\"", 2, `unexpected quoted string "x"`},
		{"terminator lower case", "APQN_ALLOWLIST\n1 2\nend", 1, `list ends with "end" instead of END`},
		{"allowlist without pairs", "APQN_ALLOWLIST\nEND", 1, "APQN_ALLOWLIST needs a list"},
		{"adapter out of range", "APQN_ALLOWLIST\n300 1\nEND", 2, "adapter 300 is out of range"},
		{"domain out of range", "APQN_ALLOWLIST\n1 256\nEND", 2, "domain 256 is out of range"},
		{"too many APQNs", "APQN_ALLOWLIST\n" + manyPairs(257) + "END", 258, "lists more than 256 APQNs"},
		{"WKVP unquoted", "APQN_ANY\nEXPECTED_WKVP abcdef", 2, "EXPECTED_WKVP: the pattern must be quoted"},
		{"WKVP unquoted with =", "APQN_ANY\nEXPECTED_WKVP = abcdef", 2, "must be quoted"},
		{"WKVP as number", "APQN_ANY\nEXPECTED_WKVP = 0x1234", 2, "EXPECTED_WKVP needs a value on the same line"},
		{"WKVP short", "APQN_ANY\nEXPECTED_WKVP \"0x1234\"", 2, `EXPECTED_WKVP: EP11 pattern "1234" is too short`},
		{"WKVP not hex", "APQN_ANY\nEXPECTED_WKVP \"00112233445566778899AABBCCDDEEXX\"", 2, "is not hexadecimal"},
		{"WKVP long not hex", "APQN_ANY\nEXPECTED_WKVP \"00112233445566778899AABBCCDDEEFF-1\"", 2, "is not hexadecimal"},
		{"WKVP missing", "APQN_ANY\nEXPECTED_WKVP", 2, "EXPECTED_WKVP needs a value on the same line"},
		{"WKVP on next line", "APQN_ANY\nEXPECTED_WKVP\n\"00112233445566778899AABBCCDDEEFF\"", 2, "needs a value on the same line"},
		{"WKVP twice", "APQN_ANY\nEXPECTED_WKVP \"00112233445566778899AABBCCDDEEFF\"\nEXPECTED_WKVP = \"00112233445566778899AABBCCDDEEFF\"", 3, "EXPECTED_WKVP is given twice"},
		{"CPFILTER empty", "APQN_ANY\nCPFILTER \"\"", 2, "CPFILTER: empty file name"},
		{"CPFILTER missing", "APQN_ANY\nCPFILTER", 2, "CPFILTER needs a value"},
		{"PKEY_MODE unknown", "APQN_ANY\nPKEY_MODE ENABLED", 2, `PKEY_MODE: unknown value "ENABLED"`},
		{"PKEY_MODE case", "APQN_ANY\nPKEY_MODE = default", 2, `unknown value "default"`},
		{"DIGEST_LIBICA missing", "APQN_ANY\nDIGEST_LIBICA", 2, "DIGEST_LIBICA needs a value"},
		{"DIGEST_LIBICA empty", "APQN_ANY\nDIGEST_LIBICA = \"\"", 2, "DIGEST_LIBICA: empty value"},
		{"flag with argument", "APQN_ANY\nSTRICT_MODE yes", 2, "STRICT_MODE takes no value"},
		{"flag with = value", "APQN_ANY\nVHSM_MODE = 1", 2, "VHSM_MODE takes no value"},
		{"APQN_ANY with string", "APQN_ANY \"all\"", 1, "APQN_ANY takes no value"},
		{"flag twice", "APQN_ANY\nUSE_PRANDOM\nUSE_PRANDOM", 3, "USE_PRANDOM is given twice (first on line 2)"},
	})
}

func manyPairs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%d %d\n", i/256, i%256)
	}
	return b.String()
}
