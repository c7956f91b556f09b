package mountutil

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
)

// pipeMaxSize is the largest pipe a process without CAP_SYS_RESOURCE
// may make (fs.pipe-max-size).
const pipeMaxSize = "/proc/sys/fs/pipe-max-size"

// preparePipes settles, before dev serves, whether it splices requests
// ([mount] splice_writes): off, over io_uring (WRITEs come over the
// rings), or where this daemon cannot make pipes that hold a whole
// request, it reads them. A root daemon without CAP_SYS_RESOURCE raises
// pipe-max-size to what it needs, never lowering it.
func preparePipes(dev *fusedev.Server, c Config, uring bool, log zerolog.Logger) {
	if !dev.Splices() {
		return
	}
	if !c.SpliceWrites || uring {
		dev.NoSplice()
		return
	}
	need := dev.PipeSize()
	err := fusedev.TryPipe(need)
	if err == nil {
		return
	}
	if errors.Is(err, unix.EPERM) {
		var was int
		var raised bool
		if was, raised, err = raisePipeMax(pipeMaxSize, need); err == nil && raised {
			log.Info().Int("was", was).Int("asked", need).Str("sysctl", "fs.pipe-max-size").
				Msg("splice_writes: raised the largest pipe a process without CAP_SYS_RESOURCE may make, which this daemon lacks, so that a pipe holds a whole request; tierfs never lowers it")
			err = fusedev.TryPipe(need)
		}
	}
	if err != nil {
		log.Warn().Err(err).Int("bytes", need).Msg("splice_writes: cannot make pipes that hold a whole request; requests are read from /dev/fuse (one more copy per WRITE)")
		dev.NoSplice()
	}
}

// raisePipeMax writes need to the sysctl at path unless it holds that
// much already, and returns what it held and whether it wrote.
func raisePipeMax(path string, need int) (was int, raised bool, err error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0, false, err
	}
	if was, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		return 0, false, err
	}
	if was >= need {
		return was, false, nil
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(need)), 0); err != nil {
		return was, false, err
	}
	return was, true, nil
}
