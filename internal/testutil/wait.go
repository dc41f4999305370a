package testutil

import (
	"testing"
	"time"
)

// pollEvery is how often WaitFor and WaitForErr try their condition again.
const pollEvery = 5 * time.Millisecond

// WaitFor polls cond every few milliseconds until it holds, and fails the
// test, naming what it waited for, when d passes first.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(pollEvery)
	}
}

// WaitForErr is WaitFor for a condition that says why it does not hold
// yet: it polls f until f returns nil, and the failure after d names the
// last error.
func WaitForErr(t testing.TB, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(pollEvery)
	}
}
