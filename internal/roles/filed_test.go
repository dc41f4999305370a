package roles

import (
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"strings"
	"testing"
)

// servedOps returns the names (as xseg.Op.String spells them) of the ops
// in the cases of the switch on r.Op() in function fn of file path.
func servedOps(t *testing.T, path, fn string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			cc, ok := n.(*ast.CaseClause)
			if !ok {
				return true
			}
			for _, e := range cc.List {
				if sel, ok := e.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "Op") {
					ops = append(ops, strings.ToUpper(strings.TrimPrefix(sel.Sel.Name, "Op")))
				}
			}
			return true
		})
	}
	if len(ops) == 0 {
		t.Fatalf("%s: no case xseg.Op... in func %s: the test no longer finds the blocker's ops", path, fn)
	}
	return ops
}

// filed --help names every op the blocker serves (it omitted LIST,
// LOCKOWNER, LOCKWAIT and PING).
func TestHelpNamesServedOps(t *testing.T) {
	help := Filed().Long
	for _, op := range servedOps(t, "../../blocker/blocker.go", "serve") {
		if !regexp.MustCompile(`\b` + op + `\b`).MatchString(help) {
			t.Errorf("filed --help does not name %s, which the blocker serves (blocker/blocker.go, func serve)", op)
		}
	}
}
