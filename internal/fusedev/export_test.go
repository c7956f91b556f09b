package fusedev

// MaxReaders is the most readers a connection has at once.
const MaxReaders = maxReaders

// ReadersStarted counts the readers started since Serve.
func (s *Server) ReadersStarted() uint64 { return s.started.Load() }

// BuffersMade counts the reader buffers allocated and prefaulted.
func (s *Server) BuffersMade() uint64 { return s.made.Load() }
