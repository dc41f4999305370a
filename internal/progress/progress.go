// Package progress draws a progress bar for vlmc's long work (import,
// export, flatten, gc, diffs) on a terminal, and nothing when the output
// is not a terminal (a script, a pipe, a log), so that --json and piped
// output stay clean. The bar is github.com/schollz/progressbar.
package progress

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar counts work done towards a total (bytes when Bytes was asked).
// A nil *Bar, and the Bar of a non-terminal, do nothing.
type Bar struct {
	b *progressbar.ProgressBar
}

// Options shape a bar.
type Options struct {
	// Bytes: the counts are bytes (shown as sizes and rates).
	Bytes bool
	// Quiet: draw nothing even on a terminal (--quiet, --json).
	Quiet bool
}

// IsTerminal tells whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// New starts a bar of total units described by desc, drawn on w if w is
// a terminal (usually os.Stderr); total -1 for an unknown total (a
// spinner).
func New(w io.Writer, total int64, desc string, o Options) *Bar {
	if o.Quiet || !IsTerminal(w) {
		return &Bar{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionOnCompletion(func() { io.WriteString(w, "\n") }),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
	}
	if o.Bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	}
	return &Bar{b: progressbar.NewOptions64(total, opts...)}
}

// Add counts n more units done.
func (b *Bar) Add(n int64) {
	if b != nil && b.b != nil {
		b.b.Add64(n)
	}
}

// Set says that n units are done in all.
func (b *Bar) Set(n int64) {
	if b != nil && b.b != nil {
		b.b.Set64(n)
	}
}

// Describe changes the text before the bar (a phase of the work).
func (b *Bar) Describe(desc string) {
	if b != nil && b.b != nil {
		b.b.Describe(desc)
	}
}

// Done finishes the bar (its line ends).
func (b *Bar) Done() {
	if b != nil && b.b != nil {
		b.b.Finish()
	}
}
