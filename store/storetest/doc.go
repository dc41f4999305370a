// Package storetest is the conformance suite that every store.Store must
// pass, in the manner of containerd's snapshotter test suite: a backend's
// test calls
//
//	storetest.Run(t, open)       // the Store contract
//	storetest.RunLocker(t, open) // the Locker contract, if implemented
//	storetest.RunCrash(t, open)  // durability, if the backend can crash
//	storetest.RunShared(t, open) // two clients of one storage (two hosts)
//	storetest.RunAsync(t, open)  // ReadAsync and WriteAsync (AsyncStore), if implemented
//	storetest.RunAsyncCrash(t, open) // a write is durable when its callback runs
//
// where open returns a new, empty store for each sub-test. The suite closes
// the stores it opens; open may register its own cleanup too (Close may be
// called twice).
//
// # Crash checks
//
// RunCrash drives a random sequence of writes, FUA writes, truncates,
// deletes, copies and syncs against a model that knows, for every 8-byte
// word of every object, the value that must survive a crash and the values
// that may, and checks the store returned by Crash against it: every FUA
// write and everything synced survives, and no word ever holds a value that
// was not written there.
package storetest
