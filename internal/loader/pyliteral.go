package loader

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A reader for the Python literals numpy writes in .npy headers, with the subset of
// ast.literal_eval's grammar that numpy's header can use: dicts, tuples, lists, str and bytes
// literals (adjacent ones concatenate), ints, True, False and None. numpy reads the header
// with ast.literal_eval and, for format versions 1.0 and 2.0, retries after dropping the
// Python 2 long suffix "L" from integers (numpy/lib/format.py _filter_header).

type pyLit struct {
	kind  byte // 'd' dict, 't' tuple, 'l' list, 's' str, 'b' bytes, 'i' int, 'T' True, 'F' False, 'N' None
	s     string
	i     int64
	big   bool // an int that does not fit int64
	items []pyLit
	keys  []pyLit
}

type litParser struct {
	s     string
	pos   int
	longL bool // accept 2L (format versions 1.0 and 2.0)
	depth int
}

func parsePyLiteral(s string, longL bool) (pyLit, error) {
	p := &litParser{s: s, longL: longL}
	v, err := p.value()
	if err != nil {
		return pyLit{}, err
	}
	p.space()
	if p.pos != len(p.s) {
		return pyLit{}, fmt.Errorf("unexpected %q after the value", clip(p.s[p.pos:]))
	}
	return v, nil
}

func (p *litParser) space() {
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case ' ', '\t', '\n', '\r', '\f', '\v':
			p.pos++
		case '\\': // a line continuation
			if p.pos+1 < len(p.s) && p.s[p.pos+1] == '\n' {
				p.pos += 2
				continue
			}
			return
		default:
			return
		}
	}
}

func (p *litParser) value() (pyLit, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 64 {
		return pyLit{}, errors.New("nested too deeply")
	}
	p.space()
	if p.pos >= len(p.s) {
		return pyLit{}, errors.New("ends before a value")
	}
	switch c := p.s[p.pos]; {
	case c == '{':
		p.pos++
		v := pyLit{kind: 'd'}
		for {
			p.space()
			if p.eat('}') {
				return v, nil
			}
			k, err := p.value()
			if err != nil {
				return v, err
			}
			p.space()
			if !p.eat(':') {
				return v, errors.New("a dict key without ':'")
			}
			val, err := p.value()
			if err != nil {
				return v, err
			}
			v.keys, v.items = append(v.keys, k), append(v.items, val)
			p.space()
			if p.eat('}') {
				return v, nil
			}
			if !p.eat(',') {
				return v, errors.New("dict items without ','")
			}
		}
	case c == '(' || c == '[':
		p.pos++
		v := pyLit{kind: 't'}
		closer := byte(')')
		if c == '[' {
			v.kind, closer = 'l', ']'
		}
		comma := false
		for {
			p.space()
			if p.eat(closer) {
				if v.kind == 't' && len(v.items) == 1 && !comma {
					return v.items[0], nil // (x) is x
				}
				return v, nil
			}
			it, err := p.value()
			if err != nil {
				return v, err
			}
			v.items = append(v.items, it)
			p.space()
			comma = false
			if p.eat(closer) {
				if v.kind == 't' && len(v.items) == 1 {
					return v.items[0], nil
				}
				return v, nil
			}
			if !p.eat(',') {
				return v, errors.New("items without ','")
			}
			comma = true
		}
	case c == '\'' || c == '"' || c == 'b' || c == 'B' || c == 'u' || c == 'U' || c == 'r' || c == 'R':
		if isName(c) && !p.stringAhead() {
			return p.name()
		}
		v, err := p.str()
		if err != nil {
			return v, err
		}
		for { // adjacent literals concatenate
			save := p.pos
			p.space()
			if p.pos < len(p.s) && (p.s[p.pos] == '\'' || p.s[p.pos] == '"' || p.stringAhead()) {
				w, err := p.str()
				if err != nil {
					return v, err
				}
				if w.kind != v.kind {
					return v, errors.New("bytes and str literals mixed")
				}
				v.s += w.s
				continue
			}
			p.pos = save
			return v, nil
		}
	case c == '-' || c == '+' || (c >= '0' && c <= '9'):
		return p.int()
	default:
		return p.name()
	}
}

