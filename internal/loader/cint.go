package loader

import (
	"math/big"
	"strings"
)

// How CPython's C unpickler (Modules/_pickle.c) reads the text integers of protocol 0:
//   - INT ("I...\n", load_int) first tries C's strtol with base 0, which reads "0x1f" as hex
//     and "010" as octal 8, and takes its value when the whole line is consumed without
//     overflow; a line of two characters whose value is 0 or 1 is False or True. Otherwise
//     it falls back to int(line, 0) (PyLong_FromString with base 0).
//   - LONG ("L...L\n", load_long) drops one trailing "L" and reads int(line, 0).
// int(s, 0) allows surrounding white space, a sign, the prefixes 0x, 0o and 0b, single
// underscores between digits, and no leading zero in a decimal number other than 0.
// Mirroring this is what keeps the scanner's values (the legacy magic number among them)
// those Python computes.

func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// strtol0 is C's strtol(s, &end, 0) on a 64-bit long: the value, and whether the whole of
// s was consumed without overflow.
func strtol0(s string) (*big.Int, bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	base := 10
	switch {
	case i+1 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') && i+2 < len(s) && hexDigit(s[i+2]) >= 0:
		base, i = 16, i+2
	case i < len(s) && s[i] == '0':
		base = 8
	}
	start := i
	v := new(big.Int)
	for i < len(s) {
		d := hexDigit(s[i])
		if d < 0 || d >= base {
			break
		}
		v.Mul(v, big.NewInt(int64(base)))
		v.Add(v, big.NewInt(int64(d)))
		i++
	}
	if i == start || i != len(s) {
		return nil, false
	}
	if neg {
		v.Neg(v)
	}
	if !v.IsInt64() {
		return nil, false // ERANGE
	}
	return v, true
}

func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// pyIntBase0 is Python's int(s, 0).
func pyIntBase0(s string) (*big.Int, bool) {
	s = strings.Trim(s, " \t\n\r\v\f")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	base := 10
	if len(s) >= 2 && s[0] == '0' {
		switch s[1] {
		case 'x', 'X':
			base = 16
		case 'o', 'O':
			base = 8
		case 'b', 'B':
			base = 2
		}
		if base != 10 {
			s = s[2:]
			s = strings.TrimPrefix(s, "_")
		}
	}
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") {
		return nil, false
	}
	digits := strings.ReplaceAll(s, "_", "")
	if base == 10 && len(digits) > 1 && digits[0] == '0' && strings.Trim(digits, "0") != "" {
		return nil, false // "010" is a syntax error for int(s, 0)
	}
	v := new(big.Int)
	for i := 0; i < len(digits); i++ {
		d := hexDigit(digits[i])
		if d < 0 || d >= base {
			return nil, false
		}
		v.Mul(v, big.NewInt(int64(base)))
		v.Add(v, big.NewInt(int64(d)))
	}
	if neg {
		v.Neg(v)
	}
	return v, true
}

// pickleINT reads an INT line as load_int does: the value, or a bool (true/false in isBool).
func pickleINT(line string) (v *big.Int, isBool, b bool, ok bool) {
	if x, ok := strtol0(line); ok {
		if len(line) == 2 && (x.Sign() == 0 || x.Cmp(big.NewInt(1)) == 0) {
			return nil, true, x.Sign() != 0, true
		}
		return x, false, false, true
	}
	x, ok := pyIntBase0(line)
	return x, false, false, ok
}

// pickleLONG reads a LONG line as load_long does.
func pickleLONG(line string) (*big.Int, bool) {
	if len(line) > 0 && line[len(line)-1] == 'L' {
		line = line[:len(line)-1]
	}
	return pyIntBase0(line)
}
