package config

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// TestInlineComments: a # or ; that starts a value or follows a space or
// tab starts a comment, after a value or a section header; inside a word
// it is kept; \# and \; write one anywhere. Errors keep naming the line.
func TestInlineComments(t *testing.T) {
	c := mustParse(t, "[ARCHIPELAGO]   # this host\n"+
		"HOST_ID = node1            # lock owner\n"+
		"RUN_DIR = /srv/run#1\t; a # inside a word stays\n"+
		"LOG_DIR = /srv/log \\#2 \\;x;y # escaped\n"+
		"[XSEG] ; segment\n"+
		"SEGMENT_SIZE = 1024        # MiB\n"+
		"SEGMENT_NAME =seg;1\n"+
		"[nbd]\n"+
		"listen = #none\n"+
		"socket = /srv/run/nbd.sock;x#y\n")
	want := map[string]string{
		"HOST_ID": c.HostID, "RUN_DIR": c.RunDir, "LOG_DIR": c.LogDir, "SEGMENT_NAME": c.XSEG.Name,
	}
	for k, v := range map[string]string{"HOST_ID": "node1", "RUN_DIR": "/srv/run#1", "LOG_DIR": "/srv/log #2 ;x;y", "SEGMENT_NAME": "seg;1"} {
		if want[k] != v {
			t.Errorf("%s = %q, want %q", k, want[k], v)
		}
	}
	if c.XSEG.SizeMiB != 1024 {
		t.Errorf("SEGMENT_SIZE = %d, want 1024", c.XSEG.SizeMiB)
	}
	r, _ := c.Role("nbd")
	if r.Listen != "" || r.Socket != "/srv/run/nbd.sock;x#y" {
		t.Errorf("nbd listen %q socket %q", r.Listen, r.Socket)
	}
	// What Format writes reads back the same, # and ; included.
	d, err := Parse("t.conf", []byte(c.Format()))
	if err != nil || !reflect.DeepEqual(c, d) {
		t.Errorf("round trip: %v\n%s", err, c.Format())
	}
	// A comment does not hide an error, nor move it off its line.
	for text, want := range map[string]string{
		"[XSEG]\n\nSEGMENT_SIZE = lots   # MiB\n": "t.conf:3: [XSEG] SEGMENT_SIZE = lots: not a number",
		"[XSEG]\n[nbd] junk # x\n":                `t.conf:2: "[nbd] junk # x": text after the section header`,
	} {
		_, err = Parse("t.conf", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%q: error %v, want %q wrapping ErrInvalid", text, err, want)
		}
	}
}

// TestREADMEExample parses the configuration example of README.md, taken
// from the README itself so that the README stays true (its inline
// comments were refused), and the error example it shows.
func TestREADMEExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sec := string(readme)
	i := strings.Index(sec, "\n## Configuration\n")
	if i < 0 {
		t.Fatal("README.md has no ## Configuration section")
	}
	sec = sec[i:]
	if j := strings.Index(sec[1:], "\n## "); j >= 0 {
		sec = sec[:j+1]
	}
	m := regexp.MustCompile("(?s)```ini\n(.*?)```").FindAllStringSubmatch(sec, -1)
	if len(m) == 0 {
		t.Fatal("README.md's ## Configuration has no ```ini example")
	}
	for _, ex := range m {
		if _, err := Parse("README.md", []byte(ex[1])); err != nil {
			t.Errorf("README.md's example does not parse:\n%s\n%v", ex[1], err)
		}
	}
	c := mustParse(t, m[0][1])
	r, _ := c.Role("nbd")
	if c.HostID != "node1" || c.XSEG.SizeMiB != 1024 || r.Listen != "127.0.0.1:10809" {
		t.Errorf("README example read as HOST_ID %q, SEGMENT_SIZE %d, listen %q", c.HostID, c.XSEG.SizeMiB, r.Listen)
	}
	// The error the README shows is the one given for its line.
	em := regexp.MustCompile("`(/etc/archipelago/archipelago.conf):(\\d+): \\[(\\w+)\\] (\\w+) = (\\w+): ([^`]*)`").FindStringSubmatch(sec)
	if em == nil {
		t.Fatal("README.md's ## Configuration shows no error example")
	}
	text := strings.Repeat("\n", mustAtoi(t, em[2])-2) + "[" + em[3] + "]\n" + em[4] + " = " + em[5] + "\n"
	_, err = Parse(em[1], []byte(text))
	if err == nil || !strings.Contains(err.Error(), strings.Trim(em[0], "`")) {
		t.Errorf("README error example %s; got %v", em[0], err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	if n < 2 {
		t.Fatalf("line %s", s)
	}
	return n
}

// FuzzParse: no input panics; an error names the file and wraps
// ErrInvalid; a configuration that parses prints (Format) as a file that
// parses back to the same configuration.
func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultText))
	f.Add([]byte("[ARCHIPELAGO]\nHOST_ID = node1 # x\n[XSEG]\nSEGMENT_SIZE = 1024 ; MiB\n[nbd]\nlisten = 127.0.0.1:10809\n"))
	f.Add([]byte("[blockerb]\narchip_dir = /srv/a\\#b;c #d\n[PEERS]\nROLES = blockerb blockerm mapperd vlmcd nbd x\n[x]\ntype = nbd_endpoint\n"))
	f.Add([]byte("[XSEG]\nSEGMENT_SIZE=99999999999999999999\n[nbd]\nportno_start = 3\n"))
	f.Add([]byte("\ufeff;c\r\n[ARCHIPELAGO]\r\nRUN_DIR = /tmp/x y\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.conf", data)
		if err != nil {
			if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), "f.conf") {
				t.Fatalf("error %v: does not wrap ErrInvalid or name the file", err)
			}
			return
		}
		out := c.Format()
		d, err := Parse("f.conf", []byte(out))
		if err != nil {
			t.Fatalf("Format output does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, d) {
			t.Fatalf("round trip differs:\n got %+v\nwant %+v\n%s", d, c, out)
		}
	})
}
