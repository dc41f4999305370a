package config

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/archipelago-go/archipelago/errs"
)

// entry is one `key = value` line.
type entry struct {
	key   string // as written
	value string // trimmed, otherwise verbatim
	line  int
}

// section is one [name] block of a file.
type section struct {
	name    string
	line    int
	entries []entry
	byKey   map[string]int // lower-cased key -> index in entries
}

func (s *section) get(key string) (entry, bool) {
	if s == nil {
		return entry{}, false
	}
	i, ok := s.byKey[strings.ToLower(key)]
	if !ok {
		return entry{}, false
	}
	return s.entries[i], true
}

// iniFile is a parsed file: sections in file order.
type iniFile struct {
	name     string
	sections []*section
	byName   map[string]*section
}

func (f *iniFile) section(name string) *section {
	if f == nil {
		return nil
	}
	return f.byName[name]
}

// readINI parses data: `[section]` headers, `key = value` lines, blank
// lines and comments: whole-line ones starting with # or ;, and inline
// ones after a header or a value, from a # or ; that starts the value or
// follows a space or tab (`listen = 127.0.0.1:10809   # also TCP`). A #
// or ; inside a word is kept (`a#b`); `\#` and `\;` write one anywhere
// (`\` before any other character is kept as is). Section names are
// case-sensitive, keys are not. Duplicate sections and duplicate keys in a
// section are errors, as is anything before the first section. Every
// error names the file and the line; all of them are returned, joined.
func readINI(name string, data []byte) (*iniFile, error) {
	f := &iniFile{name: name, byName: map[string]*section{}}
	var errList []error
	fail := func(line int, format string, args ...any) {
		errList = append(errList, &lineError{file: name, line: line, msg: fmt.Sprintf(format, args...)})
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var cur *section
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		line := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			end := strings.IndexByte(line, ']')
			if end < 0 {
				fail(n, "%q: section header without ]", line)
				cur = nil
				continue
			}
			if rest := strings.TrimSpace(line[end+1:]); rest != "" && rest[0] != '#' && rest[0] != ';' {
				fail(n, "%q: text after the section header", line)
			}
			sn := strings.TrimSpace(line[1:end])
			if sn == "" {
				fail(n, "empty section name")
				cur = nil
				continue
			}
			if prev, ok := f.byName[sn]; ok {
				fail(n, "[%s]: duplicate section (first at line %d)", sn, prev.line)
				cur = prev // keep reading its keys so that they are checked too
				continue
			}
			cur = &section{name: sn, line: n, byKey: map[string]int{}}
			f.sections = append(f.sections, cur)
			f.byName[sn] = cur
		default:
			eq := strings.IndexByte(line, '=')
			if eq < 0 {
				fail(n, "%q: not a `key = value` line", line)
				continue
			}
			key, value := strings.TrimSpace(line[:eq]), unquoteValue(line[eq+1:])
			if key == "" {
				fail(n, "%q: no key before =", line)
				continue
			}
			if cur == nil {
				fail(n, "%s = %s: key outside any section", key, value)
				continue
			}
			lk := strings.ToLower(key)
			if j, ok := cur.byKey[lk]; ok {
				fail(n, "[%s] %s = %s: duplicate key (first at line %d)", cur.name, key, value, cur.entries[j].line)
				continue
			}
			cur.byKey[lk] = len(cur.entries)
			cur.entries = append(cur.entries, entry{key: key, value: value, line: n})
		}
	}
	if len(errList) > 0 {
		return nil, joinErrors(errList)
	}
	return f, nil
}

// unquoteValue returns the value written after a line's =: up to an
// inline comment (a # or ; at the start or after a space or tab), trimmed,
// with \# and \; read as # and ;.
func unquoteValue(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '\\' && i+1 < len(raw) && (raw[i+1] == '#' || raw[i+1] == ';'):
			b.WriteByte(raw[i+1])
			i++
		case (c == '#' || c == ';') && (i == 0 || raw[i-1] == ' ' || raw[i-1] == '\t'):
			return strings.TrimSpace(b.String())
		default:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// quoteValue writes v so that unquoteValue reads it back: every # and ;
// escaped.
func quoteValue(v string) string {
	if !strings.ContainsAny(v, "#;") {
		return v
	}
	return strings.NewReplacer("#", `\#`, ";", `\;`).Replace(v)
}

// lineError is one problem in a configuration file:
// "FILE:LINE: [SECTION] KEY = VALUE: MESSAGE". It wraps errs.ErrInvalid.
type lineError struct {
	file string
	line int    // 0 when no line of the file is to blame
	what string // "[SECTION] KEY = VALUE", or less; "" for syntax errors
	msg  string
}

func (e *lineError) Error() string {
	var b strings.Builder
	b.WriteString(e.file)
	if e.line > 0 {
		fmt.Fprintf(&b, ":%d", e.line)
	}
	b.WriteString(": ")
	if e.what != "" {
		b.WriteString(e.what)
		b.WriteString(": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

func (e *lineError) Unwrap() error { return errs.ErrInvalid }

// sortErrors orders errors by line, those without a line last.
func sortErrors(list []error) []error {
	line := func(err error) int {
		if e, ok := err.(*lineError); ok && e.line > 0 {
			return e.line
		}
		return math.MaxInt
	}
	slices.SortStableFunc(list, func(a, b error) int { return cmp.Compare(line(a), line(b)) })
	return list
}
