package views

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// floatDigits is testdata/floatdigits.json, written by testdata/gen_floatdigits.py: for bit
// patterns of each narrow dtype the text the libraries print or accept (numpy's str() of a
// float16; for bfloat16 the shortest string torch reads back as the same bits; for float8,
// which torch 1.13 and numpy lack, exact rational arithmetic in Python), and conversions of
// float64 values to float16 (numpy) and bfloat16 (torch).
type floatDigits struct {
	Values map[string][]struct {
		Bits uint16 `json:"bits"`
		Str  string `json:"str"`
		P    int    `json:"p"`
	}
	Round map[string][]struct {
		X    string `json:"x"`
		Bits uint16 `json:"bits"`
	}
}

func loadFloatDigits(t *testing.T) floatDigits {
	t.Helper()
	// FLOATDIGITS_JSON names another file of the generator's, such as every bit pattern's:
	// gen_floatdigits.py --all /tmp/all.json
	path := os.Getenv("FLOATDIGITS_JSON")
	if path == "" {
		path = "testdata/floatdigits.json"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	fd := floatDigits{Values: map[string][]struct {
		Bits uint16 `json:"bits"`
		Str  string `json:"str"`
		P    int    `json:"p"`
	}{}, Round: map[string][]struct {
		X    string `json:"x"`
		Bits uint16 `json:"bits"`
	}{}}
	for k, v := range raw {
		if k == "about" {
			continue
		}
		if d, ok := strings.CutPrefix(k, "round_"); ok {
			var rs []struct {
				X    string `json:"x"`
				Bits uint16 `json:"bits"`
			}
			if err := json.Unmarshal(v, &rs); err != nil {
				t.Fatal(k, err)
			}
			fd.Round[d] = rs
			continue
		}
		var vs []struct {
			Bits uint16 `json:"bits"`
			Str  string `json:"str"`
			P    int    `json:"p"`
		}
		if err := json.Unmarshal(v, &vs); err != nil {
			t.Fatal(k, err)
		}
		fd.Values[k] = vs
	}
	return fd
}

// decimal is a number's text reduced to what it says: its sign, its significant digits
// and the power of ten of the first ("-0.0150" is -, "15", -2).
type decimal struct {
	neg    bool
	digits string
	exp    int
}

// parseDecimal reads a finite number's text ("0.1", "1.0", "65500.0", "1.02e+03", "6e-08",
// "-0") without going through a float, so that two texts compare digit by digit.
func parseDecimal(s string) (decimal, bool) {
	var d decimal
	if strings.HasPrefix(s, "-") {
		d.neg, s = true, s[1:]
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return d, false
		}
		mant, exp = s[:i], e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" || strings.Trim(intPart+frac, "0123456789") != "" {
		return d, false
	}
	all := intPart + frac
	lead := len(all) - len(strings.TrimLeft(all, "0"))
	d.digits = strings.TrimRight(all[lead:], "0")
	if d.digits == "" {
		return decimal{neg: d.neg, digits: "0"}, true // zero, -0 keeps its sign
	}
	d.exp = exp + len(intPart) - lead - 1
	return d, true
}

// readAll reads every element of a 1-D tensor of dtype holding the bit patterns, through
// tensor.Values as the tensor page does.
func readAll(t *testing.T, dtype string, bits []uint16) (ValueReader, []tensor.Element) {
	t.Helper()
	var b []byte
	for _, x := range bits {
		if tensor.ElementSize(dtype) == 1 {
			b = append(b, byte(x))
		} else {
			b = binary.LittleEndian.AppendUint16(b, x)
		}
	}
	vals := values(t, dtype, b, int64(len(bits)))
	els, err := vals.Read(0, int64(len(bits)))
	if err != nil || len(els) != len(bits) {
		t.Fatalf("reading %d %s values: %d, %v", len(bits), dtype, len(els), err)
	}
	return InDType(vals, dtype), els
}

