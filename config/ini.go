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
// lines and whole-line comments starting with # or ;. Section names are
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
			if rest := strings.TrimSpace(line[end+1:]); rest != "" {
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
			key, value := strings.TrimSpace(line[:eq]), strings.TrimSpace(line[eq+1:])
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
