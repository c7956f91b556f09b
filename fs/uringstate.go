package fs

// URingAvailable says why this kernel would not serve a mount over
// io_uring (no CONFIG_FUSE_IO_URING, its enable_uring switch off), or nil.
func URingAvailable() error { return uringAvailable() }
