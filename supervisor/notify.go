package supervisor

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Notifier tells systemd how the service is (sd_notify(3)): READY=1 once
// every role runs, STATUS= lines, STOPPING=1. It writes datagrams to the
// Unix socket that $NOTIFY_SOCKET names (a path, or an abstract address
// written with a leading @). A nil Notifier sends nothing.
type Notifier struct {
	addr string
}

// NotifierFromEnv returns the Notifier of $NOTIFY_SOCKET, nil if it is
// unset, and unsets it so that the peers this process starts do not
// inherit it (systemd accepts messages from the main process only).
func NotifierFromEnv() *Notifier {
	addr := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	return &Notifier{addr: addr}
}

// Notify sends one message: lines such as "READY=1" or "STATUS=...". A
// STATUS value keeps its first line only (the protocol is line based).
func (n *Notifier) Notify(lines ...string) error {
	if n == nil {
		return nil
	}
	for i, l := range lines {
		if j := strings.IndexByte(l, '\n'); j >= 0 {
			lines[i] = l[:j]
		}
	}
	addr := n.addr
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", n.addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", n.addr, err)
	}
	return nil
}
