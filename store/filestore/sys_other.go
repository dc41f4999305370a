//go:build !amd64

package filestore

import "golang.org/x/sys/unix"

// sysFstatat is fstatat(2) on the 64-bit architectures other than amd64.
const sysFstatat = unix.SYS_FSTATAT
