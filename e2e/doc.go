// Package e2e holds the end-to-end tests of the programs: each test builds
// the binaries of cmd/... (internal/testbin), starts them as an operator
// would (archipelago start, vlmc, nbdd) on a segment and a storage
// directory of its own (internal/clitest), drives them with real clients
// (qemu-io, qemu-img, nbdinfo, nbdcopy, mkfs.ext4 on a mapped loop device)
// and kills them with SIGKILL where it tests crashes. Two configurations
// on one directory (or one RADOS pool, in the *_ceph_test.go files, which
// need -tags ceph and ARCHIPELAGO_CEPH_CONF) stand for two hosts.
//
// The package has no code of its own: the programs' code lives in
// cmd/<program> and in the packages they use (supervisor, mapdev,
// nbdexport, internal/daemon).
package e2e
