package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// kind is the shape of one element of a configuration file (openCryptoki's
// CT_* node types).
type kind uint8

const (
	kFileVersion kind = iota + 1 // version <value>, first element only
	kInt                         // KEY = 42
	kVersion                     // KEY = 1.2
	kString                      // KEY = "text"
	kBare                        // KEY = word
	kIdxStruct                   // KEY N { ... }
	kStruct                      // KEY { ... }
	kBareList                    // KEY ( a, b )
	kBareConst                   // KEY
	kStringConst                 // "text"
	kPairList                    // KEY, then lines "num num", then END
)

func (k kind) String() string {
	switch k {
	case kFileVersion:
		return "file version"
	case kInt:
		return "number value"
	case kVersion:
		return "version value"
	case kString:
		return "string value"
	case kBare:
		return "word value"
	case kIdxStruct:
		return "numbered block"
	case kStruct:
		return "block"
	case kBareList:
		return "list"
	case kBareConst:
		return "keyword"
	case kStringConst:
		return "quoted string"
	case kPairList:
		return "number pair list"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// pair is one "num num" line of a pair list.
type pair struct {
	a, b uint64
	line int
}

// node is one element. Which fields are set depends on kind.
type node struct {
	kind  kind
	line  int
	key   string   // the keyword (not for kStringConst)
	num   uint64   // kInt value, kVersion packed value, kIdxStruct index
	str   string   // kString, kBare, kStringConst, kFileVersion (source text)
	list  []string // kBareList
	pairs []pair   // kPairList
	end   string   // kPairList: the terminating word as written
	body  []*node  // kIdxStruct, kStruct
}

// maxDepth bounds block nesting; real files nest one level.
const maxDepth = 8

type parser struct {
	file  string
	toks  []token
	i     int
	depth int
}

// parseFile parses data with the shared grammar. It knows nothing about
// keywords; the consumers (global, CCA, EP11) interpret the nodes.
func parseFile(file string, data []byte) ([]*node, error) {
	toks, err := lex(file, data)
	if err != nil {
		return nil, err
	}
	p := &parser{file: file, toks: toks}
	var out []*node
	p.skipNewlines()
	// "version <value>" is a file version only as the very first element.
	if t := p.peek(); t.kind == tWord && t.text == "version" {
		if v := p.toks[p.i+1]; v.kind == tWord || v.kind == tString || v.kind == tNumber || v.kind == tVersion {
			p.i += 2
			out = append(out, &node{kind: kFileVersion, line: t.line, key: "version", str: v.text})
			if err := p.endOfElement(); err != nil {
				return nil, err
			}
		}
	}
	body, err := p.elements(false)
	if err != nil {
		return nil, err
	}
	return append(out, body...), nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) skipNewlines() {
	for p.toks[p.i].kind == tNewline {
		p.i++
	}
}

func (p *parser) errAt(line int, hint, format string, args ...any) error {
	return errclass.Newh(errclass.InvalidArgument, hint, "%s:%d: %s", p.file, line, fmt.Sprintf(format, args...))
}

// endOfElement checks that an element that must end its line does.
func (p *parser) endOfElement() error {
	switch t := p.peek(); t.kind {
	case tNewline, tEOF:
		return nil
	default:
		return p.errAt(t.line, "put the next element on its own line", "unexpected %s after the file version", t.describe())
	}
}

// elements parses a sequence of elements up to EOF (top level) or the
// closing brace (inBlock; the brace is not consumed).
func (p *parser) elements(inBlock bool) ([]*node, error) {
	var out []*node
	for {
		p.skipNewlines()
		t := p.peek()
		switch t.kind {
		case tEOF:
			return out, nil
		case tRBrace:
			if inBlock {
				return out, nil
			}
			return nil, p.errAt(t.line, "remove it or add the opening block", `unexpected "}" outside a block`)
		case tString:
			p.next()
			out = append(out, &node{kind: kStringConst, line: t.line, str: t.text})
		case tWord:
			n, err := p.element()
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		default:
			return nil, p.errAt(t.line, "each element starts with a keyword", "unexpected %s", t.describe())
		}
	}
}

// element parses one element that starts with a keyword.
func (p *parser) element() (*node, error) {
	kw := p.next()
	n := &node{line: kw.line, key: kw.text}
	switch t := p.peek(); t.kind {
	case tEquals:
		p.next()
		v := p.next()
		switch v.kind {
		case tNumber:
			n.kind, n.num = kInt, v.num
		case tVersion:
			n.kind, n.num = kVersion, v.num
		case tString:
			n.kind, n.str = kString, v.text
		case tWord:
			n.kind, n.str = kBare, v.text
		default:
			return nil, p.errAt(v.line, fmt.Sprintf("write %s = <value> on one line", kw.text),
				"%s: expected a value after \"=\", found %s", kw.text, v.describe())
		}
		return n, nil
	case tNumber:
		p.next()
		p.skipNewlines()
		if b := p.peek(); b.kind != tLBrace {
			return nil, p.errAt(b.line, fmt.Sprintf("write %s %s { ... }", kw.text, t.text),
				"%s %s: expected \"{\", found %s", kw.text, t.text, b.describe())
		}
		n.kind, n.num = kIdxStruct, t.num
		return n, p.block(n)
	case tLParen:
		p.next()
		n.kind = kBareList
		n.list = []string{}
		return n, p.list(n)
	}
	// A keyword alone: a block may open on a later line; a pair list starts
	// with a number on a later line; anything else leaves a bare keyword.
	j := p.i
	sawNewline := false
	for p.toks[j].kind == tNewline {
		j++
		sawNewline = true
	}
	switch p.toks[j].kind {
	case tLBrace:
		p.i = j
		n.kind = kStruct
		return n, p.block(n)
	case tNumber:
		if sawNewline {
			p.i = j
			n.kind = kPairList
			return n, p.pairList(n)
		}
	}
	n.kind = kBareConst
	return n, nil
}

// block parses "{ elements }"; the current token is "{".
func (p *parser) block(n *node) error {
	open := p.next()
	if p.depth++; p.depth > maxDepth {
		return p.errAt(open.line, "blocks nest one level deep", "blocks nested more than %d deep", maxDepth)
	}
	defer func() { p.depth-- }()
	body, err := p.elements(true)
	if err != nil {
		return err
	}
	if t := p.next(); t.kind != tRBrace {
		return p.errAt(open.line, `close the block with "}"`, "%s: block opened here is not closed", n.key)
	}
	n.body = body
	return nil
}

// list parses "a, b, c )" after the "(".
func (p *parser) list(n *node) error {
	for {
		p.skipNewlines()
		t := p.next()
		switch {
		case t.kind == tRParen && len(n.list) == 0:
			return nil
		case t.kind == tWord:
			n.list = append(n.list, t.text)
		default:
			return p.errAt(t.line, fmt.Sprintf("write %s ( word, word )", n.key),
				"%s: expected a word in the list, found %s", n.key, t.describe())
		}
		p.skipNewlines()
		switch t := p.next(); t.kind {
		case tComma:
		case tRParen:
			return nil
		default:
			return p.errAt(t.line, fmt.Sprintf("write %s ( word, word )", n.key),
				`%s: expected "," or ")" in the list, found %s`, n.key, t.describe())
		}
	}
}

// pairList parses lines of two numbers up to a terminating word (END).
func (p *parser) pairList(n *node) error {
	hint := fmt.Sprintf("write %s on its own line, then one \"adapter domain\" pair per line, then END", n.key)
	for {
		p.skipNewlines()
		t := p.next()
		switch t.kind {
		case tWord:
			n.end = t.text
			return nil
		case tNumber:
			u := p.next()
			if u.kind != tNumber {
				return p.errAt(t.line, hint, "%s: expected two numbers (adapter domain), found %s after %s", n.key, u.describe(), t.text)
			}
			if e := p.peek(); e.kind != tNewline && e.kind != tEOF {
				return p.errAt(e.line, hint, "%s: expected the end of the line after %s %s, found %s", n.key, t.text, u.text, e.describe())
			}
			n.pairs = append(n.pairs, pair{a: t.num, b: u.num, line: t.line})
		case tEOF:
			return p.errAt(n.line, hint, "%s: list is not terminated with END", n.key)
		default:
			return p.errAt(t.line, hint, "%s: expected a pair of numbers or END, found %s", n.key, t.describe())
		}
	}
}

// render writes nodes back in the grammar. Values are written canonically
// (numbers in decimal, strings quoted); parsing the output gives the same
// nodes apart from line numbers.
func render(nodes []*node) []byte {
	var b strings.Builder
	renderTo(&b, nodes, "")
	return []byte(b.String())
}

func renderTo(b *strings.Builder, nodes []*node, indent string) {
	for _, n := range nodes {
		b.WriteString(indent)
		switch n.kind {
		case kFileVersion:
			// The value is a single token's source text; strings need
			// their quotes back.
			fmt.Fprintf(b, "version %s", tokenText(n.str))
		case kInt:
			fmt.Fprintf(b, "%s = %d", n.key, n.num)
		case kVersion:
			fmt.Fprintf(b, "%s = %s", n.key, versionText(n.num))
		case kString:
			fmt.Fprintf(b, "%s = %s", n.key, quote(n.str))
		case kBare:
			fmt.Fprintf(b, "%s = %s", n.key, n.str)
		case kIdxStruct, kStruct:
			if n.kind == kIdxStruct {
				fmt.Fprintf(b, "%s %d {\n", n.key, n.num)
			} else {
				fmt.Fprintf(b, "%s {\n", n.key)
			}
			renderTo(b, n.body, indent+"\t")
			b.WriteString(indent + "}")
		case kBareList:
			fmt.Fprintf(b, "%s (%s)", n.key, strings.Join(n.list, ", "))
		case kBareConst:
			b.WriteString(n.key)
		case kStringConst:
			b.WriteString(quote(n.str))
		case kPairList:
			b.WriteString(n.key + "\n")
			for _, pr := range n.pairs {
				fmt.Fprintf(b, "%s\t0x%02x 0x%02x\n", indent, pr.a, pr.b)
			}
			b.WriteString(indent + n.end)
		}
		b.WriteString("\n")
	}
}

// quote writes s between double quotes. The grammar has no escapes; values
// that came from a parse never contain a quote or a newline.
func quote(s string) string { return `"` + s + `"` }

// tokenText re-renders a file version value: a word, number or version
// literal as written, anything else quoted.
func tokenText(s string) string {
	if s != "" && isWordStart(s[0]) && allWordChars(s) {
		return s
	}
	if toks, err := lex("", []byte(s)); err == nil && len(toks) == 2 &&
		(toks[0].kind == tNumber || toks[0].kind == tVersion) && toks[0].text == s {
		return s
	}
	return quote(s)
}

func allWordChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isWordChar(s[i]) {
			return false
		}
	}
	return true
}

func versionText(packed uint64) string {
	return strconv.FormatUint(packed>>16, 10) + "." + strconv.FormatUint(packed&0xffff, 10)
}
