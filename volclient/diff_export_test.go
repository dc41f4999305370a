package volclient

// SetDiffPartMax makes Diff ask for at most n extents per reply, until
// the returned function restores the default.
func SetDiffPartMax(n int) (restore func()) {
	old := diffPartMax
	diffPartMax = n
	return func() { diffPartMax = old }
}
