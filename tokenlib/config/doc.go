// Package config reads pkcshsm's token configuration files, which use
// openCryptoki's grammar and keywords so that operators can carry their
// files over.
//
// There are three files, all documented for operators in pkcshsm.conf(5):
//
//   - the global file pkcshsm.conf (openCryptoki: opencryptoki.conf), which
//     defines the slots and the HSM backend — [LoadGlobal], [ParseGlobal];
//   - ccatok.conf, the configuration of a CCA token — [LoadCCA], [ParseCCA];
//   - ep11tok.conf, the configuration of an EP11 token — [LoadEP11],
//     [ParseEP11].
//
// A typical start of the token library:
//
//	g, err := config.LoadGlobal(paths.FromEnv().GlobalConf())
//	for _, s := range g.Slots {
//		switch s.Type {
//		case config.TypeCCA:
//			c, err := s.LoadCCA()   // defaults when the slot has no confname
//			...
//		case config.TypeEP11:
//			e, err := s.LoadEP11()  // confname, default ep11tok.conf
//			...
//		}
//	}
//
// # Grammar
//
// All files share one grammar. '#' starts a comment; elements are
// line-oriented; numbers are decimal without leading zeros or hexadecimal
// with 0x (no octal: "010" is an error, where openCryptoki silently read
// "0" and "10"); a version is major.minor; a bare word starts with a
// letter, '.' or '/'; a quoted string has no escapes and ends on its line.
// The element shapes are
//
//	version <value>          first element only; kept, never interpreted
//	KEY = value              number, version, "string" or word
//	KEY N { ... }            e.g. slot 3 { ... }; "{" may start the next line
//	KEY { ... }              e.g. EXPECTED_MKVPS { AES = "..." }
//	KEY ( a, b )             e.g. statistics (on, implicit)
//	KEY                      a bare keyword, e.g. FORCE_SENSITIVE
//	KEY "string" / KEY word  the old-style argument form of the EP11 file
//	KEY                      an APQN list: KEY alone on its line, then one
//	  adapter domain         "adapter domain" pair per line, then END
//	END
//
// In an APQN list, adapter and domain are each 0 to 255 (upstream EP11's
// limit; pkcshsm applies it to its CCA lists too), at most 256 pairs, no
// pair twice; the result is an apqn.List in file order.
//
// # Errors
//
// Every error names the file and line and carries a hint saying how to fix
// it (errclass.Hint). Malformed content is errclass.InvalidArgument, a
// missing file errclass.NotFound, an unreadable or world-writable file
// errclass.PermissionDenied (openCryptoki refuses a world-writable global
// file; pkcshsm refuses all three, since each selects adapters and keys).
// Things that are accepted but suspicious end up in EP11.Warnings.
//
// Settings are never repeated silently: a keyword given twice is an error
// (openCryptoki let the last one win).
//
// # Round trip
//
// Global, CCA and EP11 have a Format method that writes the parsed value
// back canonically: every setting explicit, paths resolved. Parsing that
// output gives the same value; the fuzz tests check it for every input the
// parsers accept.
package config
