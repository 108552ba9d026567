package loader

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"
)

// The allowlist and its stand-ins are one table (standIns): every kind of stand-in names at
// least one global there and has exactly one case in unpickleCtx.standIn, which names no
// global itself, so a stand-in cannot exist for a global that is not allowlisted, nor an
// allowlisted kind go without its stand-in.
func TestStandInsAreOneTable(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "pyvalues.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]int{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "standIn" {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			sw, ok := n.(*ast.SwitchStmt)
			if !ok {
				return true
			}
			if idx, ok := sw.Tag.(*ast.IndexExpr); !ok || idx.X.(*ast.Ident).Name != "allowlist" {
				return true // an inner switch on something else
			}
			for _, s := range sw.Body.List {
				for _, e := range s.(*ast.CaseClause).List {
					switch x := e.(type) {
					case *ast.Ident:
						cases[x.Name]++
					case *ast.BasicLit:
						t.Errorf("standIn names the global %s: names belong in standIns", x.Value)
					}
				}
			}
			return false
		})
	}
	names := map[standIn]string{}
	for i, n := range []string{"standDict", "standSet", "standList", "standTuple", "standComplex", "standBytes",
		"standSliceRange", "standScalar", "standReconstructor", "standNewObj", "standCodecsEncode", "standDatetime",
		"standDisplayArg", "standDevice", "standRebuildTensor", "standLoadFromBytes", "standGetLayout", "standSparse",
		"standQTensor", "standParameter", "standFromType", "standJitList", "standNDArray", "standDType",
		"standNumpyScalar", "standFromBuffer"} {
		names[standIn(i+1)] = n
	}
	if len(names) != int(standFromBuffer) {
		t.Fatalf("the test lists %d kinds, the code has %d", len(names), standFromBuffer)
	}
	for k := standDict; k <= standFromBuffer; k++ {
		if len(standIns[k]) == 0 {
			t.Errorf("%s names no global in standIns", names[k])
		}
		if cases[names[k]] != 1 {
			t.Errorf("%s has %d cases in unpickleCtx.standIn, want 1", names[k], cases[names[k]])
		}
		for _, g := range standIns[k] {
			if allowlist[g] != k || classifyGlobal(g[:lastDot(g)], g[lastDot(g)+1:]) != globalSafe {
				t.Errorf("%s (%s) is not allowlisted as its stand-in", g, names[k])
			}
		}
	}
	if len(cases) != len(names) {
		t.Errorf("standIn has cases %v; want one per kind", cases)
	}
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}
