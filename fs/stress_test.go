package fs

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/tiering"
)

// TestStress is issue 16's stress test: several processes do random file
// operations (write, append, writes through a shared mapping, truncate,
// fallocate, link, rename, unlink, fsync, open and close) while the test
// moves random files between tiers and the fast tier is full, so that
// writes spill. Each worker owns a directory and keeps an exact model of
// it; at the end every name read through the mount must be what the model
// says, before and after a remount.
//
// TIERFS_STRESS_DURATION sets how long the workers run (60s under CI=true,
// 10s otherwise); TIERFS_STRESS_SEED replays a run's operations (not
// their timing against the moves, which decides where ENOSPC comes).
func TestStress(t *testing.T) {
	dur, seed := stressParams(t)
	used, scanned := runStress(t, dur, seed)
	// On a disk filesystem the running count trails the scan: ext4 and
	// xfs allocate their own metadata (extent blocks) when they write a
	// file back, after tierfs took its stat, and count it in st_blocks.
	// TestStressUsageOnTmpfs holds the count to the scan exactly.
	for i := range used {
		if used[i] != scanned[i] {
			t.Logf("tier %s: %d bytes used by the running count, %d by the scan at mount", tierNames[i], used[i], scanned[i])
		}
	}
}

// TestStressUsageOnTmpfs runs the stress with its tiers on a tmpfs, which
// allocates nothing of its own for a file: there the usage tierfs keeps
// while running (placement and the policy's thresholds steer by it) must
// be what a scan of the tiers finds at the next mount, to the byte.
func TestStressUsageOnTmpfs(t *testing.T) {
	dur, seed := stressParams(t)
	dur = min(dur/4, 15*time.Second)
	dir := t.TempDir()
	mustOK(t, unix.Mount("tierfs-stress", dir, "tmpfs", 0, "size=1g,mode=0755"), "mount a tmpfs for the tiers")
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	t.Run("tmpfs", func(t *testing.T) {
		// The subtest's temporary directories, the tiers among them,
		// are made under TMPDIR.
		t.Setenv("TMPDIR", dir)
		used, scanned := runStress(t, dur, seed)
		for i := range used {
			if used[i] != scanned[i] {
				t.Errorf("tier %s: %d bytes used by the running count, %d by the scan at mount", tierNames[i], used[i], scanned[i])
			}
		}
	})
}

// stressParams is the stress's duration and seed.
func stressParams(t *testing.T) (time.Duration, uint64) {
	dur := 10 * time.Second
	if os.Getenv("CI") == "true" {
		dur = time.Minute
	}
	if s := os.Getenv("TIERFS_STRESS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("TIERFS_STRESS_DURATION: %v", err)
		}
		dur = d
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TIERFS_STRESS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TIERFS_STRESS_SEED: %v", err)
		}
		seed = v
	}
	return dur, seed
}

