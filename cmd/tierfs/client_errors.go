package main

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// dialError says why the client could not connect to the daemon's
// control socket: refused by the socket's mode (or its directory's), or
// nobody listening.
func dialError(c *controlClient, err error) error {
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return &errDenied{mountpoint: c.mountpoint, socket: c.socket, err: err}
	}
	return &errNoDaemon{mountpoint: c.mountpoint, err: err}
}

// errDenied says that the control socket refused this user.
type errDenied struct {
	mountpoint, socket string
	err                error
}

func (e *errDenied) Error() string {
	return fmt.Sprintf("permission denied on the control socket %s of %s: its mode and group, the mount's "+
		"[mount] control_mode and control_group (by default root's alone), keep this user out; e.g. "+
		"control_mode = \"0660\" with control_group = \"kafka\" lets the members of kafka in, from the next mount",
		e.socket, e.mountpoint)
}

func (e *errDenied) Unwrap() error { return e.err }
