package peer

// SetLocalDispatch turns local dispatch on or off for a test and returns
// what restores it.
func SetLocalDispatch(on bool) (restore func()) {
	old := localDispatch.Swap(on)
	return func() { localDispatch.Store(old) }
}
