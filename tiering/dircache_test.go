package tiering

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests below pin down where a file made under a directory lands on
// the tier after that directory (or its parent) was renamed, removed,
// replaced or exchanged: a tier's directory resolved once and reused
// afterwards must never put a file under a name the namespace no longer
// has, nor fail one it has.

func mkdirs(t *testing.T, s *Store, paths ...string) {
	t.Helper()
	for _, p := range paths {
		dir, name := filepath.Split(p)
		if _, err := s.Mkdir(RelPath(strings.TrimSuffix(dir, "/")), name, 0o755, Owner{}); err != nil {
			t.Fatalf("mkdir %s: %v", p, err)
		}
	}
}

func renameStore(t *testing.T, s *Store, from, to string, flags uint32) {
	t.Helper()
	fd, fn := filepath.Split(from)
	td, tn := filepath.Split(to)
	if err := s.Rename(RelPath(strings.TrimSuffix(fd, "/")), fn, RelPath(strings.TrimSuffix(td, "/")), tn, flags, nil); err != nil {
		t.Fatalf("rename %s %s: %v", from, to, err)
	}
}

// createIn creates dir/name, empty, and says how.
func createIn(s *Store, dir, name string) error {
	h, _, err := s.Create(RelPath(dir), name, unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		return err
	}
	h.Release()
	return nil
}

// onTier says whether rel is on tier tc's disk.
func onTier(tc TierConfig, rel string) bool {
	_, err := os.Lstat(filepath.Join(dataOf(tc), rel))
	return err == nil
}

func wantOn(t *testing.T, tc TierConfig, rels ...string) {
	t.Helper()
	for _, r := range rels {
		if !onTier(tc, r) {
			t.Errorf("%s is not on tier %s", r, tc.Name)
		}
	}
}

func wantNotOn(t *testing.T, tc TierConfig, rels ...string) {
	t.Helper()
	for _, r := range rels {
		if onTier(tc, r) {
			t.Errorf("%s is on tier %s; it should not be", r, tc.Name)
		}
	}
}

// Create under a directory, rename the directory, then its parent: files
// made afterwards land under the new names, and the old names are gone
// (a create under one is ENOENT, and makes no directory).
func TestCreateAfterDirRename(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	mkdirs(t, s, "a", "a/b")
	writeStoreFile(t, s, "a/b", "f1", []byte("1"))
	writeStoreFile(t, s, "a/b", "f1b", []byte("1"))

	renameStore(t, s, "a/b", "a/c", 0)
	writeStoreFile(t, s, "a/c", "f2", []byte("2"))
	if err := createIn(s, "a/b", "f3"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("create under the old name a/b: %v, want ENOENT", err)
	}
	wantOn(t, tiers[0], "a/c/f1", "a/c/f1b", "a/c/f2")
	wantNotOn(t, tiers[0], "a/b")

	renameStore(t, s, "a", "z", 0)
	writeStoreFile(t, s, "z/c", "f4", []byte("4"))
	for _, d := range []string{"a/c", "a/b", "a"} {
		if err := createIn(s, d, "f5"); !errors.Is(err, unix.ENOENT) {
			t.Errorf("create under the old name %s: %v, want ENOENT", d, err)
		}
	}
	wantOn(t, tiers[0], "z/c/f1", "z/c/f2", "z/c/f4")
	for _, tc := range tiers {
		wantNotOn(t, tc, "a")
	}

	// The old name made anew is a new, empty directory.
	mkdirs(t, s, "a", "a/b")
	writeStoreFile(t, s, "a/b", "f6", []byte("6"))
	wantOn(t, tiers[0], "a/b/f6")
	wantNotOn(t, tiers[0], "z/c/f6", "a/b/f1")
	if _, err := s.Lookup(RelPath("a/b"), "f1"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("lookup a/b/f1 in the new a/b: %v, want ENOENT", err)
	}
	if _, err := s.Lookup(RelPath("z/c"), "f6"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("lookup z/c/f6: %v, want ENOENT", err)
	}
}