// runStress runs the stress for dur and checks the mount against the
// workers' models; it returns each tier's usage as the daemon counted it
// once every file was released, and as the next mount's scan finds it.
func runStress(t *testing.T, dur time.Duration, seed uint64) (used, scanned []int64) {
	t.Logf("seed %d (TIERFS_STRESS_SEED=%d replays it), %v", seed, seed, dur)

	// fast is full most of the time: together the workers keep 5-10 MiB,
	// and the mover moves files up more often than down. slow fills at
	// times too, so files spill from it to cold, which has no cap: a file
	// with one name always finds room.
	m := mount(t, mountOpt{capacities: []units.ByteSize{2 << 20, 4 << 20, 0}})
	capped := []string{tierNames[0], tierNames[1]}

	// The workers are processes, as the issue asks: each has its own
	// address space (mappings, page faults under its own mmap lock) and
	// descriptor table, and the daemon sees requests from several pids.
	// Re-executing the test binary costs a few lines; the models come
	// back in files.
	type proc struct {
		cmd    *exec.Cmd
		stderr bytes.Buffer
		cfg    stressConfig
		err    error
	}
	procs := make([]*proc, 0, stressWorkers)
	var wg sync.WaitGroup
	// Registered after the mount's: runs first, so that the daemon is
	// never stopped under a live worker.
	t.Cleanup(func() {
		for _, p := range procs {
			p.cmd.Process.Kill()
		}
		wg.Wait()
	})
	out := t.TempDir()
	var lock string
	if linksWaitForMoves {
		lock = filepath.Join(out, "link.lock")
		mustOK(t, os.WriteFile(lock, nil, 0o644), "create the link lock")
	}
	for i := range stressWorkers {
		dir := fmt.Sprintf("w%d", i)
		mustOK(t, os.Mkdir(m.path(dir), 0o755), "mkdir "+dir)
		mustOK(t, os.Mkdir(m.path(dir+"/d"), 0o755), "mkdir "+dir+"/d")
		cfg := stressConfig{
			ID: i, Dir: m.path(dir), Seed: seed, Duration: dur,
			Out: filepath.Join(out, dir+".gob"), Capped: capped, Writeback: m.cfg.Writeback, LinkLock: lock,
		}
		b, _ := json.Marshal(cfg)
		p := &proc{cfg: cfg, cmd: exec.Command(os.Args[0], "-test.run=^$")}
		p.cmd.Env = append(os.Environ(), stressWorkerEnv+"="+string(b), "GORACE=atexit_sleep_ms=0")
		p.cmd.Stderr = &p.stderr
		mustOK(t, p.cmd.Start(), "start worker")
		procs = append(procs, p)
		wg.Add(1)
		go func() { defer wg.Done(); p.err = p.cmd.Wait() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	mv := stressMover(t, m, seed, lock, done)

	failed := false
	for _, p := range procs {
		if p.err != nil {
			failed = true
			t.Errorf("worker %d (seed %d): %v\n%s", p.cfg.ID, seed, p.err, p.stderr.String())
		}
	}
	if failed {
		t.FailNow()
	}
	models := make([]stressResult, len(procs))
	counts := map[string]int{}
	for i, p := range procs {
		f, err := os.Open(p.cfg.Out)
		mustOK(t, err, "worker result")
		mustOK(t, gob.NewDecoder(f).Decode(&models[i]), "decode worker result")
		f.Close()
		for k, v := range models[i].Counts {
			counts[k] += v
		}
	}
	st := m.status(t)
	t.Logf("operations: %s", formatCounts(counts))
	t.Logf("mover: %s; moves moved %d (%d spills), skipped %d, failed %d; fast tier full in %d of %d samples",
		formatCounts(mv.results), st.Moves.Moved, st.Moves.Spills, st.Moves.Skipped, st.Moves.Failed, mv.fastFull, mv.samples)
	if mv.results["ok"] == 0 {
		t.Errorf("the mover moved nothing")
	}
	if st.Moves.Spills == 0 {
		t.Errorf("no write spilled (%d moves moved, %d by the mover)", st.Moves.Moved, mv.results["ok"])
	}
	if mv.fastFull == 0 {
		t.Errorf("the fast tier was never full")
	}
	// The workers' last RELEASEs come in the background: an unlinked
	// file still open counts on its tier until then.
	waitFor(t, "every file released", func() bool { return m.status(t).OpenFiles == 0 })
	st = m.status(t)
	for _, ts := range st.Tiers {
		used = append(used, ts.UsedBytes)
	}

	verifyStress(t, m, models, "before remount")
	checkStaging(t, m)
	m.stop(t)
	m = m.restart(t)
	verifyStress(t, m, models, "after remount")
	checkStaging(t, m)
	for _, ts := range m.status(t).Tiers {
		scanned = append(scanned, ts.UsedBytes)
	}
	return used, scanned
}

const (
	stressWorkerEnv = "TIERFS_STRESS_WORKER"
	stressWorkers   = 4
	// stressMaxFile bounds a file's size (the workers keep 5-10 MiB in
	// all: files are cut short, renamed over and unlinked too).
	stressMaxFile = 3 << 19
	stressMaxFds  = 6
	stressMaxOps  = 10_000_000 // a bound besides the deadline

	// A file with several names moves and spills with all of them (issue
	// 16, item 9): such files get mapping writes too, and ENOSPC on them
	// fails the test as on any other file. false would spare them.
	linkedFilesSpill = true

	// stressLinks: the workers make hard links. false would leave them
	// out, to look past a bug in them for others (one CI run once showed
	// a link of one file made another's: a node's name had come to hold
	// another file; tiering.Ident).
	stressLinks = true
	// An open file whose last name is gone spills like any other
	// (TestSpillOfAnUnlinkedOpenFile; its writes once got ENOSPC on a full
	// tier). false would accept ENOSPC for such files.
	unlinkedFilesSpill = true

	// A hard link made while its file is being moved must move with it
	// (TestLinkWhileMoving; it once stayed on the old tier as a second
	// file with the same inode number). true would make links wait for
	// the mover's moves, to look past such a bug for others.
	linksWaitForMoves = false

	// Linux's FUSE client lowers a file's cached link count itself once
	// the server answered an unlink of one of its names
	// (fuse_entry_unlinked), after the reply; an attribute reply for the
	// same file that a request of another process brought meanwhile (the
	// mover lists and looks up the workers' files through the mount), and
	// that counts the unlink already, can be applied in between, and the
	// count reaches 0. link(2) of a name left then fails with ENOENT in
	// the kernel, which never asks tierfs (TestLinkRacingALookup); a stat
	// refreshes the count (the unlink left the attributes stale). true
	// has a worker whose link gets ENOENT stat the name, check it against
	// the model and link again, once; false fails the test there.
	linkRetriesKernelNlinkRace = true

	// An open file whose name changed spills by its new name
	// (TestSpillAfterRename; it once kept the name it had when created,
	// last opened or moved by name, and its writes got ENOSPC and its
	// mapped bytes were lost). false would have the worker write back a
	// file's mapped pages before a name of it changes, and reopen it by a
	// name it has, to look past such a bug for others.
	renamedFilesSpill = true
)

// stressNames are each worker's names, relative to its directory: few
// enough that renames and links often land on an existing name.
var stressNames = []string{"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "d/b0", "d/b1", "d/b2", "d/b3", "d/b4", "d/b5", "d/b6", "d/b7"}

type stressConfig struct {
	ID        int
	Dir       string // the worker's directory in the mount
	Seed      uint64
	Duration  time.Duration
	Out       string   // where the worker writes its stressResult
	Capped    []string // tiers with a capacity: the others always have room
	Writeback bool     // the mount has the kernel's write-back cache
	// LinkLock, if set, is a file the worker flocks while it links and
	// the mover while it moves (linksWaitForMoves).
	LinkLock string
}

// stressResult is a worker's model at the end: every file is closed.
type stressResult struct {
	Names  map[string]int // name → model inode
	Inodes map[int]stressFile
	Counts map[string]int
}

type stressFile struct {
	Data []byte
	Ino  uint64 // st_ino when it was made
}

type moverStats struct {
	results           map[string]int
	samples, fastFull int
}

// stressMover moves random files of the workers to random tiers until
// done is closed; it runs on the test's goroutine (m.move may t.Fatal).
func stressMover(t *testing.T, m *testMount, seed uint64, lock string, done <-chan struct{}) moverStats {
	r := rand.New(rand.NewPCG(seed, 1<<32))
	s := moverStats{results: map[string]int{}}
	move := func(rel, to string) error { return m.move(t, rel, to) }
	if lock != "" {
		f, err := os.Open(lock)
		mustOK(t, err, "open the link lock")
		defer f.Close()
		move = func(rel, to string) error {
			mustOK(t, unix.Flock(int(f.Fd()), unix.LOCK_EX), "flock")
			defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
			return m.move(t, rel, to)
		}
	}
	buf := make([]byte, 64)
	for i := 0; ; i++ {
		select {
		case <-done:
			return s
		default:
		}
		if i%8 == 0 {
			st := m.status(t)
			s.samples++
			// Placement puts no new file where less than 1 MiB is free.
			if st.Tiers[0].FreeBytes < 1<<20 {
				s.fastFull++
			}
		}
		dir := fmt.Sprintf("w%d", r.IntN(stressWorkers))
		if r.IntN(2) == 0 {
			dir += "/d"
		}
		ents, err := os.ReadDir(m.path(dir))
		mustOK(t, err, "mover: readdir "+dir)
		ents = slices.DeleteFunc(ents, func(e os.DirEntry) bool { return !e.Type().IsRegular() })
		if len(ents) == 0 {
			continue
		}
		rel := dir + "/" + ents[r.IntN(len(ents))].Name()
		n, err := unix.Getxattr(m.path(rel), tiering.XattrTier, buf)
		if errors.Is(err, syscall.ENOENT) {
			continue // gone or renamed meanwhile
		}
		mustOK(t, err, "mover: tier of "+rel)
		// Up more often than down: fast stays full.
		to := []string{"fast", "fast", "fast", "slow", "cold"}[r.IntN(5)]
		if to == string(buf[:n]) {
			continue
		}
		err = move(rel, to)
		switch {
		case err == nil:
			s.results["ok"]++
		case errors.Is(err, syscall.ENOENT):
			s.results["gone"]++
		case errors.Is(err, syscall.ESTALE):
			s.results["renamed"]++
		case errors.Is(err, syscall.EMLINK):
			s.results["linked"]++
		case errors.Is(err, syscall.EBUSY):
			s.results["busy"]++
		case errors.Is(err, syscall.ENOSPC):
			s.results["full"]++
		default:
			t.Fatalf("move %s to %s: %v", rel, to, err)
		}
	}
}

// verifyStress compares every worker's model with the mount: the names in
// each directory, and for each file its size, inode number, link count and
// content; each name is on exactly one tier, a file's names on the same.
func verifyStress(t *testing.T, m *testMount, models []stressResult, when string) {
	t.Helper()
	errs := 0
	errorf := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf(when+": "+format, args...)
		}
	}
	inos := map[uint64]string{}
	files := 0
	for w, res := range models {
		dir := fmt.Sprintf("w%d", w)
		for _, sub := range []string{"", "d/"} {
			ents, err := os.ReadDir(m.path(dir + "/" + sub))
			mustOK(t, err, "readdir")
			var got, want []string
			for _, e := range ents {
				if sub == "" && e.Name() == "d" {
					continue
				}
				got = append(got, sub+e.Name())
			}
			for name := range res.Names {
				if strings.HasPrefix(name, "d/") == (sub == "d/") {
					want = append(want, name)
				}
			}
			sort.Strings(want)
			if !slices.Equal(got, want) {
				errorf("%s/%s lists %v, the model %v", dir, sub, got, want)
			}
		}
		byInode := map[int][]string{}
		for name, id := range res.Names {
			byInode[id] = append(byInode[id], name)
		}
		for id, names := range byInode {
			files++
			sort.Strings(names)
			f := res.Inodes[id]
			if prev, ok := inos[f.Ino]; ok {
				errorf("%s/%v and %s have the same inode number %d", dir, names, prev, f.Ino)
			}
			inos[f.Ino] = fmt.Sprintf("%s/%v", dir, names)
			tier := -1
			for _, name := range names {
				rel := dir + "/" + name
				var st unix.Stat_t
				if err := unix.Lstat(m.path(rel), &st); err != nil {
					errorf("stat %s: %v", rel, err)
					continue
				}
				if st.Ino != f.Ino || st.Nlink != uint64(len(names)) || st.Size != int64(len(f.Data)) {
					errorf("%s: inode %d, %d names, %d bytes; the model: inode %d, names %v, %d bytes",
						rel, st.Ino, st.Nlink, st.Size, f.Ino, names, len(f.Data))
				}
				got, err := os.ReadFile(m.path(rel))
				if err != nil {
					errorf("read %s: %v", rel, err)
				} else if !bytes.Equal(got, f.Data) {
					errorf("%s (names %v, inode %d): %s", rel, names, f.Ino, describeDiff(got, f.Data))
				}
				on := []int{}
				for i, td := range m.tiers {
					if _, err := os.Lstat(filepath.Join(td, rel)); err == nil {
						on = append(on, i)
					}
				}
				if len(on) != 1 {
					errorf("%s is on tiers %v", rel, on)
				} else if tier >= 0 && on[0] != tier {
					errorf("%s is on tier %d, its other names on %d: a link left behind by a move of the file (tiering: link during a move's copy, TestLinkWhileMoving)", rel, on[0], tier)
				} else {
					tier = on[0]
				}
			}
		}
	}
	if errs > 20 {
		t.Errorf("%s: %d more differences", when, errs-20)
	}
	t.Logf("%s: %d files checked", when, files)
}

func checkStaging(t *testing.T, m *testMount) {
	t.Helper()
	for i, d := range m.roots {
		ents, err := os.ReadDir(filepath.Join(d, ".tierfs", "staging"))
		mustOK(t, err, "read staging")
		if len(ents) != 0 {
			t.Errorf("staging on tier %d not empty: %v", i, ents)
		}
	}
}

// describeDiff says where got and want first differ, and how.
func describeDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	j := i
	for j < len(got) && j < len(want) && got[j] != want[j] {
		j++
	}
	zeros := i < len(got) && j > i && !slices.ContainsFunc(got[i:j], func(b byte) bool { return b != 0 })
	return fmt.Sprintf("%d bytes read, the model has %d; they differ first at %d, for %d bytes (read as zeros: %v)",
		len(got), len(want), i, j-i, zeros)
}