// Every value prints with the digits the libraries print it with, in the layout the page
// gives all floats. The formatting differences allowed, and nothing else:
//   - numpy's ".0" on integral values ("1.0", "65500.0": ours "1", "65500"; the preview
//     adds the point back as numpy's arrays have it, "1.");
//   - where the exponent is written: Python's "%.3g" of 1020 is "1.02e+03", ours is "1020"
//     (strconv's shortest %g uses an exponent below 1e-4 and from 1e+06 on, as float32 and
//     float64 values print on the page).
//
// The digits, the power of ten and the sign (of zero too) must be the same.
func TestFloatDigitsLikeLibraries(t *testing.T) {
	fd := loadFloatDigits(t)
	for _, dtype := range []string{"float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"} {
		want := fd.Values[dtype]
		if len(want) < 200 {
			t.Fatalf("%s: %d values in the file, want a few hundred", dtype, len(want))
		}
		var bits []uint16
		for _, w := range want {
			bits = append(bits, w.Bits)
		}
		r, els := readAll(t, dtype, bits)
		bad := 0
		for i, w := range want {
			got := r.Text(els[i])
			ok := got == w.Str
			switch w.Str {
			case "nan", "inf", "-inf":
			default:
				gd, ok1 := parseDecimal(got)
				wd, ok2 := parseDecimal(w.Str)
				ok = ok1 && ok2 && gd == wd
				// and the layout is the page's: strconv's shortest %g of the number
				if x, err := strconv.ParseFloat(got, 64); err != nil || strconv.FormatFloat(x, 'g', -1, 64) != got {
					ok = false
				}
			}
			if !ok {
				if bad++; bad <= 10 {
					t.Errorf("%s %#04x (%v): got %q, want %q", dtype, w.Bits, els[i].Real, got, w.Str)
				}
			}
		}
		if bad > 10 {
			t.Errorf("%s: %d of %d values differ", dtype, bad, len(want))
		}
	}
}

// The rounding from float64 agrees with numpy's np.float16(x) and torch's float32 →
// bfloat16 conversion: ties to even, subnormals, overflow to inf.
func TestRoundToNarrowFloat(t *testing.T) {
	fd := loadFloatDigits(t)
	decode := map[string]func(uint16) float64{
		"float16":  func(b uint16) float64 { return float64(tensor.HalfToFloat(b)) },
		"bfloat16": func(b uint16) float64 { return float64(math.Float32frombits(uint32(b) << 16)) },
	}
	for dtype, dec := range decode {
		cases := fd.Round[dtype]
		if len(cases) < 100 {
			t.Fatalf("%s: %d conversions in the file", dtype, len(cases))
		}
		for _, c := range cases {
			x, err := strconv.ParseFloat(c.X, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", dtype, c.X, err)
			}
			got, want := narrowFloats[dtype].round(x), dec(c.Bits)
			if !sameValue(got, want) && !(math.IsNaN(got) && math.IsNaN(want)) {
				t.Errorf("%s(%s) = %v, want %v (bits %#04x)", dtype, c.X, got, want, c.Bits)
			}
		}
	}
}

// Every value of every narrow dtype prints as text that reads back as itself, and no text
// of fewer digits does (the file checks a few hundred against the libraries; this, all).
func TestFloatDigitsRoundTrip(t *testing.T) {
	for dtype, f := range narrowFloats {
		n := 1 << 16
		if tensor.ElementSize(dtype) == 1 {
			n = 256
		}
		bits := make([]uint16, n)
		for i := range bits {
			bits[i] = uint16(i)
		}
		r, els := readAll(t, dtype, bits)
		for i, e := range els {
			v, s := e.Real, r.Text(e)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			x, err := strconv.ParseFloat(s, 64)
			if err != nil || !sameValue(f.round(x), v) {
				t.Fatalf("%s %#04x = %v prints %q, which reads back as %v", dtype, i, v, s, f.round(x))
			}
			d, _ := parseDecimal(s)
			if len(d.digits) > 1 {
				// the p-1 digits around v, either side
				m, _ := strconv.ParseInt(d.digits[:len(d.digits)-1], 10, 64)
				for _, k := range []int64{m, m + 1} {
					y, _ := strconv.ParseFloat(strconv.FormatInt(k, 10)+"e"+strconv.Itoa(d.exp-len(d.digits)+2), 64)
					if sameValue(f.round(math.Copysign(y, v)), v) {
						t.Fatalf("%s %v prints %q, but %v has fewer digits and reads back as it too", dtype, v, s, y)
					}
				}
			}
		}
	}
}

