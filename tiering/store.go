package tiering

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
)

// RootIno is the inode number of the mount's root directory.
const RootIno = 1

// firstIno is where counted inode numbers start; below it are reserved.
const firstIno = 1 << 20

// inoChunk is how many inode numbers are reserved durably at a time.
const inoChunk = 1 << 16

// Options tune a Store beyond its tiers.
type Options struct {
	// SegmentSize is the size of an expected new file on a pmem tier: a
	// file is placed on the first tier with that much room.
	SegmentSize int64
	// MinFree is the room a non-pmem tier needs to receive a new file.
	MinFree int64
	// Log receives operator-facing events (moves, recoveries, errors).
	Log zerolog.Logger
	// PMem, when set, gives every pmem tier a pool of preallocated
	// segment files (pool.go); nil: pmem tiers hold plain files.
	PMem *pmem.Config
	// Holder says who holds the tiers (pid, mountpoint), for the error a
	// second daemon on the same tiers gets.
	Holder string
	// IOBucket, when set, names the counters a file's reads count into
	// (per tier), given its path when it is first opened: the daemon
	// counts by Kafka topic. A file keeps its bucket while open.
	IOBucket func(comps []string) *IOBucket
	// TakingOver: the daemon takes a live FUSE connection over from a
	// dead or drained one. The open files whose last name went are
	// adopted, not removed (orphan.go), and since the kernel may hold
	// handles this store never opened, every file whose last name goes
	// is kept until the kernel forgets it (Forgotten).
	TakingOver bool
}

// IOBucket counts the bytes read from files, by tier index. Its counters
// are updated on the read path: atomics only.
type IOBucket struct {
	ReadBytes []atomic.Int64
}

// NewIOBucket makes a bucket for ntiers tiers.
func NewIOBucket(ntiers int) *IOBucket {
	return &IOBucket{ReadBytes: make([]atomic.Int64, ntiers)}
}

// ioBucket is the bucket of the file at p. Caller holds ns.
func (s *Store) ioBucket(p Path) *IOBucket {
	if s.opts.IOBucket == nil || p == nil {
		return nil
	}
	comps, ok := p.Components()
	if !ok {
		return nil
	}
	return s.opts.IOBucket(comps)
}

// Path names a file or directory in the mount. Components is called only
// while the Store holds its namespace lock, so an implementation that
// follows renames (package fs's nodes) can update itself under that lock in
// the commit callbacks that Rename and Unlink run.
type Path interface {
	Components() (comps []string, ok bool)
}

// RelPath is a Path given as a "/"-separated string relative to the root.
type RelPath string

// Components splits the path; "" and "." are the root.
func (p RelPath) Components() ([]string, bool) {
	var out []string
	for _, c := range strings.Split(string(p), "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			return nil, false
		}
		out = append(out, c)
	}
	return out, true
}

// Store is a mounted set of tiers.
type Store struct {
	tiers []*Tier
	opts  Options
	log   zerolog.Logger

	ns sync.RWMutex
	// names is held shared, before ns, by the operations that change a
	// file's names (unlink, rename, link), and exclusively across the
	// commit of a move of a file with several names (linkmove.go) and a
	// rename over files on other tiers (renameOver), whose fsyncs run
	// with ns free: lookups, opens, creates go on meanwhile.
	names sync.RWMutex
	// pending is the staged copies of several-name moves under the
	// file's names on the destination before their commit point, which
	// lookups skip (linkmove.go). Guarded by ns.
	pending []*pendingLink
	// nameDrops counts the unlinks, rmdirs and renames begun (under ns
	// held exclusively): a walk during which it did not change saw every
	// file that existed when it started and still does (ListFiles).
	nameDrops atomic.Uint64

	openMu sync.Mutex
	open   map[uint64]*File
	reads  map[uint64]int64 // last read (unix ns) of files no longer open
	// plain remembers, by inode number, regular files whose backing is
	// known to carry no pmem logical size (pmem.SizeXattr), so that a
	// getattr of a file whose size is whole pages need not ask for it
	// every time (attrOf). An entry is good only for the backing it was
	// learnt on; see plainKey and forgetPlain for when it goes. Guarded
	// by openMu, with plainGen.
	plain    map[uint64]plainKey
	plainGen uint64 // bumped by every forgetPlain
	// orphans is the files with no name left kept in their tier's
	// orphan directory, by inode number (orphan.go). Guarded by openMu.
	orphans map[uint64]*orphan

	// ptReg is a supervised mount's passthrough registry (ptregistry.go),
	// set before the first request; nil otherwise.
	ptReg atomic.Pointer[ptRegistry]

	// sizeXattrReads counts the reads of the pmem size attribute that
	// attrOf makes (tests).
	sizeXattrReads atomic.Int64

	assignMu    sync.Mutex
	inoMu       sync.Mutex
	inoNext     uint64
	inoReserved uint64

	// journalSeq is the last rename journal record's sequence number;
	// journalStale the tiers whose record is still to be removed
	// (journal.go); journalPending the move of a file with several names
	// whose record must be replayed before it is (linkmove.go). Guarded
	// by names held exclusively, or shared with ns held exclusively.
	journalSeq     uint64
	journalStale   []*Tier
	journalPending *linkMoveRecord
	// left is the sources of committed moves still under their names
	// until the rename on the destination is durable (commit.go).
	// Guarded by ns.
	left []*leftSource

	ct ctimes // ctimes shown in place of those tierfs's own work changed (ctime.go)

	scanLinks map[[3]uint64]bool // hard links counted once, during recover
	scanInos  map[uint64]scanned // where recover found each inode number
	scanDups  []dupIno           // numbers recover found on two objects

	ledger ledger // every move, by reason and outcome (ledger.go)

	poolCancel context.CancelFunc
	poolWG     sync.WaitGroup // pool fills and retargeters
	recycleWG  inflight       // pool work in the background: recycling
}

