package rbddiff

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// golden is a version 1 diff written by hand from doc/dev/rbd-diff.rst:
// from "s1" to "s2", size 4096, 3 bytes "abc" at 16, 512 zero bytes at
// 1024, end.
const golden = "rbd diff v1\n" +
	"f\x02\x00\x00\x00s1" +
	"t\x02\x00\x00\x00s2" +
	"s\x00\x10\x00\x00\x00\x00\x00\x00" +
	"w\x10\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00abc" +
	"z\x00\x04\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00" +
	"e"

// goldenV2 is the same in version 2 (a le64 payload length after each
// tag but 'e').
const goldenV2 = "rbd diff v2\n" +
	"f\x06\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00s1" +
	"t\x06\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00s2" +
	"s\x08\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00" +
	"w\x13\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00abc" +
	"z\x10\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00" +
	"e"

// item is a data record with its data, as read.
type item struct {
	Record
	data string
}

// readAll reads a whole stream; skipData leaves the data unread (Next
// skips it).
func readAll(src io.Reader, skipData bool) (Header, []item, error) {
	r, err := NewReader(src)
	if err != nil {
		return Header{}, nil, err
	}
	var items []item
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return r.Header(), items, nil
		}
		if err != nil {
			return r.Header(), items, err
		}
		it := item{Record: rec}
		if rec.Kind == TagWrite && !skipData {
			b, err := io.ReadAll(r)
			if err != nil {
				return r.Header(), items, err
			}
			it.data = string(b)
		}
		items = append(items, it)
	}
}

// writeAll writes a stream.
func writeAll(t testing.TB, h Header, items []item) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Kind == TagWrite {
			err = w.Write(it.Offset, []byte(it.data))
		} else {
			err = w.Zero(it.Offset, it.Length)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// noSeek hides a reader's Seek: a pipe.
type noSeek struct{ io.Reader }

func TestGolden(t *testing.T) {
	h := Header{From: "s1", To: "s2", Size: 4096, HasSize: true}
	items := []item{{Record: Record{Kind: TagWrite, Offset: 16, Length: 3}, data: "abc"}, {Record: Record{Kind: TagZero, Offset: 1024, Length: 512}}}
	for _, v := range []struct {
		version int
		text    string
		at      []int64
	}{{1, golden, []int64{35, 55}}, {2, goldenV2, []int64{59, 87}}} {
		h.Version = v.version
		if got := writeAll(t, h, items); string(got) != v.text {
			t.Errorf("v%d written:\n%q\nwant\n%q", v.version, got, v.text)
		}
		for _, src := range []io.Reader{strings.NewReader(v.text), noSeek{strings.NewReader(v.text)}} {
			gh, gi, err := readAll(src, false)
			if err != nil {
				t.Fatalf("v%d: %v", v.version, err)
			}
			want := slices.Clone(items)
			for i := range want {
				want[i].At = v.at[i]
			}
			if gh != h || !slices.Equal(gi, want) {
				t.Errorf("v%d read %+v %+v, want %+v %+v", v.version, gh, gi, h, want)
			}
		}
	}
}

// TestBadInput: each kind of damage is refused with the byte offset where
// it is found, the same whether the source can seek or not (and whether
// the data is read or skipped).
func TestBadInput(t *testing.T) {
	const w0 = 35 // the 'w' record of golden
	for _, c := range []struct {
		name, in string
		at       int64
		msg      string
	}{
		{"not a diff", "rbd image v2\n", 0, "not an RBD diff"},
		{"empty", "", 0, "inside the banner"},
		{"truncated banner", "rbd di", 6, "inside the banner"},
		{"no end", golden[:len(golden)-1], int64(len(golden) - 1), "end record 'e' is missing"},
		{"truncated data", golden[:w0+17+2], w0 + 17 + 2, "inside the 'w' record at byte 35 (1 bytes of its data missing)"},
		{"truncated record", golden[:w0+9], w0 + 9, "inside the 'w' record at byte 35"},
		{"truncated name", golden[:18], 18, "name in the 'f' record at byte 12"},
		{"unknown tag v1", golden[:w0] + "x" + golden[w0:], w0, "unknown record tag 'x'"},
		{"protection in v1", golden[:w0] + "p\x01" + golden[w0:], w0, "unknown record tag 'p'"},
		{"meta after data", golden[:len(golden)-1] + "s\x00\x10\x00\x00\x00\x00\x00\x00e", int64(len(golden) - 1), "'s' record after the data records"},
		{"second from", golden[:12] + "f\x01\x00\x00\x00x" + golden[12:], 18, "a second 'f' record"},
		{"empty name", "rbd diff v1\nf\x00\x00\x00\x00e", 12, "empty name"},
		{"long name", "rbd diff v1\nf\x01\x10\x00\x00e", 12, "name of 4097 bytes"},
		{"beyond the size", "rbd diff v1\ns\x00\x10\x00\x00\x00\x00\x00\x00z\xff\x0f\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00e", 21, "beyond the image's size 4096"},
		{"overflow", "rbd diff v1\nz\xff\xff\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x00\x00\x00e", 12, "overflows"},
		{"after the end", golden + "e", int64(len(golden)), "data after the end record (at byte 72)"},
		{"v2 bad length", strings.Replace(goldenV2, "w\x13", "w\x14", 1), 59, "payload is 20 bytes"},
		{"v2 bad size length", strings.Replace(goldenV2, "s\x08", "s\x07", 1), 42, "payload is 7 bytes, not 8"},
		{"v2 skipped record truncated", goldenV2[:len(goldenV2)-1] + "X\x05\x00\x00\x00\x00\x00\x00\x00ab", int64(len(goldenV2) + 10), "inside the 'X' record"},
		{"bad protection", "rbd diff v2\np\x01\x00\x00\x00\x00\x00\x00\x00\x02e", 12, "protection status 2"},
	} {
		for _, skip := range []bool{false, true} {
			for _, src := range []io.Reader{strings.NewReader(c.in), noSeek{strings.NewReader(c.in)}} {
				_, _, err := readAll(src, skip)
				var fe *Error
				if !errors.As(err, &fe) || !errors.Is(err, errs.ErrInvalid) || fe.At != c.at || !strings.Contains(fe.Msg, c.msg) {
					t.Errorf("%s (skip %v, %T): %v; want an error at byte %d saying %q", c.name, skip, src, err, c.at, c.msg)
				}
			}
		}
	}
}

// A version 2 stream may carry records of tags this package does not
// know, and the protection status: the former are skipped.
func TestV2Skips(t *testing.T) {
	in := "rbd diff v2\n" +
		"M\x03\x00\x00\x00\x00\x00\x00\x00xyz" +
		"p\x01\x00\x00\x00\x00\x00\x00\x00\x01" +
		goldenV2[len("rbd diff v2\n"):len(goldenV2)-1] +
		"Q\x00\x00\x00\x00\x00\x00\x00\x00" + "e"
	for _, src := range []io.Reader{strings.NewReader(in), noSeek{strings.NewReader(in)}} {
		h, items, err := readAll(src, false)
		if err != nil {
			t.Fatal(err)
		}
		want := Header{Version: 2, From: "s1", To: "s2", Size: 4096, HasSize: true, Protected: true, HasProtected: true}
		if h != want || len(items) != 2 || items[0].data != "abc" || items[1].Length != 512 {
			t.Fatalf("read %+v %+v", h, items)
		}
	}
}

func TestWriterRefuses(t *testing.T) {
	w, err := NewWriter(io.Discard, Header{Size: 100, HasSize: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(99, []byte("ab")); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("write past the size: %v", err)
	}
	if err := w.Zero(^uint64(0), 2); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("overflowing zero: %v", err)
	}
	w.Close()
	if err := w.Zero(0, 1); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("record after the end: %v", err)
	}
	if _, err := NewWriter(io.Discard, Header{Version: 3}); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("version 3: %v", err)
	}
	if _, err := NewWriter(io.Discard, Header{From: strings.Repeat("x", MaxNameLen+1)}); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("long name: %v", err)
	}
}