// rmdir, then mkdir of the same name: the new directory takes the files.
func TestCreateAfterRmdirMkdir(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	mkdirs(t, s, "d", "d/e")
	for round := range 3 {
		name := fmt.Sprintf("f%d", round)
		writeStoreFile(t, s, "d/e", name, []byte("x"))
		if _, err := s.Lookup(RelPath("d/e"), name); err != nil {
			t.Fatalf("round %d: lookup: %v", round, err)
		}
		if err := s.Unlink(RelPath("d/e"), name, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Rmdir(RelPath("d"), "e", nil); err != nil {
			t.Fatal(err)
		}
		if err := createIn(s, "d/e", "g"); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("round %d: create under the removed d/e: %v, want ENOENT", round, err)
		}
		mkdirs(t, s, "d/e")
		writeStoreFile(t, s, "d/e", name, []byte("y"))
		wantOn(t, tiers[0], "d/e/"+name)
		if err := s.Unlink(RelPath("d/e"), name, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// A directory renamed over an empty one replaces it; a directory
// exchanged with another swaps names with it: files follow the names.
func TestCreateAfterDirReplacedOrExchanged(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	mkdirs(t, s, "x", "y")
	writeStoreFile(t, s, "x", "fromx", nil)
	writeStoreFile(t, s, "y", "tmp", nil)
	if err := s.Unlink(RelPath("y"), "tmp", nil); err != nil {
		t.Fatal(err)
	}
	renameStore(t, s, "x", "y", 0) // over the empty y
	writeStoreFile(t, s, "y", "after", nil)
	wantOn(t, tiers[0], "y/fromx", "y/after")
	wantNotOn(t, tiers[0], "x")

	mkdirs(t, s, "p", "q")
	writeStoreFile(t, s, "p", "inp", nil)
	writeStoreFile(t, s, "q", "inq", nil)
	renameStore(t, s, "p", "q", RenameExchange)
	writeStoreFile(t, s, "p", "p2", nil)
	writeStoreFile(t, s, "q", "q2", nil)
	wantOn(t, tiers[0], "p/inq", "p/p2", "q/inp", "q/q2")
	wantNotOn(t, tiers[0], "p/inp", "q/inq")
}

// A file moved between tiers under a directory that files were made in
// lands in that directory's copy on the other tier, before and after
// the directory is renamed on both.
func TestMoveUnderUsedDirectory(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	mkdirs(t, s, "t", "t/p-0")
	writeStoreFile(t, s, "t/p-0", "seg", []byte("segment"))
	writeStoreFile(t, s, "t/p-0", "idx", []byte("index"))
	if err := s.Move("t/p-0/seg", "slow"); err != nil {
		t.Fatal(err)
	}
	wantOn(t, tiers[1], "t/p-0/seg")
	wantNotOn(t, tiers[0], "t/p-0/seg")

	renameStore(t, s, "t/p-0", "t/p-0.del", 0)
	renameStore(t, s, "t", "u", 0)
	if err := s.Move("u/p-0.del/seg", "fast"); err != nil {
		t.Fatal(err)
	}
	if err := s.Move("u/p-0.del/idx", "slow"); err != nil {
		t.Fatal(err)
	}
	wantOn(t, tiers[0], "u/p-0.del/seg")
	wantOn(t, tiers[1], "u/p-0.del/idx")
	for _, tc := range tiers {
		wantNotOn(t, tc, "t")
	}
	for name, want := range map[string]string{"seg": "segment", "idx": "index"} {
		h, err := s.Open(RelPath("u/p-0.del/"+name), unix.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, h); string(got) != want {
			t.Errorf("%s reads %q, want %q", name, got, want)
		}
		h.Release()
	}
	// The old names anew: a file moved there lands there on each tier.
	if err := createIn(s, "t/p-0", "new"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("create under the old name t/p-0: %v, want ENOENT", err)
	}
	mkdirs(t, s, "t", "t/p-0")
	writeStoreFile(t, s, "t/p-0", "new", []byte("new"))
	if err := s.Move("t/p-0/new", "slow"); err != nil {
		t.Fatal(err)
	}
	wantOn(t, tiers[1], "t/p-0/new")
	wantNotOn(t, tiers[1], "u/p-0.del/new")
	wantNotOn(t, tiers[0], "t/p-0/new")
	if err := s.Move("u/p-0.del/idx", "fast"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlink(RelPath("u/p-0.del"), "seg", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlink(RelPath("u/p-0.del"), "idx", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Rmdir(RelPath("u"), "p-0.del", nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tiers {
		wantNotOn(t, tc, "u/p-0.del")
	}
}

// Renames of directories and of their parent race creates, lookups and
// moves under them. Afterwards every create that succeeded is a file on
// a tier, no other file is, and a file made under each name then in the
// namespace lands under that name, while an old name is ENOENT.
func TestDirRenamesRaceCreates(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	const dirs = 3
	mkdirs(t, s, "p")
	for i := range dirs {
		mkdirs(t, s, fmt.Sprintf("p/d%d", i))
	}
	// What each directory is named now; the renamers own it.
	var mu sync.Mutex
	parent := "p"
	names := make([]string, dirs)
	for i := range names {
		names[i] = fmt.Sprintf("d%d", i)
	}
	stop := make(chan struct{})
	var wg, renamers sync.WaitGroup
	errc := make(chan error, 64)
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	renamers.Add(dirs + 1)
	for i := range dirs {
		go func() {
			defer renamers.Done()
			for n := range 150 {
				mu.Lock()
				from, to := names[i], fmt.Sprintf("d%d-%d", i, n)
				if err := s.Rename(RelPath(parent), from, RelPath(parent), to, 0, nil); err != nil {
					report(fmt.Errorf("rename %s/%s: %w", parent, from, err))
				} else {
					names[i] = to
				}
				mu.Unlock()
			}
		}()
	}
	go func() {
		defer renamers.Done()
		for n := range 60 {
			mu.Lock()
			to := fmt.Sprintf("p%d", n)
			if err := s.Rename(RelPath(""), parent, RelPath(""), to, 0, nil); err != nil {
				report(fmt.Errorf("rename %s: %w", parent, err))
			} else {
				parent = to
			}
			mu.Unlock()
		}
	}()
	var created sync.Map // file name -> true, for creates that succeeded
	var tried sync.Map   // directory -> true, for every one a create tried
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				// A name read without the renamers' lock: it may be
				// gone by the create, which is then ENOENT.
				mu.Lock()
				dir := parent + "/" + names[n%dirs]
				mu.Unlock()
				name := fmt.Sprintf("w%d-%d", w, n)
				tried.Store(dir, true)
				switch err := createIn(s, dir, name); {
				case err == nil:
					created.Store(name, true)
				case errors.Is(err, unix.ENOENT):
				default:
					report(fmt.Errorf("create %s/%s: %w", dir, name, err))
				}
				if _, err := s.Lookup(RelPath(dir), name); err != nil && !errors.Is(err, unix.ENOENT) {
					report(fmt.Errorf("lookup %s/%s: %w", dir, name, err))
				}
				if n%16 == 0 {
					if err := s.Move(dir+"/"+name, "slow"); err != nil && !errors.Is(err, unix.ENOENT) {
						report(fmt.Errorf("move %s/%s: %w", dir, name, err))
					}
				}
			}
		}()
	}
	renamers.Wait()
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}

	// Every file on a tier is one that a create made, once.
	found := map[string]string{}
	for _, tc := range tiers {
		err := filepath.WalkDir(dataOf(tc), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dataOf(tc), p)
			if prev, dup := found[d.Name()]; dup {
				t.Errorf("%s on %s and %s", d.Name(), prev, tc.Name+":"+rel)
			}
			found[d.Name()] = tc.Name + ":" + rel
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	created.Range(func(k, _ any) bool {
		n++
		if _, ok := found[k.(string)]; !ok {
			t.Errorf("created %s is on no tier", k)
		}
		return true
	})
	if len(found) != n {
		t.Errorf("%d files on the tiers, %d created", len(found), n)
	}
	if n == 0 {
		t.Fatal("no create succeeded")
	}
	t.Logf("%d creates succeeded", n)

	// Under the names there are now, files land there; under the old
	// ones, a create is ENOENT.
	now := map[string]bool{}
	for i := range dirs {
		dir := parent + "/" + names[i]
		now[dir] = true
		writeStoreFile(t, s, dir, "check", nil)
		wantOn(t, tiers[0], dir+"/check")
	}
	tried.Range(func(k, _ any) bool {
		if old := k.(string); !now[old] {
			if err := createIn(s, old, "check2"); !errors.Is(err, unix.ENOENT) {
				t.Errorf("create under the old name %s: %v, want ENOENT", old, err)
			}
		}
		return true
	})
}

// Programs listing one directory at once each get all its names (each
// listing reads through a description of its own), in a subdirectory
// and in the root.
func TestConcurrentReaddirOfOneDirectory(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	mkdirs(t, s, "a", "a/b")
	const files = 300
	for i := range files {
		writeStoreFile(t, s, "a/b", fmt.Sprintf("f%03d", i), nil)
		writeStoreFile(t, s, "", fmt.Sprintf("r%03d", i), nil)
	}
	for _, c := range []struct {
		dir  string
		want int
	}{{"a/b", files}, {"", files + 1}} {
		var wg sync.WaitGroup
		errc := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					ents, err := s.Readdir(RelPath(c.dir))
					if err == nil && len(ents) != c.want {
						err = fmt.Errorf("%d names, want %d", len(ents), c.want)
					}
					if err != nil {
						errc <- fmt.Errorf("readdir %q: %w", c.dir, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	}
}

// A directory walked once is a dup after that: Kafka's creates, lookups
// and unlinks one level down reuse the descriptor. The tier keeps at
// most dirCacheMax of them, closing what it drops.
func TestWalkKeepsDirectoriesOpen(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	fast := s.Tiers()[0]
	mkdirs(t, s, "a", "a/b")
	before := fast.dirs.hits.Load()
	for i := range 50 {
		name := fmt.Sprintf("f%d", i)
		writeStoreFile(t, s, "a/b", name, nil)
		if err := s.Unlink(RelPath("a/b"), name, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Each create and unlink walks a/b on the fast tier at least once.
	if hits := fast.dirs.hits.Load() - before; hits < 100 {
		t.Errorf("%d walks of a/b answered from the kept descriptor, want at least 100", hits)
	}

	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	base := fds()
	for i := range dirCacheMax + 200 {
		name := fmt.Sprintf("d%d", i)
		mkdirs(t, s, name)
		writeStoreFile(t, s, name, "f", nil)
	}
	fast.dirs.mu.Lock()
	kept := len(fast.dirs.m)
	fast.dirs.mu.Unlock()
	if kept > dirCacheMax {
		t.Errorf("%d directories kept, want at most %d", kept, dirCacheMax)
	}
	if grown := fds() - base; grown > len(tiers)*dirCacheMax {
		t.Errorf("%d more descriptors open after %d directories, want at most %d", grown, dirCacheMax+200, len(tiers)*dirCacheMax)
	}
}
