package pyrepr

import (
	"math"
	"testing"
)

// The wanted strings are what CPython 3.11 prints for repr() of the same values.
func TestRepr(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Quote("hello"), `'hello'`},
		{Quote("it's"), `"it's"`},
		{Quote(`both ' and "`), `'both \' and "'`},
		{Quote("tab\there\n"), `'tab\there\n'`},
		{Quote("\x00\x7f\u0085"), `'\x00\x7f\x85'`},
		{Quote("優良 😀"), `'優良 😀'`},
		{Quote("\u200b"), `'\u200b'`},
		{Bytes([]byte("a'\x00\xff"), 0), `b'a\'\x00\xff'`},
		{Bytes([]byte("abcdef"), 3), `b'abc…'`},
		{Float(1), `1.0`},
		{Float(0.1), `0.1`},
		{Float(1e-5), `1e-05`},
		{Float(1e16), `1e+16`},
		{Float(1e15), `1000000000000000.0`},
		{Float(math.Copysign(0, -1)), `-0.0`},
		{Float(1.5e300), `1.5e+300`},
		{Complex(complex(1, 2)), `(1+2j)`},
		{Complex(complex(0, 2)), `2j`},
		{Complex(complex(1, -2)), `(1-2j)`},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}