// The preview and the slice table print float16 and bfloat16 values in their own digits:
// these are the float32 case of TestPreviewLikeNumpy, and numpy prints
// np.float16([0.1, -0.2, 0.3, 1]) with the same digits as np.float32 of them.
func TestNarrowPreviewAndSlice(t *testing.T) {
	for _, tc := range []struct {
		dtype string
		bits  []uint16 // 0.1, -0.2, 0.3, 1 as torch and numpy convert them
	}{
		{"bfloat16", []uint16{0x3dcd, 0xbe4d, 0x3e9a, 0x3f80}}, // float32: 0.100097656, -0.20019531, 0.30078125, 1
		{"float16", []uint16{0x2e66, 0xb266, 0x34cd, 0x3c00}},  // float32: 0.099975586, -0.19995117, 0.30004883, 1
	} {
		var b []byte
		for _, x := range tc.bits {
			b = binary.LittleEndian.AppendUint16(b, x)
		}
		vals := values(t, tc.dtype, b, 4)
		got, _, err := NewPreview(InDType(vals, tc.dtype), []int64{4})
		if want := "[ 0.1, -0.2,  0.3,   1.]"; err != nil || got != want {
			t.Errorf("preview of %s = %q, %v; want %q", tc.dtype, got, err, want)
		}
		vals = values(t, tc.dtype, b, 2, 2)
		tbl, err := NewSliceTable(InDType(vals, tc.dtype), []int64{2, 2}, SliceQuery{}, func(SliceQuery) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		var cells []string
		for _, r := range tbl.Body {
			for _, c := range r.Cells {
				cells = append(cells, c.Text)
			}
		}
		if got := strings.Join(cells, " "); got != "0.1 -0.2 0.3 1" {
			t.Errorf("slice cells of %s = %q, want 0.1 -0.2 0.3 1", tc.dtype, got)
		}
		// The JSON the API answers with is unchanged: the float32 each value is decoded to,
		// read back exactly.
		els, _ := vals.Read(0, 4)
		for _, e := range els {
			if x, err := strconv.ParseFloat(vals.JSON(e), 32); err != nil || x != e.Real {
				t.Errorf("JSON of %s %v = %s, want the exact value", tc.dtype, e.Real, vals.JSON(e))
			}
		}
	}
	// Other dtypes print as before.
	f32 := values(t, "float32", f32s(0.1, -0.2), 2)
	if InDType(f32, "float32") != ValueReader(f32) {
		t.Errorf("InDType(float32) wraps the reader")
	}
}

// The statistics' min and max are elements: they print in the dtype's digits, with the
// exact value on hover; mean and std keep their float64 form.
func TestNarrowStats(t *testing.T) {
	lo := float64(math.Float32frombits(0xbe4d << 16)) // bfloat16 -0.2: -0.2001953125
	hi := float64(math.Float32frombits(0x3dcd << 16)) // bfloat16 0.1: 0.10009765625
	counts := make([]int64, tensor.Bins)
	counts[0], counts[63] = 1, 1
	st := stats(counts, lo, hi)
	v := NewStatsView(&ckpt.Tensor{DType: "bfloat16"}, st, StatsOptions{})
	if v.Rows[1].Value != "-0.2" || v.Rows[2].Value != "0.1" {
		t.Errorf("bfloat16 min, max = %q, %q; want -0.2, 0.1", v.Rows[1].Value, v.Rows[2].Value)
	}
	if v.Rows[2].Title != "0.1 (bfloat16: exactly 0.10009765625)" {
		t.Errorf("bfloat16 max title = %q", v.Rows[2].Title)
	}
	if v.Rows[3].Value != StatNumber(st.Mean) {
		t.Errorf("mean = %q, want %q as before", v.Rows[3].Value, StatNumber(st.Mean))
	}
	if v.Hist.MinLabel != "-0.2" || v.Hist.MaxLabel != "0.1" || v.Hist.MaxTitle != v.Rows[2].Title {
		t.Errorf("axis labels %q..%q (%q), want the min and max as printed above", v.Hist.MinLabel, v.Hist.MaxLabel, v.Hist.MaxTitle)
	}
	h := float64(tensor.HalfToFloat(0x2e66)) // float16 0.1: 0.0999755859375
	c := NewStatsView(&ckpt.Tensor{DType: "float16"}, &tensor.Stats{Numel: 4, Count: 4, Min: h, Max: h, Histogram: tensor.Histogram{Edges: []float64{h - 0.5, h + 0.5}, Counts: []int64{4}}}, StatsOptions{})
	if c.Rows[1].Value != "0.1" || c.Flags[0].Label != "constant (0.1)" || c.Hist.MinLabel != StatNumber(h-0.5) {
		t.Errorf("constant float16: min %q, flag %q, axis from %q", c.Rows[1].Value, c.Flags[0].Label, c.Hist.MinLabel)
	}
	// float32 values, and a quantized tensor's dequantized statistics, print as before.
	for _, tt := range []*ckpt.Tensor{{DType: "float32"}, {DType: "float16", Quant: &ckpt.Quantization{Scheme: "per_tensor_affine"}}} {
		v := NewStatsView(tt, st, StatsOptions{})
		if v.Rows[1].Value != StatNumber(lo) || v.Rows[2].Title != FullNumber(hi) {
			t.Errorf("%s min %q, max title %q; want %q, %q", tt.DType, v.Rows[1].Value, v.Rows[2].Title, StatNumber(lo), FullNumber(hi))
		}
	}
}
