package tensor

import "testing"

// TestOneDTypeTable checks the sizes the loader counts against the element sizes torch and
// numpy give (torch.tensor([], dtype=d).element_size(), numpy.dtype(d).itemsize), and that
// the statistics decode exactly the numeric ones.
func TestOneDTypeTable(t *testing.T) {
	for _, c := range []struct {
		dtype   string
		size    int
		numeric bool
	}{
		{"bool", 1, true}, {"uint8", 1, true}, {"float8_e4m3fn", 1, true}, {"quint4x2", 1, false},
		{"bfloat16", 2, true}, {"float16", 2, true}, {"complex32", 4, false}, {"qint32", 4, true},
		{"complex64", 8, true}, {"complex128", 16, true}, {"int64", 8, true},
		{"str160", 20, false}, {"bytes40", 5, false}, {"void128", 16, false}, {"object", 0, false}, {"str", 0, false},
	} {
		if got := StorageSize(c.dtype); got != c.size {
			t.Errorf("StorageSize(%s) = %d, want %d", c.dtype, got, c.size)
		}
		want := 0
		if c.numeric {
			want = c.size
		}
		if got := ElementSize(c.dtype); got != want {
			t.Errorf("ElementSize(%s) = %d, want %d", c.dtype, got, want)
		}
	}
}