func formatCounts(c map[string]int) string {
	var ks []string
	for k := range c {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, " %s=%d", k, c[k])
	}
	return strings.TrimSpace(b.String())
}

// The worker process.

// stressFailure ends a worker: it is what its test failed on.
type stressFailure struct{ msg string }

func stressWorkerMain(cfgJSON string) int {
	var cfg stressConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	w := &worker{cfg: cfg, names: map[string]*sInode{}, counts: map[string]int{}}
	w.r = rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.ID)))
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], cfg.Seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(cfg.ID))
	w.data = rand.NewChaCha8(key)
	if err := w.run(); err != nil {
		fmt.Fprintf(os.Stderr, "worker %d, seed %d, operation %d: %s\n%slast operations:\n%s\n", cfg.ID, cfg.Seed, w.op, err, w.where(), w.history())
		return 1
	}
	return 0
}

// sInode is the model of one file: its content, its names and open
// descriptors (counted), and whether a mapping wrote pages that have not
// been written back yet.
type sInode struct {
	id    int
	data  []byte
	ino   uint64
	names int
	fds   int
	dirty bool
	// stale: lost a name while open, and not opened by name since.
	stale bool
}

type sFd struct {
	fd     int
	in     *sInode
	append bool
}

type worker struct {
	cfg    stressConfig
	r      *rand.Rand
	data   *rand.ChaCha8
	names  map[string]*sInode
	fds    []sFd
	nextID int
	op     int
	counts map[string]int
	trace  [48]string
}

