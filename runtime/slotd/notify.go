package slotd

import (
	"net"
	"os"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Notify sends state (e.g. "READY=1", "STOPPING=1") to the service manager
// over $NOTIFY_SOCKET, the sd_notify protocol: one datagram on a Unix
// socket, a leading '@' meaning the abstract namespace. Without
// $NOTIFY_SOCKET (not run by systemd, or not Type=notify) it does nothing
// and reports false.
func Notify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, errclass.New(errclass.Unavailable, "notify service manager: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, errclass.New(errclass.Unavailable, "notify service manager: %w", err)
	}
	return true, nil
}
