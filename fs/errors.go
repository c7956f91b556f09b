package fs

import (
	"errors"
	"sync"
	"syscall"

	"github.com/rs/zerolog"
)

// loggedOnce keeps an unknown error from flooding the log.
var loggedOnce sync.Map

// toErrno is the one translation of core errors to FUSE status: an errno
// passes through (wrapped or not); anything else is EIO, logged once.
func toErrno(log zerolog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	if _, dup := loggedOnce.LoadOrStore(op+": "+err.Error(), true); !dup {
		log.Error().Str("op", op).Err(err).Msg("unexpected error, answering EIO")
	}
	return syscall.EIO
}
