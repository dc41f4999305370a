package volume

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// Sessions: this host's connections to a volume (an NBD connection, a
// mapped device), which the block endpoints announce through the mapper.
// They decide when a lock taken for writes is given back: MapWrite and Trim
// take the volume's lock (waiting for another host to let go of it) and
// the engine keeps it while a session that may write is open or an
// explicit Open/Lock holds it; when the last of them goes, the engine
// makes the data written so far durable and releases the lock, so another
// host's waiting write goes on. Reads never take the lock.
//
// A session is bound to the incarnation of the volume it opened: the
// header's random id, which survives renames and changes with a remove and
// create. I/O may name the volume as a reference NAME/ID (Ref); the engine
// fails it with ErrNotFound once the volume called NAME is another one, so
// a connection opened before a remove never reaches the volume created
// after it under the same name.

// SessionKey names a session: the endpoint's port and process (so that the
// sessions of a process that died can be dropped) and the endpoint's
// handle for the connection.
type SessionKey struct {
	Port, PID int
	Handle    uint64
}

// session is one open session of a volume.
type session struct {
	id    [16]byte // the incarnation it opened
	write bool     // it may write (not a snapshot, not opened read-only)
	gone  bool     // its client left; it ends when its requests have
}

// Ref returns the reference to volume name's incarnation id (as
// OpenSession returns it): NAME/ID.
func Ref(name, id string) string { return name + "/" + id }

// SplitRef splits a reference NAME/ID into its parts; a plain name has no
// id.
func SplitRef(ref string) (name, id string) {
	if i := strings.IndexByte(ref, '/'); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

// SplitRefName is the name part of a reference (or the name itself).
func SplitRefName(ref string) string {
	name, _ := SplitRef(ref)
	return name
}

// parseRef checks a volume name or reference.
func parseRef(ref string) (name, id string, err error) {
	name, id = SplitRef(ref)
	if err := ValidName(name); err != nil {
		return "", "", err
	}
	if ref != name && (len(id) != 32 || !isHex(id)) {
		return "", "", fmt.Errorf("volume reference %q: the id after '/' is not 32 hex digits: %w", ref, errs.ErrInvalid)
	}
	return name, id, nil
}

// checkID fails if the header h of volume name is not the incarnation id
// ("" matches any).
func checkID(name, id string, h *header) error {
	if id == "" || id == hex.EncodeToString(h.id[:]) {
		return nil
	}
	return fmt.Errorf("volume %q: the volume opened as %s is gone (removed, or renamed, and the name given to volume %s): %w",
		name, id, hex.EncodeToString(h.id[:]), errs.ErrNotFound)
}

// OpenSession records a session of volume name under key and returns the
// id of the volume's incarnation (32 hex digits), which the session's I/O
// names the volume with (Ref). write says whether the session may write
// (it never does on a snapshot). Opening a key again replaces it. It takes
// no lock.
func (e *Engine) OpenSession(ctx context.Context, name string, key SessionKey, write bool) (string, error) {
	if err := ValidName(name); err != nil {
		return "", fmt.Errorf("open session: %w", err)
	}
	h, err := e.peekHeader(ctx, name)
	if err != nil {
		return "", fmt.Errorf("open session: %w", err)
	}
	v := e.vol(name)
	v.mu.Lock()
	if v.sessions == nil {
		v.sessions = make(map[SessionKey]*session)
	}
	v.sessions[key] = &session{id: h.id, write: write && !h.snapshot()}
	v.mu.Unlock()
	return hex.EncodeToString(h.id[:]), nil
}

// SessionGone marks the session key of volume name as left by its client:
// it no longer counts as a user, and if no session of the volume is left
// but gone ones (and no Open holds it), the writes waiting for another
// host's lock are cancelled: nobody waits for them any more. It still
// counts as a writer until CloseSession, since its requests may still be
// running. An unknown key is ignored.
func (e *Engine) SessionGone(ctx context.Context, name string, key SessionKey) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("session gone: %w", err)
	}
	v := e.vol(name)
	v.mu.Lock()
	if s := v.sessions[key]; s != nil {
		s.gone = true
	}
	v.cancelOrphanWaits()
	v.mu.Unlock()
	return nil
}