func (w *worker) run() (err error) {
	// A fault on a mapping (SIGBUS: the file is shorter than the model
	// says) is a failure to report, not a crash.
	debug.SetPanicOnFault(true)
	defer func() {
		if v := recover(); v != nil {
			if f, ok := v.(stressFailure); ok {
				err = errors.New(f.msg)
				return
			}
			err = fmt.Errorf("panic: %v\n%s", v, debug.Stack())
		}
	}()
	deadline := time.Now().Add(w.cfg.Duration)
	for w.op = 0; w.op < stressMaxOps && time.Now().Before(deadline); w.op++ {
		w.step()
	}
	// Everything written back and closed: the model is what must stay.
	for len(w.fds) > 0 {
		f := w.fds[0]
		w.check(unix.Fsync(f.fd), "final fsync %s%s", w.desc(f.in), w.hint(f.in))
		w.closeFd(0)
	}
	res := stressResult{Names: map[string]int{}, Inodes: map[int]stressFile{}, Counts: w.counts}
	for name, in := range w.names {
		res.Names[name] = in.id
		res.Inodes[in.id] = stressFile{Data: in.data, Ino: in.ino}
	}
	f, err := os.Create(w.cfg.Out)
	if err != nil {
		return err
	}
	if err := gob.NewEncoder(f).Encode(&res); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (w *worker) failf(format string, args ...any) {
	panic(stressFailure{fmt.Sprintf(format, args...)})
}

// check fails unless err is nil.
func (w *worker) check(err error, format string, args ...any) {
	if err != nil {
		w.failf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

func (w *worker) logf(format string, args ...any) {
	w.trace[w.op%len(w.trace)] = fmt.Sprintf("#%d ", w.op) + fmt.Sprintf(format, args...)
}

func (w *worker) history() string {
	var b strings.Builder
	for i := range len(w.trace) {
		if s := w.trace[(w.op+1+i)%len(w.trace)]; s != "" {
			b.WriteString("  " + s + "\n")
		}
	}
	return b.String()
}

// where says, for a failure's report, where each name is: its tier
// (tierfs's xattr), inode number, size and link count, against the model;
// first the files whose names are not one file, which a hard link is.
func (w *worker) where() string {
	type seen struct {
		tiers map[string][]string
		nlink map[uint64]bool
	}
	files := map[*sInode]*seen{}
	var lines []string
	for _, name := range stressNames {
		in := w.names[name]
		if in == nil {
			continue
		}
		buf := make([]byte, 64)
		tier := "?"
		if n, err := unix.Getxattr(w.path(name), tiering.XattrTier, buf); err == nil {
			tier = string(buf[:n])
		}
		var st unix.Stat_t
		err := unix.Lstat(w.path(name), &st)
		lines = append(lines, fmt.Sprintf("  %s: on %s, inode %d, %d bytes, %d names (stat: %v); the model: file %d, inode %d, %d bytes, %d names",
			name, tier, st.Ino, st.Size, st.Nlink, err, in.id, in.ino, len(in.data), in.names))
		if files[in] == nil {
			files[in] = &seen{tiers: map[string][]string{}, nlink: map[uint64]bool{}}
		}
		files[in].tiers[tier] = append(files[in].tiers[tier], name)
		if err == nil {
			files[in].nlink[st.Nlink] = true
		}
	}
	var b strings.Builder
	for in, s := range files {
		if len(s.tiers) > 1 || in.names > 1 && (len(s.nlink) > 1 || !s.nlink[uint64(in.names)]) {
			fmt.Fprintf(&b, "the names of file %d are not one file (tiers %v, link counts %v): a hard link came apart; a link made while the file was being moved stays on the old tier (TestLinkWhileMoving)\n", in.id, s.tiers, slices.Sorted(maps.Keys(s.nlink)))
		}
	}
	b.WriteString("names now:\n" + strings.Join(lines, "\n") + "\n")
	return b.String()
}

// hint names the known bug behind a failure to write to in, if it is one:
// ENOSPC (at the write, or at the writeback of a mapping) on a file that
// should have spilled.
func (w *worker) hint(in *sInode) string {
	if in.stale {
		return " (the file lost a name while open and was not opened by name since: the daemon spills it under that name, and fails; tiering.File.path, TestSpillAfterRename)"
	}
	return ""
}

func (w *worker) path(name string) string { return w.cfg.Dir + "/" + name }

func (w *worker) desc(in *sInode) string {
	var ns []string
	for name, x := range w.names {
		if x == in {
			ns = append(ns, name)
		}
	}
	sort.Strings(ns)
	return fmt.Sprintf("file %d %v (ino %d, %d bytes)", in.id, ns, in.ino, len(in.data))
}

func (w *worker) bytes(n int) []byte {
	b := make([]byte, n)
	w.data.Read(b)
	return b
}

// length is a write's length: mostly small, at times past FUSE's largest
// request, so that one write is several requests (and can be cut short).
func (w *worker) length() int {
	switch k := w.r.IntN(20); {
	case k < 15:
		return 1 + w.r.IntN(16<<10)
	case k < 19:
		return 1 + w.r.IntN(128<<10)
	default:
		return 1 + w.r.IntN(512<<10)
	}
}

// span picks [off, off+n) for a write or fallocate on a file of size:
// anywhere up to 64 KiB past its end (a hole), within stressMaxFile.
func (w *worker) span(size int) (off, n int) {
	off = w.r.IntN(min(size+64<<10, stressMaxFile))
	n = min(w.length(), stressMaxFile-off)
	return off, n
}

func (in *sInode) write(off int, p []byte) {
	if end := off + len(p); end > len(in.data) {
		in.data = append(in.data, make([]byte, end-len(in.data))...)
	}
	copy(in.data[off:], p)
}

func (in *sInode) resize(size int) {
	if size <= len(in.data) {
		in.data = in.data[:size:size]
		return
	}
	in.data = append(in.data, make([]byte, size-len(in.data))...)
}

func (in *sInode) zero(from, to int) {
	to = min(to, len(in.data))
	if from < to {
		clear(in.data[from:to])
	}
}

// mappable: a mapping write to the file cannot be lost (see
// linkedFilesSpill).
func (in *sInode) mappable() bool {
	return (in.names == 1 || in.names > 1 && linkedFilesSpill || in.names == 0 && unlinkedFilesSpill) && len(in.data) > 0
}

// enospcOK says whether a write to f may get ENOSPC: only when the file
// cannot spill (linkedFilesSpill, unlinkedFilesSpill) and its tier has a
// capacity. A file with one name always finds room on the last tier.
func (w *worker) enospcOK(f sFd) bool {
	switch in := f.in; {
	case in.names > 1 && !linkedFilesSpill:
		buf := make([]byte, 64)
		n, err := unix.Fgetxattr(f.fd, tiering.XattrTier, buf)
		w.check(err, "tier of %s", w.desc(in))
		return slices.Contains(w.cfg.Capped, string(buf[:n]))
	case in.names == 0 && !unlinkedFilesSpill:
		return true // no name to ask its tier by
	}
	return false
}

// writable says whether writes to in can be checked at all: with the
// write-back cache a write's ENOSPC comes at fsync or close, after the
// model took the bytes, so files that may get it are not written.
func (w *worker) writable(in *sInode) bool {
	return !w.cfg.Writeback || in.names == 1 || in.names > 1 && linkedFilesSpill || in.names == 0 && unlinkedFilesSpill
}

// flush writes back pages a mapping wrote, before the file becomes one
// whose writeback could fail (a second name, or none).
func (w *worker) flush(in *sInode) {
	if !in.dirty {
		return
	}
	for _, f := range w.fds {
		if f.in == in {
			w.check(unix.Fsync(f.fd), "fsync %s%s", w.desc(in), w.hint(in))
			in.dirty = false
			w.counts["flush"]++
			return
		}
	}
	w.failf("model: %s has pages written through a mapping and no open descriptor", w.desc(in))
}

func (w *worker) pickFd(ok func(sFd) bool) (sFd, bool) {
	var c []sFd
	for _, f := range w.fds {
		if ok(f) {
			c = append(c, f)
		}
	}
	if len(c) == 0 {
		return sFd{}, false
	}
	return c[w.r.IntN(len(c))], true
}

func (w *worker) pickName(exists bool) (string, bool) {
	var c []string
	for _, n := range stressNames {
		if _, ok := w.names[n]; ok == exists {
			c = append(c, n)
		}
	}
	if len(c) == 0 {
		return "", false
	}
	return c[w.r.IntN(len(c))], true
}

var stressOps = []struct {
	name   string
	weight int
	do     func(*worker) bool // false: nothing to do it on
}{
	{"open", 10, (*worker).doOpen},
	{"close", 7, (*worker).doClose},
	{"pwrite", 18, (*worker).doPwrite},
	{"append", 8, (*worker).doAppend},
	{"mmap", 8, (*worker).doMmap},
	{"truncate", 6, (*worker).doTruncate},
	{"fallocate", 7, (*worker).doFallocate},
	{"fsync", 4, (*worker).doFsync},
	{"link", 2, (*worker).doLink},
	{"rename", 6, (*worker).doRename},
	{"unlink", 2, (*worker).doUnlink},
	{"read", 10, (*worker).doRead},
	{"stat", 4, (*worker).doStat},
	{"readdir", 1, (*worker).doReaddir},
}

var stressWeights = func() (n int) {
	for _, o := range stressOps {
		n += o.weight
	}
	return n
}()

func (w *worker) step() {
	k := w.r.IntN(stressWeights)
	for _, o := range stressOps {
		if k -= o.weight; k < 0 {
			if o.do(w) {
				w.counts[o.name]++
			}
			return
		}
	}
}

func (w *worker) doOpen() bool {
	if len(w.fds) >= stressMaxFds {
		return w.doClose()
	}
	name := stressNames[w.r.IntN(len(stressNames))]
	in := w.names[name]
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if in == nil {
		flags |= unix.O_CREAT | unix.O_EXCL
	} else if w.r.IntN(16) == 0 {
		flags |= unix.O_TRUNC
	}
	app := w.r.IntN(4) == 0
	if app {
		flags |= unix.O_APPEND
	}
	fd, err := unix.Open(w.path(name), flags, 0o644)
	w.logf("open %s flags %#x: fd %d, %v", name, flags, fd, err)
	w.check(err, "open %s flags %#x", name, flags)
	var st unix.Stat_t
	w.check(unix.Fstat(fd, &st), "fstat new fd of %s", name)
	if in == nil {
		w.nextID++
		in = &sInode{id: w.nextID, ino: st.Ino, names: 1}
		w.names[name] = in
	} else if flags&unix.O_TRUNC != 0 {
		in.resize(0)
	}
	in.stale = false
	in.fds++
	w.fds = append(w.fds, sFd{fd: fd, in: in, append: app})
	if st.Ino != in.ino || st.Size != int64(len(in.data)) {
		w.failf("open %s: fstat says inode %d, %d bytes; the model %s", name, st.Ino, st.Size, w.desc(in))
	}
	return true
}

func (w *worker) closeFd(i int) {
	f := w.fds[i]
	w.fds = slices.Delete(w.fds, i, i+1)
	err := unix.Close(f.fd)
	w.logf("close fd %d of %s: %v", f.fd, w.desc(f.in), err)
	// close writes back what mappings wrote (FUSE's flush), and reports
	// a failure to.
	w.check(err, "close %s%s", w.desc(f.in), w.hint(f.in))
	f.in.fds--
	f.in.dirty = false
}

func (w *worker) doClose() bool {
	if len(w.fds) == 0 {
		return false
	}
	w.closeFd(w.r.IntN(len(w.fds)))
	return true
}

// wrote applies a write of p at off that returned n, err to the model.
func (w *worker) wrote(what string, f sFd, off int, p []byte, n int, err error) {
	if n > 0 {
		f.in.write(off, p[:n])
		// With the write-back cache the bytes reach the daemon later,
		// like a mapping's.
		f.in.dirty = f.in.dirty || w.cfg.Writeback
	}
	if err == nil && n == len(p) {
		return
	}
	if (err == nil || errors.Is(err, unix.ENOSPC)) && w.enospcOK(f) {
		w.counts["enospc"]++
		if n > 0 {
			w.counts["short"]++
		}
		return
	}
	w.failf("%s of %d bytes at %d to %s: %d written, %v%s", what, len(p), off, w.desc(f.in), n, err, w.hint(f.in))
}

func (w *worker) doPwrite() bool {
	f, ok := w.pickFd(func(f sFd) bool { return !f.append && w.writable(f.in) })
	if !ok {
		return false
	}
	off, n := w.span(len(f.in.data))
	if n <= 0 {
		return false
	}
	p := w.bytes(n)
	got, err := unix.Pwrite(f.fd, p, int64(off))
	w.logf("pwrite %d at %d to %s: %d, %v", n, off, w.desc(f.in), got, err)
	w.wrote("pwrite", f, off, p, got, err)
	return true
}

// doAppend writes at the end through an O_APPEND descriptor, where the
// kernel's size decides the offset.
func (w *worker) doAppend() bool {
	f, ok := w.pickFd(func(f sFd) bool { return f.append && w.writable(f.in) })
	if !ok {
		return false
	}
	off := len(f.in.data)
	n := min(w.length(), stressMaxFile-off)
	if n <= 0 {
		return false
	}
	p := w.bytes(n)
	got, err := unix.Write(f.fd, p)
	w.logf("append %d at %d to %s: %d, %v", n, off, w.desc(f.in), got, err)
	w.wrote("append", f, off, p, got, err)
	pos, err := unix.Seek(f.fd, 0, unix.SEEK_CUR)
	w.check(err, "lseek")
	if got > 0 && pos != int64(off+got) {
		w.failf("append to %s: the descriptor is at %d, the file's end at %d", w.desc(f.in), pos, len(f.in.data))
	}
	return true
}

// doMmap writes through a shared mapping of the whole file, after
// checking that it shows the model. The pages are written back by msync,
// by fsync after munmap, or left dirty for the kernel's flusher, a later
// fsync or the close.
func (w *worker) doMmap() bool {
	f, ok := w.pickFd(func(f sFd) bool { return f.in.mappable() && w.writable(f.in) })
	if !ok {
		return false
	}
	in := f.in
	size := len(in.data)
	mp, err := unix.Mmap(f.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	w.check(err, "mmap %s", w.desc(in))
	if !bytes.Equal(mp, in.data) {
		w.failf("mapping of %s: %s", w.desc(in), describeDiff(mp, in.data))
	}
	var spans []string
	for range 1 + w.r.IntN(4) {
		off := w.r.IntN(size)
		p := w.bytes(min(1+w.r.IntN(16<<10), size-off))
		copy(mp[off:], p)
		in.write(off, p)
		spans = append(spans, fmt.Sprintf("%d+%d", off, len(p)))
	}
	how := w.r.IntN(3)
	w.logf("mmap write %v to %s, then %s", spans, w.desc(in), []string{"msync", "munmap+fsync", "munmap"}[how])
	switch how {
	case 0:
		w.check(unix.Msync(mp, unix.MS_SYNC), "msync %s%s", w.desc(in), w.hint(in))
		w.check(unix.Munmap(mp), "munmap")
	case 1:
		w.check(unix.Munmap(mp), "munmap")
		w.check(unix.Fsync(f.fd), "fsync after munmap %s%s", w.desc(in), w.hint(in))
		in.dirty = false
	default:
		w.check(unix.Munmap(mp), "munmap")
		in.dirty = true
	}
	return true
}

func (w *worker) doTruncate() bool {
	f, ok := w.pickFd(func(sFd) bool { return true })
	if !ok {
		return false
	}
	size := len(f.in.data)
	to := min(size+w.r.IntN(512<<10), stressMaxFile)
	if w.r.IntN(3) == 0 {
		to = w.r.IntN(size + 1)
	}
	err := unix.Ftruncate(f.fd, int64(to))
	w.logf("ftruncate %s to %d: %v", w.desc(f.in), to, err)
	w.check(err, "ftruncate %s to %d", w.desc(f.in), to)
	f.in.resize(to)
	return true
}

func (w *worker) doFallocate() bool {
	f, ok := w.pickFd(func(sFd) bool { return true })
	if !ok {
		return false
	}
	in := f.in
	off, n := w.span(len(in.data))
	if n <= 0 {
		return false
	}
	modes := []uint32{
		0,
		unix.FALLOC_FL_KEEP_SIZE,
		unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE,
		unix.FALLOC_FL_ZERO_RANGE,
		unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE,
	}
	mode := modes[w.r.IntN(len(modes))]
	err := unix.Fallocate(f.fd, mode, int64(off), int64(n))
	w.logf("fallocate %#x %d+%d on %s: %v", mode, off, n, w.desc(in), err)
	// fallocate never spills and no tier refuses it: the capacity bounds
	// writes only.
	w.check(err, "fallocate mode %#x %d+%d on %s", mode, off, n, w.desc(in))
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
		in.zero(off, off+n)
	}
	if mode&unix.FALLOC_FL_KEEP_SIZE == 0 && off+n > len(in.data) {
		in.resize(off + n)
	}
	return true
}

func (w *worker) doFsync() bool {
	f, ok := w.pickFd(func(sFd) bool { return true })
	if !ok {
		return false
	}
	var err error
	if w.r.IntN(2) == 0 {
		err = unix.Fsync(f.fd)
	} else {
		err = unix.Fdatasync(f.fd)
	}
	w.logf("fsync %s: %v", w.desc(f.in), err)
	w.check(err, "fsync %s%s", w.desc(f.in), w.hint(f.in))
	f.in.dirty = false
	return true
}

func (w *worker) doLink() bool {
	if w.cfg.Writeback || !stressLinks {
		return false // see writable; stressLinks
	}
	src, ok1 := w.pickName(true)
	dst, ok2 := w.pickName(false)
	if !ok1 || !ok2 {
		return false
	}
	in := w.names[src]
	w.flush(in)
	if w.cfg.LinkLock != "" {
		lk, err := unix.Open(w.cfg.LinkLock, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		w.check(err, "open the link lock")
		defer unix.Close(lk)
		w.check(unix.Flock(lk, unix.LOCK_EX), "flock")
	}
	err := unix.Link(w.path(src), w.path(dst))
	w.logf("link %s %s (%s): %v", src, dst, w.desc(in), err)
	if errors.Is(err, unix.ENOENT) && linkRetriesKernelNlinkRace {
		// See linkRetriesKernelNlinkRace: tierfs must answer the stat
		// with the model, and the link again.
		var st unix.Stat_t
		w.check(unix.Lstat(w.path(src), &st), "stat %s after link's ENOENT (%s)", src, w.desc(in))
		if st.Ino != in.ino || st.Nlink != uint64(in.names) {
			w.failf("link %s to %s: ENOENT, and stat %s says inode %d with %d names; the model %s with %d names", src, dst, src, st.Ino, st.Nlink, w.desc(in), in.names)
		}
		err = unix.Link(w.path(src), w.path(dst))
		w.logf("link %s %s again (%s): %v", src, dst, w.desc(in), err)
		w.counts["link-kernel-nlink-race"]++
	}
	w.check(err, "link %s to %s (%s)", src, dst, w.desc(in))
	w.names[dst] = in
	in.names++
	return true
}

// unname removes a name from the model: the file goes with its last name
// and descriptor.
func (w *worker) unname(name string) {
	in := w.names[name]
	delete(w.names, name)
	in.names--
}

func (w *worker) doRename() bool {
	src, ok := w.pickName(true)
	if !ok {
		return false
	}
	dst := stressNames[w.r.IntN(len(stressNames))]
	if dst == src {
		return false
	}
	sin, din := w.names[src], w.names[dst]
	var flags uint
	switch k := w.r.IntN(10); {
	case k < 2:
		flags = unix.RENAME_NOREPLACE
	case k < 4 && din != nil:
		flags = unix.RENAME_EXCHANGE
	}
	if din != nil && din != sin && flags == 0 && din.names == 1 {
		w.flush(din) // about to lose its last name
	}
	w.beforeNameChange(sin, din)
	err := unix.Renameat2(unix.AT_FDCWD, w.path(src), unix.AT_FDCWD, w.path(dst), flags)
	w.logf("rename %s %s flags %d (%s over %v): %v", src, dst, flags, w.desc(sin), din != nil, err)
	switch {
	case flags == unix.RENAME_NOREPLACE && din != nil:
		if !errors.Is(err, unix.EEXIST) {
			w.failf("rename NOREPLACE %s over %s: %v, want EEXIST", src, dst, err)
		}
		w.counts["rename-eexist"]++
	case flags == unix.RENAME_EXCHANGE && errors.Is(err, unix.EINVAL) && din != sin:
		// Documented: both names must each have one copy, on the same
		// tier.
		w.counts["exchange-einval"]++
	case flags == unix.RENAME_EXCHANGE:
		w.check(err, "rename EXCHANGE %s %s", src, dst)
		w.names[src], w.names[dst] = din, sin
		w.counts["exchange"]++
		w.afterNameChange(sin, din)
	case din == sin:
		// Two names of one file: rename does nothing.
		w.check(err, "rename %s over its other name %s", src, dst)
	default:
		w.check(err, "rename %s to %s flags %d", src, dst, flags)
		if din != nil {
			w.unname(dst)
		}
		delete(w.names, src)
		w.names[dst] = sin
		w.afterNameChange(sin, din)
	}
	return true
}

// beforeNameChange: unless renamedFilesSpill, what mappings wrote to
// the files goes to the daemon while it knows their names.
func (w *worker) beforeNameChange(ins ...*sInode) {
	for _, in := range ins {
		if in != nil && !renamedFilesSpill {
			w.flush(in)
		}
	}
}

// afterNameChange notes that the open files among ins may be known to
// the daemon by a name they no longer have (see renamedFilesSpill);
// unless that is fixed, an open by a name they have tells it.
func (w *worker) afterNameChange(ins ...*sInode) {
	for _, in := range ins {
		if in == nil || in.fds == 0 || in.names == 0 {
			continue
		}
		in.stale = true
		if renamedFilesSpill {
			continue
		}
		for _, name := range stressNames {
			if w.names[name] == in {
				fd, err := unix.Open(w.path(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				w.check(err, "open %s after a name change", name)
				w.check(unix.Close(fd), "close %s", name)
				in.stale = false
				w.counts["reopen"]++
				break
			}
		}
	}
}

func (w *worker) doUnlink() bool {
	name, ok := w.pickName(true)
	if !ok {
		return false
	}
	in := w.names[name]
	if in.names == 1 {
		w.flush(in)
	}
	w.beforeNameChange(in)
	err := unix.Unlink(w.path(name))
	w.logf("unlink %s (%s): %v", name, w.desc(in), err)
	w.check(err, "unlink %s", name)
	w.unname(name)
	w.afterNameChange(in)
	return true
}

// doRead reads a file whole, through an open descriptor or by name, and
// compares it with the model.
func (w *worker) doRead() bool {
	f, ok := w.pickFd(func(sFd) bool { return true })
	what := "fd"
	if !ok || w.r.IntN(3) == 0 {
		name, ok := w.pickName(true)
		if !ok {
			return false
		}
		fd, err := unix.Open(w.path(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		w.check(err, "open %s to read", name)
		defer func() {
			w.check(unix.Close(fd), "close %s after reading", name)
			w.names[name].dirty = false
		}()
		f, what = sFd{fd: fd, in: w.names[name]}, name
		f.in.stale = false
	}
	in := f.in
	got := make([]byte, len(in.data)+1)
	n := 0
	for n < len(got) {
		m, err := unix.Pread(f.fd, got[n:], int64(n))
		w.check(err, "pread %s at %d", w.desc(in), n)
		if m == 0 {
			break
		}
		n += m
	}
	w.logf("read %s (%s): %d bytes", what, w.desc(in), n)
	if !bytes.Equal(got[:n], in.data) {
		w.failf("read %s (%s): %s", what, w.desc(in), describeDiff(got[:n], in.data))
	}
	return true
}

func (w *worker) doStat() bool {
	name, ok := w.pickName(true)
	if !ok {
		return false
	}
	in := w.names[name]
	var st unix.Stat_t
	err := unix.Lstat(w.path(name), &st)
	w.logf("stat %s (%s): %v", name, w.desc(in), err)
	w.check(err, "stat %s", name)
	if st.Ino != in.ino || st.Size != int64(len(in.data)) || st.Nlink != uint64(in.names) {
		w.failf("stat %s: inode %d, %d bytes, %d names; the model %s with %d names", name, st.Ino, st.Size, st.Nlink, w.desc(in), in.names)
	}
	return true
}

func (w *worker) doReaddir() bool {
	var got, want []string
	for _, sub := range []string{"", "d/"} {
		ents, err := os.ReadDir(w.path(sub))
		w.check(err, "readdir %s", sub)
		for _, e := range ents {
			if sub+e.Name() != "d" {
				got = append(got, sub+e.Name())
			}
		}
	}
	for name := range w.names {
		want = append(want, name)
	}
	sort.Strings(got)
	sort.Strings(want)
	w.logf("readdir: %v", got)
	if !slices.Equal(got, want) {
		w.failf("readdir lists %v, the model %v", got, want)
	}
	return true
}