// FuzzReader: no input makes the reader panic or loop; what it accepts
// is written back by the Writer into a stream that reads the same, and
// writing that again gives the same bytes; the same input read through a
// source that seeks, with the data skipped, is accepted or refused alike.
func FuzzReader(f *testing.F) {
	f.Add([]byte(golden))
	f.Add([]byte(goldenV2))
	f.Add([]byte("rbd diff v1\ne"))
	f.Add([]byte("rbd diff v2\nX\x01\x00\x00\x00\x00\x00\x00\x00!e"))
	f.Add([]byte(golden[:50]))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, items, err := readAll(noSeek{bytes.NewReader(in)}, false)
		_, skipped, err2 := readAll(bytes.NewReader(in), true)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("read: %v; read seeking past the data: %v", err, err2)
		}
		if err != nil {
			if !IsFormatError(err) || !errors.Is(err, errs.ErrInvalid) {
				t.Fatalf("error not a format error: %v", err)
			}
			var fe *Error
			errors.As(err, &fe)
			if fe.At < 0 || fe.At > int64(len(in)) {
				t.Fatalf("error at byte %d of %d", fe.At, len(in))
			}
			return
		}
		if len(skipped) != len(items) {
			t.Fatalf("%d records read, %d with the data skipped", len(items), len(skipped))
		}
		out := writeAll(t, h, items)
		h2, items2, err := readAll(bytes.NewReader(out), false)
		if err != nil {
			t.Fatalf("written back, not read: %v\n%q", err, out)
		}
		for i := range items2 {
			items2[i].At, items[i].At = 0, 0
		}
		if h2 != h || !slices.Equal(items2, items) {
			t.Fatalf("round trip: %+v %+v, then %+v %+v", h, items, h2, items2)
		}
		if again := writeAll(t, h2, items2); !bytes.Equal(again, out) {
			t.Fatalf("written twice differs:\n%q\n%q", out, again)
		}
	})
}