func isName(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// stringAhead says whether a string prefix (b, u, r, br...) and a quote start at pos.
func (p *litParser) stringAhead() bool {
	i := p.pos
	for i < len(p.s) && i < p.pos+2 && strings.IndexByte("bBuUrR", p.s[i]) >= 0 {
		i++
	}
	return i < len(p.s) && i > p.pos && (p.s[i] == '\'' || p.s[i] == '"')
}

func (p *litParser) eat(c byte) bool {
	if p.pos < len(p.s) && p.s[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *litParser) name() (pyLit, error) {
	start := p.pos
	for p.pos < len(p.s) && (isName(p.s[p.pos]) || p.s[p.pos] >= '0' && p.s[p.pos] <= '9') {
		p.pos++
	}
	switch p.s[start:p.pos] {
	case "True":
		return pyLit{kind: 'T'}, nil
	case "False":
		return pyLit{kind: 'F'}, nil
	case "None":
		return pyLit{kind: 'N'}, nil
	}
	return pyLit{}, fmt.Errorf("%q is not a literal", clip(p.s[start:max(p.pos, start+1)]))
}

func (p *litParser) int() (pyLit, error) {
	start := p.pos
	neg := false
	for p.pos < len(p.s) && (p.s[p.pos] == '-' || p.s[p.pos] == '+') {
		if p.s[p.pos] == '-' {
			neg = !neg
		}
		p.pos++
		p.space()
	}
	ds := p.pos
	for p.pos < len(p.s) && (p.s[p.pos] >= '0' && p.s[p.pos] <= '9' || p.s[p.pos] == '_') {
		p.pos++
	}
	digits := strings.ReplaceAll(p.s[ds:p.pos], "_", "")
	if digits == "" {
		return pyLit{}, fmt.Errorf("%q is not a number", clip(p.s[start:]))
	}
	if len(digits) > 1 && digits[0] == '0' && strings.Trim(digits, "0") != "" {
		return pyLit{}, errors.New("an integer with leading zeros")
	}
	if p.pos < len(p.s) && (p.s[p.pos] == 'L' || p.s[p.pos] == 'l') && p.longL {
		p.pos++
	}
	if p.pos < len(p.s) && (isName(p.s[p.pos]) || p.s[p.pos] == '.') {
		return pyLit{}, fmt.Errorf("%q is not an integer", clip(p.s[start:]))
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	v := pyLit{kind: 'i', i: n, s: digits}
	if err != nil {
		v.big = true
	}
	if neg {
		v.i = -v.i
		v.s = "-" + v.s
	}
	return v, nil
}

// str reads one string literal with its prefix and escapes.
func (p *litParser) str() (pyLit, error) {
	raw, isBytes := false, false
	for p.pos < len(p.s) && strings.IndexByte("bBuUrR", p.s[p.pos]) >= 0 {
		switch p.s[p.pos] {
		case 'b', 'B':
			isBytes = true
		case 'r', 'R':
			raw = true
		}
		p.pos++
	}
	q := p.s[p.pos]
	triple := strings.HasPrefix(p.s[p.pos:], strings.Repeat(string(q), 3))
	if triple {
		p.pos += 3
	} else {
		p.pos++
	}
	var b strings.Builder
	for {
		if p.pos >= len(p.s) {
			return pyLit{}, errors.New("a string without its closing quote")
		}
		c := p.s[p.pos]
		if c == q && (!triple || strings.HasPrefix(p.s[p.pos:], strings.Repeat(string(q), 3))) {
			if triple {
				p.pos += 3
			} else {
				p.pos++
			}
			break
		}
		if c == '\n' && !triple {
			return pyLit{}, errors.New("a line break inside a string")
		}
		if c != '\\' || raw {
			if raw && c == '\\' && p.pos+1 < len(p.s) {
				b.WriteByte(c)
				p.pos++
				c = p.s[p.pos]
			}
			if isBytes && c >= 0x80 {
				return pyLit{}, errors.New("a bytes literal with a non-ASCII character")
			}
			b.WriteByte(c)
			p.pos++
			continue
		}
		p.pos++
		if p.pos >= len(p.s) {
			return pyLit{}, errors.New("a string ending in a backslash")
		}
		e := p.s[p.pos]
		p.pos++
		switch e {
		case '\n':
		case '\\', '\'', '"':
			b.WriteByte(e)
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'a':
			b.WriteByte(7)
		case 'b':
			b.WriteByte(8)
		case 'f':
			b.WriteByte(12)
		case 'v':
			b.WriteByte(11)
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if isBytes && e != 'x' {
				b.WriteByte('\\')
				b.WriteByte(e)
				continue
			}
			if p.pos+n > len(p.s) {
				return pyLit{}, errors.New("a truncated \\x, \\u or \\U escape")
			}
			v, err := strconv.ParseUint(p.s[p.pos:p.pos+n], 16, 32)
			if err != nil {
				return pyLit{}, errors.New("a bad \\x, \\u or \\U escape")
			}
			p.pos += n
			if isBytes {
				b.WriteByte(byte(v))
			} else {
				if v > utf8.MaxRune {
					return pyLit{}, errors.New("a \\U escape beyond Unicode")
				}
				b.WriteRune(rune(v))
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			j := p.pos - 1
			for p.pos < len(p.s) && p.pos < j+3 && p.s[p.pos] >= '0' && p.s[p.pos] <= '7' {
				p.pos++
			}
			v, _ := strconv.ParseUint(p.s[j:p.pos], 8, 16)
			if isBytes {
				b.WriteByte(byte(v))
			} else {
				b.WriteRune(rune(v))
			}
		default:
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	kind := byte('s')
	if isBytes {
		kind = 'b'
	}
	return pyLit{kind: kind, s: b.String()}, nil
}