// Open opens the tiers, recovers what an earlier crash left half done,
// and counts what each tier holds.
func Open(tiers []TierConfig, opts Options) (*Store, error) {
	if len(tiers) == 0 {
		return nil, errors.New("no tiers")
	}
	if opts.MinFree == 0 {
		opts.MinFree = 1 << 20
	}
	s := &Store{opts: opts, log: opts.Log, open: map[uint64]*File{}, reads: map[uint64]int64{}, plain: map[uint64]plainKey{}, orphans: map[uint64]*orphan{}}
	for i, c := range tiers {
		t, err := openTier(i, c, &opts, s.tiers)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.tiers = append(s.tiers, t)
	}
	if err := s.loadInoCounter(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.recover(); err != nil {
		s.Close()
		return nil, err
	}
	for _, t := range s.tiers {
		if !t.legacy {
			continue
		}
		if err := writeFormat(t.meta, formatTrusted); err != nil {
			s.Close()
			return nil, fmt.Errorf("tier %s: record its format: %w", t.Name, err)
		}
		t.legacy = false
	}
	if err := s.openPools(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// StatePath is where the daemon keeps a file of its own state (the CLI
// pins) beside the store's: in the first tier's .tierfs directory, which
// the mount does not show.
func (s *Store) StatePath(name string) string {
	return filepath.Join(s.tiers[0].Path, metaDir, name)
}

// Close releases the tiers' directory descriptors. Open files must be
// released first.
func (s *Store) Close() error {
	if r := s.ptReg.Swap(nil); r != nil {
		unix.Close(r.fd)
	}
	s.openMu.Lock()
	for _, f := range s.open {
		f.mu.Lock()
		if f.pm != nil {
			f.pm.Close()
			f.pm = nil
		}
		closeQuiet(f.fd)
		f.fd = -1
		f.mu.Unlock()
	}
	s.open = map[uint64]*File{}
	s.openMu.Unlock()
	s.closePools()
	for _, t := range s.tiers {
		t.close()
	}
	return nil
}

// Tiers lists the tiers, fastest first.
func (s *Store) Tiers() []*Tier { return s.tiers }

// TierByName finds a tier.
func (s *Store) TierByName(name string) (*Tier, error) {
	for _, t := range s.tiers {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("no tier named %q", name)
}

const inoFile = "ino"

// loadInoCounter takes the largest bound found on any tier: a bound is
// written on the first tier with room (reserveLocked), so a lower one left
// on another tier is older.
func (s *Store) loadInoCounter() error {
	next := uint64(firstIno)
	for _, t := range s.tiers {
		b := make([]byte, 32)
		fd, err := unix.Openat(t.meta, inoFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("tier %s: read inode counter: %w", t.Name, err)
		}
		n, _ := unix.Read(fd, b)
		unix.Close(fd)
		if v, perr := strconv.ParseUint(strings.TrimSpace(string(b[:max(n, 0)])), 10, 64); perr == nil && v > next {
			next = v
		}
	}
	s.inoNext = next
	s.inoReserved = next
	return nil
}

// reserveLocked makes the counter's bound durable before numbers below it
// are handed out, so that a crash never hands out the same number twice.
// The bound goes to the first tier that takes it: a full first tier must
// not stop every create.
func (s *Store) reserveLocked(upTo uint64) error {
	b := []byte(strconv.FormatUint(upTo, 10) + "\n")
	var first error
	for _, t := range s.tiers {
		err := publishFile(t.meta, inoFile, b, "")
		if err == nil {
			s.inoReserved = upTo
			return nil
		}
		err = fmt.Errorf("reserve inode numbers on tier %s: %w", t.Name, err)
		if !noRoomFor(err) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func (s *Store) allocIno() (uint64, error) {
	s.inoMu.Lock()
	defer s.inoMu.Unlock()
	if s.inoNext >= s.inoReserved {
		if err := s.reserveLocked(s.inoNext + inoChunk); err != nil {
			return 0, err
		}
	}
	n := s.inoNext
	s.inoNext++
	return n, nil
}

// seenIno makes sure numbers found on disk are never handed out again.
func (s *Store) seenIno(ino uint64) {
	if ino >= 1<<62 {
		return
	}
	s.inoMu.Lock()
	if ino >= s.inoNext {
		s.inoNext = ino + 1
	}
	s.inoMu.Unlock()
}

// inoOf returns the tierfs inode number of dirfd/name, assigning one if the
// backing object has none (created outside tierfs, or a crash came between
// create and setxattr).
func (s *Store) inoOf(t *Tier, dirfd int, name string, st *unix.Stat_t) (uint64, error) {
	ft := st.Mode & unix.S_IFMT
	if ft != unix.S_IFREG && ft != unix.S_IFDIR {
		return derivedIno(t.Index, st.Ino), nil
	}
	ino, err := getIno(dirfd, name)
	if err == nil {
		return ino, nil
	}
	if !errors.Is(err, unix.ENODATA) {
		return 0, err
	}
	s.assignMu.Lock()
	defer s.assignMu.Unlock()
	if ino, err := getIno(dirfd, name); err == nil {
		return ino, nil
	}
	ino, err = s.allocIno()
	if err != nil {
		return 0, err
	}
	if err := setIno(dirfd, name, st, ino); err != nil {
		return 0, fmt.Errorf("tier %s: set inode number: %w", t.Name, err)
	}
	return ino, nil
}
