package daemon

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/archipelago-go/archipelago/errs"
)

// A RoleSetting is one row of a program's config→flag table: the option
// that the flag Flag sets takes a value from the configuration unless the
// flag was given on the command line. Make rows with FromRole and apply a
// table with ApplyRole:
//
//	daemon.ApplyRole(cmd.Flags(),
//		daemon.FromRole("archip-dir", &o.Dir, r.ArchipDir),
//		daemon.FromRole("fdcache", &o.FDCache, r.FDCache),
//	)
type RoleSetting struct {
	Flag string // the flag's name, without "--"
	set  func() // stores the configuration's value in the flag's variable
}

// FromRole is the row "dst, the variable of --flag, takes v unless --flag
// is given on the command line". dst and v have the same type, so a row
// cannot store a value of the wrong type.
func FromRole[T any](flag string, dst *T, v T) RoleSetting {
	return RoleSetting{Flag: flag, set: func() { *dst = v }}
}

// ApplyRole applies the rows of table in order: a row whose flag was not
// given on the command line stores its value. A row naming a flag that fs
// does not define is a mistake in the program (the flag would never win);
// ApplyRole then applies no row and returns an error naming the flag.
func ApplyRole(fs *pflag.FlagSet, table ...RoleSetting) error {
	for _, s := range table {
		if fs.Lookup(s.Flag) == nil {
			return fmt.Errorf("config→flag table: no flag --%s: %w", s.Flag, errs.ErrInvalid)
		}
	}
	for _, s := range table {
		if !fs.Changed(s.Flag) {
			s.set()
		}
	}
	return nil
}