// CloseSession ends the session key of volume name (an unknown key is no
// error: the mapper may have restarted since it opened). If no session
// that may write is left and no Open holds the volume, the writes waiting
// for its lock are cancelled and a lock the engine holds is given back
// (see releaseIdle).
func (e *Engine) CloseSession(ctx context.Context, name string, key SessionKey) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("close session: %w", err)
	}
	v := e.vol(name)
	v.mu.Lock()
	_, known := v.sessions[key]
	delete(v.sessions, key)
	v.cancelOrphanWaits()
	v.mu.Unlock()
	if !known {
		if err := e.adoptInherited(ctx, v); err != nil {
			return fmt.Errorf("close session: %w", err)
		}
	}
	if err := e.releaseIdle(ctx, v); err != nil {
		return fmt.Errorf("close session: %w", err)
	}
	return nil
}

// adoptInherited: a session this engine does not know ends (it was
// opened with the mapper that ran before this one). If nothing here uses
// the volume and the store's lock names this engine's owner, the lock was
// most likely taken for that session's writes by the earlier process:
// the engine takes it as its own, so that releaseIdle gives it back
// (after a sync) instead of leaving it to make other hosts wait forever.
func (e *Engine) adoptInherited(ctx context.Context, v *vol) error {
	idle := func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.sessions) == 0 && !v.pinned && !v.held && !v.fenced
	}
	if !idle() {
		return nil
	}
	v.gate.Lock()
	defer v.gate.Unlock()
	if !idle() {
		return nil
	}
	owner, err := e.locker.LockOwner(ctx, lockName(v.name))
	switch {
	case errors.Is(err, errs.ErrNotFound) || (err == nil && owner != e.owner):
		return nil
	case err != nil:
		// Maybe ours: RetryReleases looks again (and gives it back only
		// if it names us).
		v.mu.Lock()
		v.releaseDue = true
		v.mu.Unlock()
		return fmt.Errorf("volume %q: lock owner: %w", v.name, err)
	}
	v.mu.Lock()
	v.held = true
	v.releaseDue = false
	v.confirmed = time.Now()
	v.forget()
	v.mu.Unlock()
	return nil
}

// DropSessions ends every session for which dead is true (their process
// died), as CloseSession does, and returns how many it ended.
func (e *Engine) DropSessions(ctx context.Context, dead func(SessionKey) bool) (int, error) {
	e.mu.Lock()
	vs := make([]*vol, 0, len(e.vols))
	for _, v := range e.vols {
		vs = append(vs, v)
	}
	e.mu.Unlock()
	n := 0
	var first error
	for _, v := range vs {
		v.mu.Lock()
		k := 0
		for key := range v.sessions {
			if dead(key) {
				delete(v.sessions, key)
				k++
			}
		}
		if k > 0 {
			v.cancelOrphanWaits()
		}
		v.mu.Unlock()
		if k == 0 {
			continue
		}
		n += k
		if err := e.releaseIdle(ctx, v); err != nil && first == nil {
			first = err
		}
	}
	return n, first
}

