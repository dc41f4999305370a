package mapper

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// FileIntents is a volume.Intents kept in a file: one volume name per
// line, replaced whole (written aside, synced, renamed) on every change.
// mapperd keeps it beside its pidfile (RUN_DIR/<role>.intents), so that a
// mapperd started again after a kill gives back the locks its predecessor
// took for operations it never finished.
type FileIntents struct {
	path string

	mu    sync.Mutex
	names map[string]int // name → operations begun and not ended
}

// NewFileIntents returns the intents kept in file path, reading what an
// earlier process left there.
func NewFileIntents(path string) (*FileIntents, error) {
	fi := &FileIntents{path: path, names: map[string]int{}}
	names, err := fi.read()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		fi.names[n]++
	}
	return fi, nil
}

func (fi *FileIntents) read() ([]string, error) {
	f, err := os.Open(fi.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock intents: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n := strings.TrimSpace(sc.Text()); n != "" {
			out = append(out, n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("lock intents %s: %w", fi.path, err)
	}
	return out, nil
}

// write replaces the file with the current set; caller holds fi.mu.
func (fi *FileIntents) write() error {
	var b strings.Builder
	for n := range fi.names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	tmp := fi.path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("lock intents: %w", err)
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, fi.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("lock intents %s: %w", fi.path, err)
	}
	if d, err := os.Open(filepath.Dir(fi.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Begin implements volume.Intents.
func (fi *FileIntents) Begin(name string) error {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.names[name]++
	if fi.names[name] > 1 {
		return nil // on file already
	}
	if err := fi.write(); err != nil {
		delete(fi.names, name)
		return err
	}
	return nil
}

// End implements volume.Intents.
func (fi *FileIntents) End(name string) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	if fi.names[name] == 0 {
		return
	}
	if fi.names[name]--; fi.names[name] > 0 {
		return
	}
	delete(fi.names, name)
	_ = fi.write() // a name left on file costs one owner-checked unlock at the next start
}

// Pending implements volume.Intents.
func (fi *FileIntents) Pending() ([]string, error) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	out := make([]string, 0, len(fi.names))
	for n := range fi.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}
