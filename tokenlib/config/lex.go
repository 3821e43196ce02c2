package config

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// tokKind is the kind of a lexical token.
type tokKind uint8

const (
	tEOF     tokKind = iota
	tNewline         // end of a line; elements are line-oriented
	tNumber          // 0, 42, 0x2a (no octal)
	tVersion         // 3.12
	tWord            // bare word: [A-Za-z./][A-Za-z0-9_./-]*
	tString          // "text" (no escapes, no newline)
	tEquals          // =
	tLBrace          // {
	tRBrace          // }
	tLParen          // (
	tRParen          // )
	tComma           // ,
)

func (k tokKind) String() string {
	switch k {
	case tEOF:
		return "end of file"
	case tNewline:
		return "end of line"
	case tNumber:
		return "number"
	case tVersion:
		return "version number"
	case tWord:
		return "word"
	case tString:
		return "quoted string"
	case tEquals:
		return `"="`
	case tLBrace:
		return `"{"`
	case tRBrace:
		return `"}"`
	case tLParen:
		return `"("`
	case tRParen:
		return `")"`
	case tComma:
		return `","`
	}
	return fmt.Sprintf("token(%d)", uint8(k))
}

// token is one lexical token. text is the source text (for strings: the
// content without the quotes).
type token struct {
	kind tokKind
	text string
	num  uint64 // tNumber: the value; tVersion: major<<16 | minor
	line int
}

// describe names a token for error messages.
func (t token) describe() string {
	switch t.kind {
	case tWord:
		return fmt.Sprintf("word %q", t.text)
	case tNumber, tVersion:
		return fmt.Sprintf("%s %s", t.kind, t.text)
	case tString:
		return fmt.Sprintf("string %q", t.text)
	}
	return t.kind.String()
}

// maxFileSize bounds what the lexer reads. Real files are a few kilobytes.
const maxFileSize = 1 << 20

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isHexDigit(c byte) bool {
	return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
func isWordStart(c byte) bool { return isLetter(c) || c == '.' || c == '/' }
func isWordChar(c byte) bool {
	return isLetter(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '/'
}

// lex splits data into tokens. The rules are openCryptoki's (cfglex.l) with
// one deliberate difference: a number immediately followed by a letter,
// digit or underscore ("010", "0x1g", "12ab") is an error instead of two
// tokens, because the split reading is never what the operator meant.
func lex(file string, data []byte) ([]token, error) {
	if len(data) > maxFileSize {
		return nil, errclass.Newh(errclass.InvalidArgument, "configuration files are a few kilobytes; check the path",
			"%s: file is larger than %d bytes", file, maxFileSize)
	}
	var toks []token
	line := 1
	errf := func(hint, format string, args ...any) error {
		return errclass.Newh(errclass.InvalidArgument, hint, "%s:%d: %s", file, line, fmt.Sprintf(format, args...))
	}
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '\n':
			toks = append(toks, token{kind: tNewline, line: line})
			line++
			i++
		case c == '#':
			for i < len(data) && data[i] != '\n' {
				i++
			}
		case c == '=':
			toks = append(toks, token{kind: tEquals, text: "=", line: line})
			i++
		case c == '{':
			toks = append(toks, token{kind: tLBrace, text: "{", line: line})
			i++
		case c == '}':
			toks = append(toks, token{kind: tRBrace, text: "}", line: line})
			i++
		case c == '(':
			toks = append(toks, token{kind: tLParen, text: "(", line: line})
			i++
		case c == ')':
			toks = append(toks, token{kind: tRParen, text: ")", line: line})
			i++
		case c == ',':
			toks = append(toks, token{kind: tComma, text: ",", line: line})
			i++
		case c == '"':
			j := i + 1
			for j < len(data) && data[j] != '"' {
				if data[j] == '\n' {
					return nil, errf(`close the string with " on the same line`, "unterminated quoted string")
				}
				if data[j] < 0x20 && data[j] != '\t' || data[j] == 0x7f {
					return nil, errf("remove the control character", "control character 0x%02x in quoted string", data[j])
				}
				j++
			}
			if j == len(data) {
				return nil, errf(`close the string with " on the same line`, "unterminated quoted string")
			}
			if !utf8.Valid(data[i+1 : j]) {
				return nil, errf("save the file as UTF-8", "quoted string is not valid UTF-8")
			}
			toks = append(toks, token{kind: tString, text: string(data[i+1 : j]), line: line})
			i = j + 1
		case isDigit(c):
			t, n, err := lexNumber(data[i:])
			if err != nil {
				return nil, errf("write numbers in decimal without leading zeros (10) or in hex (0x0a); octal is not supported",
					"%v", err)
			}
			t.line = line
			toks = append(toks, t)
			i += n
		case isWordStart(c):
			j := i + 1
			for j < len(data) && isWordChar(data[j]) {
				j++
			}
			toks = append(toks, token{kind: tWord, text: string(data[i:j]), line: line})
			i = j
		default:
			return nil, errf("words start with a letter, '.' or '/'; quote other text", "unexpected character %q", rune(c))
		}
	}
	toks = append(toks, token{kind: tEOF, line: line})
	return toks, nil
}

// lexNumber reads a number or a version literal at the start of b and
// returns it with its length.
func lexNumber(b []byte) (token, int, error) {
	end := 0
	for end < len(b) && (isWordChar(b[end]) && b[end] != '/' && b[end] != '-') {
		end++
	}
	text := string(b[:end])
	bad := func(why string) (token, int, error) {
		return token{}, 0, fmt.Errorf("invalid number %q: %s", text, why)
	}
	// Version literal: digits '.' digits.
	if j := indexByte(text, '.'); j >= 0 {
		major, minor := text[:j], text[j+1:]
		if !allDigits(major) || !allDigits(minor) || major == "" || minor == "" {
			return bad("want major.minor, e.g. 3.12")
		}
		ma, err1 := strconv.ParseUint(major, 10, 16)
		mi, err2 := strconv.ParseUint(minor, 10, 16)
		if err1 != nil || err2 != nil {
			return bad("each part of a version is at most 65535")
		}
		return token{kind: tVersion, text: text, num: ma<<16 | mi}, end, nil
	}
	if len(text) > 2 && (text[:2] == "0x" || text[:2] == "0X") {
		for k := 2; k < len(text); k++ {
			if !isHexDigit(text[k]) {
				return bad("not hexadecimal")
			}
		}
		v, err := strconv.ParseUint(text[2:], 16, 64)
		if err != nil {
			return bad("too large")
		}
		return token{kind: tNumber, text: text, num: v}, end, nil
	}
	if !allDigits(text) {
		return bad("a number must not be followed directly by letters")
	}
	if len(text) > 1 && text[0] == '0' {
		return bad("leading zeros are not allowed")
	}
	v, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return bad("too large")
	}
	return token{kind: tNumber, text: text, num: v}, end, nil
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