// Sessions returns how many sessions of volume name are open on this
// engine (users, gone ones included) and how many of them may write.
func (e *Engine) Sessions(name string) (users, writers int) {
	e.mu.Lock()
	v := e.vols[name]
	e.mu.Unlock()
	if v == nil {
		return 0, 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.counts()
}

// counts: sessions, and those that may write. Caller holds v.mu.
func (v *vol) counts() (users, writers int) {
	for _, s := range v.sessions {
		users++
		if s.write {
			writers++
		}
	}
	return users, writers
}

// usersOf counts the sessions bound to incarnation id. Caller holds v.mu.
func (v *vol) usersOf(id [16]byte) int {
	n := 0
	for _, s := range v.sessions {
		if s.id == id {
			n++
		}
	}
	return n
}

// orphaned: sessions were open and only gone ones are left (or none), and
// no Open holds the volume. Caller holds v.mu.
func (v *vol) orphaned() bool {
	if v.pinned {
		return false
	}
	for _, s := range v.sessions {
		if !s.gone {
			return false
		}
	}
	return true
}

// cancelOrphanWaits cancels the waits for the lock (holdWait) if nobody on
// this host is left to want them. Caller holds v.mu.
func (v *vol) cancelOrphanWaits() {
	if len(v.waits) == 0 || !v.orphaned() {
		return
	}
	for w, cancel := range v.waits {
		cancel(fmt.Errorf("volume %q: no connection on this host uses it any more: %w", v.name, errs.ErrShutdown))
		delete(v.waits, w)
	}
}

// releaseIdle gives v's lock back if the engine holds it and neither a
// session that may write nor an Open wants it any more: first the owner's
// Drain hook (vlmcd's writes in flight end and its cached mappings go),
// then, with I/O held back, the data written so far is made durable and
// the lock released; the hook runs again after, for mappings fetched in
// between.
func (e *Engine) releaseIdle(ctx context.Context, v *vol) error {
	due := func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		_, w := v.counts()
		return v.held && !v.pinned && w == 0
	}
	if !due() {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	if e.drain != nil {
		e.drain(ctx, v.name)
	}
	v.gate.Lock()
	if !due() {
		v.gate.Unlock()
		return nil
	}
	if err := e.dataSync.sync(ctx); err != nil {
		// Keep the lock: what was written is not known to be durable.
		// RetryReleases tries again.
		v.mu.Lock()
		v.releaseDue = true
		v.mu.Unlock()
		v.gate.Unlock()
		return fmt.Errorf("volume %q: sync before giving its lock back: %w", v.name, err)
	}
	v.mu.Lock()
	v.releaseDue = false
	v.mu.Unlock()
	e.release(ctx, v, false)
	v.gate.Unlock()
	if e.drain != nil {
		e.drain(ctx, v.name)
	}
	return nil
}

// checkBeforeWait checks, before a write takes v's lock, that the volume
// is still incarnation id: a connection left over from a removed volume
// must not take the lock of the one that has its name now.
func (e *Engine) checkBeforeWait(ctx context.Context, v *vol, id string) error {
	if id == "" || v.isHeld() {
		return nil // checked again under the lock
	}
	h, err := e.readHeader(ctx, v.name)
	if err != nil {
		return err
	}
	return checkID(v.name, id, h)
}

// RetryReleases tries again to give back the locks whose release failed
// (releaseIdle's sync, or the unlock in release, e.g. while the maps
// blocker restarted), unless the volume is in use here again (a writer
// session or an explicit Open: then the lock is theirs). The mapper calls
// it now and then. It returns the first error; the volumes that failed
// stay due.
func (e *Engine) RetryReleases(ctx context.Context) error {
	e.mu.Lock()
	var due []*vol
	for _, v := range e.vols {
		v.mu.Lock()
		if v.releaseDue {
			due = append(due, v)
		}
		v.mu.Unlock()
	}
	e.mu.Unlock()
	var first error
	for _, v := range due {
		if err := e.retryRelease(ctx, v); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (e *Engine) retryRelease(ctx context.Context, v *vol) error {
	v.mu.Lock()
	_, w := v.counts()
	held, inUse := v.held, w > 0 || v.pinned
	if inUse {
		v.releaseDue = false
	}
	v.mu.Unlock()
	log := e.dmg.log()
	if inUse {
		log.Info("a lock whose release failed stays: the volume is in use here again", "volume", v.name)
		return nil
	}
	if held {
		// As when the last writer went: drain, sync, release.
		log.Info("giving a volume's lock back again, as its last writer's end", "volume", v.name)
		return e.releaseIdle(ctx, v)
	}
	// The engine gave the lock up but the unlock failed: the lock object
	// may still name us. Under the gate, so that no write takes the lock
	// between the look and the unlock.
	v.gate.Lock()
	defer v.gate.Unlock()
	v.mu.Lock()
	if v.held || !v.releaseDue {
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	// What was written under the lock is made durable before it goes.
	if err := e.dataSync.sync(ctx); err != nil {
		return fmt.Errorf("volume %q: sync before giving its lock back: %w", v.name, err)
	}
	err := e.locker.Unlock(context.WithoutCancel(ctx), lockName(v.name), e.owner, false)
	if err != nil && !errors.Is(err, errs.ErrNotFound) && !errors.Is(err, errs.ErrNotOwner) {
		return fmt.Errorf("volume %q: give its lock back: %w", v.name, err)
	}
	v.mu.Lock()
	v.releaseDue = false
	v.mu.Unlock()
	log.Info("gave a volume's lock back on a retry", "volume", v.name)
	return nil
}
