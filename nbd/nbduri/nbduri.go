// Package nbduri builds the NBD URIs of exports, apart from the NBD server
// so that a tool that prints a URI does not link the server.
package nbduri

import "strings"

// URI returns the NBD URI of an export served on a Unix socket, as QEMU,
// libnbd (nbdinfo, nbdcopy) and fio's nbd engine take it:
//
//	nbd+unix:///vol1?socket=/run/archipelago/nbd.sock
//
// Characters outside the URI's unreserved set are percent-encoded.
func URI(socket, export string) string {
	return "nbd+unix:///" + escape(export, "/:@") + "?socket=" + escape(socket, "/:@")
}

// escape percent-encodes s except unreserved characters and keep.
func escape(s, keep string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', strings.IndexByte(keep, c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}
