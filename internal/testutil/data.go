package testutil

// Pattern returns n bytes that differ from one offset to the next and
// from one seed to another (byte i is seed + 7i), so that data read from
// the wrong place or of the wrong write shows.
func Pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}
