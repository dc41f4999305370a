package volume

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt")

// TestGolden runs the scripts in testdata: each case is a command, a line
// "----" and the expected output, then a blank line. See testdata/README.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatal("no testdata", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runGolden(t, file)
		})
	}
}

type goldenCase struct {
	pre  []string // comment and blank lines before the command
	cmd  string
	want string
	line int
}

func parseGolden(t *testing.T, file string) ([]goldenCase, []string) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		cases []goldenCase
		pre   []string
		cur   *goldenCase
		out   []string
	)
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur != nil && line == "":
			cur.want = strings.Join(out, "\n")
			cases = append(cases, *cur)
			cur, out = nil, nil
		case cur != nil && cur.cmd == "":
			t.Fatalf("%s:%d: parse error", file, n)
		case cur != nil && out == nil && line == "----":
			out = []string{}
		case cur != nil:
			out = append(out, line)
		case line == "" || strings.HasPrefix(line, "#"):
			pre = append(pre, line)
		default:
			cur = &goldenCase{pre: pre, cmd: line, line: n}
			pre = nil
		}
	}
	if cur != nil {
		cur.want = strings.Join(out, "\n")
		cases = append(cases, *cur)
	}
	return cases, pre
}

func runGolden(t *testing.T, file string) {
	cases, tail := parseGolden(t, file)
	g := &golden{t: t, env: newEnv(t, 4096)}
	var sb strings.Builder
	for _, c := range cases {
		for _, p := range c.pre {
			sb.WriteString(p + "\n")
		}
		got := g.run(c.cmd)
		fmt.Fprintf(&sb, "%s\n----\n%s\n\n", c.cmd, got)
		if !*rewrite && got != c.want {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", file, c.line, c.cmd, got, c.want)
		}
	}
	for _, p := range tail {
		sb.WriteString(p + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(strings.TrimRight(sb.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type golden struct {
	t   *testing.T
	env *env
}

func (g *golden) run(cmd string) string {
	ctx := context.Background()
	f := strings.Fields(cmd)
	e := g.env.e
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	num := func(i int) uint64 {
		if arg(i) == "" {
			return 0
		}
		n, err := goldenNumber(arg(i))
		if err != nil {
			g.t.Fatalf("%s: %v", cmd, err)
		}
		return n
	}
	res := func(err error) string {
		if err != nil {
			return "error: " + testutil.ErrName(err) + ": " + err.Error()
		}
		return "ok"
	}
	segs := func(ss []Piece, err error) string {
		if err != nil {
			return res(err)
		}
		var lines []string
		for _, s := range ss {
			mode := "rw"
			if s.ReadOnly {
				mode = "ro"
			}
			if s.Zero {
				lines = append(lines, fmt.Sprintf("zero +%d", s.Size))
			} else {
				lines = append(lines, fmt.Sprintf("%s @%d+%d %s", s.Object, s.Offset, s.Size, mode))
			}
		}
		return strings.Join(lines, "\n")
	}
	switch f[0] {
	case "restart":
		g.env.restart(g.t)
		return "ok"
	case "crash":
		g.env.crash(g.t)
		return "ok"
	case "blocksize":
		g.env.bs = uint32(num(1))
		g.env.restart(g.t)
		return "ok"
	case "create":
		return res(e.Create(ctx, arg(1), num(2)))
	case "clone":
		return res(e.Clone(ctx, arg(1), arg(2), num(3)))
	case "snapshot":
		return res(e.Snapshot(ctx, arg(1), arg(2)))
	case "remove":
		return res(e.Remove(ctx, arg(1)))
	case "rename":
		return res(e.Rename(ctx, arg(1), arg(2)))
	case "resize":
		return res(e.Resize(ctx, arg(1), num(2), arg(3) == "force"))
	case "open":
		return res(e.Open(ctx, arg(1)))
	case "close":
		return res(e.Close(ctx, arg(1)))
	case "info":
		in, err := e.Info(ctx, arg(1))
		if err != nil {
			return res(err)
		}
		return fmt.Sprintf("size=%d bs=%d readonly=%v parent=%q epoch=%d lock=%q",
			in.Size, in.BlockSize, in.ReadOnly, in.Parent, in.Epoch, in.LockOwner)
	case "list":
		var names []string
		err := e.List(ctx, func(n string) error { names = append(names, n); return nil })
		if err != nil {
			return res(err)
		}
		return strings.Join(names, "\n")
	case "mapread":
		return segs(e.MapRead(ctx, arg(1), num(2), num(3)))
	case "mapwrite":
		return segs(e.MapWrite(ctx, arg(1), num(2), num(3)))
	case "write":
		p := []byte(strings.Repeat(arg(4), int(num(3))))
		return res(writeVol(ctx, e, g.env.dataStore(), arg(1), num(2), p))
	case "read":
		b, err := readVol(ctx, e, g.env.dataStore(), arg(1), num(2), num(3))
		if err != nil {
			return res(err)
		}
		return runs(b)
	case "trim":
		return res(e.Trim(ctx, arg(1), num(2), num(3)))
	case "allocated":
		ext, err := e.Allocated(ctx, arg(1), num(2), num(3))
		if err != nil {
			return res(err)
		}
		var parts []string
		for _, x := range ext {
			parts = append(parts, fmt.Sprintf("%d+%d", x.Offset, x.Size))
		}
		return "[" + strings.Join(parts, " ") + "]"
	case "objects":
		st := g.env.maps
		if arg(1) == "data" {
			st = g.env.data
		}
		var names []string
		_ = st.List(ctx, arg(2), func(n string) error { names = append(names, n); return nil })
		slices.Sort(names)
		return strings.Join(names, "\n")
	}
	g.t.Fatalf("unknown command %q", cmd)
	return ""
}

// goldenNumber reads an offset, length or size of a golden script: a bare
// number is bytes ("0", "4096"), a number with a unit is read by the
// product's size parser ("64K", "2M": powers of 1024).
func goldenNumber(s string) (uint64, error) {
	if s != "" && '0' <= s[len(s)-1] && s[len(s)-1] <= '9' {
		return strconv.ParseUint(s, 10, 64)
	}
	return sizes.Parse(s)
}
