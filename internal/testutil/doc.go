// Package testutil holds the small helpers that the tests of many packages
// share: waiting for a condition (WaitFor, WaitForErr), skipping where an
// outside program is missing (NeedBinaries), running one (Run, RunErr),
// driving qemu-io one-shot (QemuIO) or as a kept-open session
// (StartQemuSession), test data (Pattern), a buffer that a logger or a
// process writes to while the test reads it (Buffer) and the name of the
// errs sentinel an error wraps (ErrName).
//
// It imports only the standard library and errs, so that the tests of any
// package may use it, also in-package tests of xseg, peer or store, which
// internal/testbin (it builds and runs the project's programs and imports
// those packages) cannot serve without an import cycle.
package testutil
