package peer

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// Failed requests are logged where they fail, with the op, the target
// (object or volume), the error (which names what failed) and, for a
// system call's failure, the errno: at level error for I/O errors, damage
// and errors of no known kind, at warning for a full store or segment and
// peers that died or are missing; the outcomes a caller expects (not
// found, exists, locked, invalid, shutting down...) only at debug.
//
// A failing disk fails every request: the log takes at most failBurst
// lines at once and failRate per second after that; what it drops is
// counted and reported in one line failSummary after the first drop.
const (
	failBurst   = 20
	failRate    = 2
	failSummary = 10 * time.Second
)

// failLevel is the level a failed request is logged at.
func failLevel(err error) slog.Level {
	switch errs.ToCode(err) {
	case errs.CodeIO, errs.CodeCorrupt, errs.CodeFenced:
		// Fenced: another host broke this host's lock; writes since may
		// be lost (docs/maps.md, Fencing).
		return slog.LevelError
	case errs.CodeNoSpace, errs.CodePeerDied, errs.CodeNoPeer, errs.CodeTooLarge, errs.CodeVersion:
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// failLog rate-limits the log lines of failed requests (a token bucket).
type failLog struct {
	mu      sync.Mutex
	tokens  float64
	last    time.Time
	dropped int
	timer   *time.Timer
}

// allow takes a token; without one it counts the line as dropped.
func (f *failLog) allow(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last.IsZero() {
		f.tokens = failBurst
	} else {
		f.tokens = min(failBurst, f.tokens+now.Sub(f.last).Seconds()*failRate)
	}
	f.last = now
	if f.tokens >= 1 {
		f.tokens--
		return true
	}
	f.dropped++
	return false
}

// logFailed logs a failed request (see failLevel), within the rate.
func (p *Peer) logFailed(r *xseg.Request, err error) {
	lvl := failLevel(err)
	if !p.log.Enabled(p.ctx, lvl) {
		return
	}
	if lvl > slog.LevelDebug && !p.fails.allow(time.Now()) {
		p.fails.mu.Lock()
		if p.fails.timer == nil {
			p.fails.timer = time.AfterFunc(failSummary, p.logDropped)
		}
		p.fails.mu.Unlock()
		return
	}
	attrs := []any{"op", r.Op().String(), "target", r.Target(), "offset", r.Offset(), "size", r.Size(), "err", err.Error()}
	var en syscall.Errno
	if errors.As(err, &en) {
		attrs = append(attrs, "errno", unix.ErrnoName(en))
	}
	p.log.Log(p.ctx, lvl, "request failed", attrs...)
}

// logDropped reports the failed requests the rate left out of the log.
func (p *Peer) logDropped() {
	p.fails.mu.Lock()
	n := p.fails.dropped
	p.fails.dropped = 0
	p.fails.timer = nil
	p.fails.mu.Unlock()
	if n > 0 {
		p.log.Error("more requests failed than the log takes", "not_logged", n, "since", failSummary.String(), "rate", failRate, "burst", failBurst)
	}
}
