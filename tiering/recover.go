package tiering

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// recover runs at mount, before anything is served: it finishes or undoes
// what a crash interrupted and counts what each tier holds.
func (s *Store) recover() error {
	for _, t := range s.tiers {
		if err := clearStaging(t); err != nil {
			return err
		}
		if t.legacy {
			if err := takeOverPool(t); err != nil {
				return fmt.Errorf("tier %s: pool: %w", t.Name, err)
			}
		}
	}
	if err := s.replayJournal(); err != nil {
		return err
	}
	var maxIno uint64
	s.scanLinks = map[[3]uint64]bool{}
	s.scanInos = map[uint64]scanned{}
	s.scanDups = nil
	defer func() { s.scanLinks, s.scanInos, s.scanDups = nil, nil, nil }()
	if err := s.ct.load(s.tiers); err != nil {
		return err
	}
	if err := s.settleOrphans(&maxIno); err != nil {
		return err
	}
	if err := s.settlePassthroughRegistry(); err != nil {
		return err
	}
	if err := s.scanDir(nil, &maxIno); err != nil {
		return err
	}
	s.ct.settle(s.tiers)
	if err := s.dupError(); err != nil {
		return err
	}
	s.seenIno(maxIno)
	// Recovery walked everything: serving starts with no directory kept.
	for _, t := range s.tiers {
		t.dirs.forget(nil)
	}
	// Nothing is known of plain files before recovery; say so, should
	// anything have learnt something meanwhile.
	s.openMu.Lock()
	s.plain = map[uint64]plainKey{}
	s.plainGen++
	s.openMu.Unlock()
	return nil
}

// scanned is where the scan found an inode number first.
type scanned struct {
	path     string // in the mount
	tier     string
	dir      bool
	dev, ino uint64 // of the backing
}

// dupInos is two backing objects that claim one inode number.
type dupIno struct {
	ino         uint64
	first, then scanned
}

// noteIno records that the scan found number ino on l (at path): the same
// number on a second object (not a hard link, not another copy of the same
// directory) is a duplicate, which the mount refuses.
func (s *Store) noteIno(ino uint64, path string, l *loc) {
	here := scanned{path: path, tier: l.tier.Name, dir: isDir(&l.st), dev: l.st.Dev, ino: l.st.Ino}
	prev, ok := s.scanInos[ino]
	if !ok {
		s.scanInos[ino] = here
		return
	}
	if prev.dev == here.dev && prev.ino == here.ino {
		return // a hard link
	}
	if prev.dir && here.dir && prev.path == here.path {
		return // another tier's copy of the directory
	}
	s.scanDups = append(s.scanDups, dupIno{ino, prev, here})
}

// dupError refuses to serve inode numbers found on two objects: the kernel
// would take them for one file, and a name would serve the other's data.
func (s *Store) dupError() error {
	if len(s.scanDups) == 0 {
		return nil
	}
	var b strings.Builder
	for i, d := range s.scanDups {
		if i == 10 {
			fmt.Fprintf(&b, "\n  … and %d more", len(s.scanDups)-i)
			break
		}
		fmt.Fprintf(&b, "\n  inode %d: %s on tier %s and %s on tier %s", d.ino, d.first.path, d.first.tier, d.then.path, d.then.tier)
		s.log.Error().Uint64("ino", d.ino).Str("path", d.first.path).Str("tier", d.first.tier).
			Str("other_path", d.then.path).Str("other_tier", d.then.tier).Msg("two files claim one inode number")
	}
	return fmt.Errorf("%d backing files claim an inode number that another one has (a copy made with its extended attributes, or a second daemon on the same tiers); nothing is served until each number is one file's: remove the copy that is not the file, or clear its number with `setfattr -x %s PATH` on the tier (tierfs gives it a new one):%s",
		len(s.scanDups), xattrIno, b.String())
}

// takeOverPool moves the old attribute names of a pmem pool's slots.
func takeOverPool(t *Tier) error {
	fd, err := unix.Openat(t.meta, poolDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	names, err := readNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		if err := takeOverLegacy(fd, n, &st); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

func clearStaging(t *Tier) error {
	fd, err := unix.Openat(t.meta, "staging", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tier %s: open staging: %w", t.Name, err)
	}
	defer unix.Close(fd)
	names, err := readNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		// A staged copy is never the file: the source still is.
		if err := unix.Unlinkat(fd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("tier %s: remove staged copy %s: %w", t.Name, n, err)
		}
	}
	return nil
}

// scanDir walks the union of directory comps over all tiers.
func (s *Store) scanDir(comps []string, maxIno *uint64) error {
	type copyOf struct {
		tier *Tier
		fd   int
	}
	var dirs []copyOf
	defer func() {
		for _, d := range dirs {
			unix.Close(d.fd)
		}
	}()
	for _, t := range s.tiers {
		fd, err := t.walk(comps, nil)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			return err
		}
		dirs = append(dirs, copyOf{t, fd})
	}
	names := map[string]bool{}
	var order []string
	for _, d := range dirs {
		ns, err := readNamesQuiet(d.fd)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if hidden(comps, n) || names[n] {
				continue
			}
			names[n] = true
			order = append(order, n)
		}
	}
	for _, n := range order {
		ls, err := s.locateAll(comps, n)
		if err != nil {
			return err
		}
		for i := range ls {
			if !ls[i].tier.legacy {
				continue
			}
			if ft := ls[i].st.Mode & unix.S_IFMT; ft != unix.S_IFREG && ft != unix.S_IFDIR {
				continue
			}
			if err := takeOverLegacy(ls[i].dirfd, n, &ls[i].st); err != nil {
				ls.close()
				return fmt.Errorf("tier %s: %s: take over tierfs's attributes: %w", ls[i].tier.Name, strings.Join(append(append([]string(nil), comps...), n), "/"), err)
			}
		}
		if len(ls) > 1 && !allDirs(ls) {
			ls = s.resolveDuplicate(comps, ls)
		} else if len(ls) == 1 {
			// A lone copy marked superseded: the crash came before the
			// winner was renamed into place. It is the file.
			clearSuperseded(&ls[0])
		}
		isDirectory := false
		rel := strings.Join(append(append([]string(nil), comps...), n), "/")
		for i := range ls {
			st := &ls[i].st
			s.ct.shown(ls[i].tier, st) // confirms a kept ctime still true
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				isDirectory = true
				if ino, err := getIno(ls[i].dirfd, n); err == nil && ino < 1<<62 {
					*maxIno = max(*maxIno, ino)
					s.noteIno(ino, rel, &ls[i])
				}
			case unix.S_IFREG:
				if ino, err := getIno(ls[i].dirfd, n); err == nil && ino < 1<<62 {
					*maxIno = max(*maxIno, ino)
					s.noteIno(ino, rel, &ls[i])
				}
				if st.Nlink > 1 {
					k := [3]uint64{uint64(ls[i].tier.Index), st.Dev, st.Ino}
					if s.scanLinks[k] {
						continue
					}
					s.scanLinks[k] = true
				}
				ls[i].tier.used.Add(usedBytes(st))
				ls[i].tier.files.Add(1)
			}
		}
		ls.close()
		if isDirectory {
			if err := s.scanDir(append(append([]string(nil), comps...), n), maxIno); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolveDuplicate keeps one copy of a file found on several tiers: a
// copy marked superseded by a tier that has a copy goes. Unmarked
// duplicates (made outside tierfs) are left alone and reported; the name
// answers EIO (locate) until an operator removes one.
func (s *Store) resolveDuplicate(comps []string, ls locs) locs {
	var keep locs
	for i, winner := range superseded(ls) {
		if winner != "" {
			s.log.Info().Str("tier", ls[i].tier.Name).Strs("path", append(append([]string(nil), comps...), ls[i].name)).
				Str("winner", winner).Msg("recovery: removing the superseded copy of a committed move")
			if err := unix.Unlinkat(ls[i].dirfd, ls[i].name, 0); err == nil {
				_ = fsyncDirAt(ls[i].dirfd)
				closeQuiet(ls[i].dirfd)
				continue
			}
		}
		keep = append(keep, ls[i])
	}
	if len(keep) > 1 {
		var tiers []string
		for i := range keep {
			tiers = append(tiers, keep[i].tier.Name)
		}
		s.log.Error().Strs("path", append(append([]string(nil), comps...), keep[0].name)).Strs("tiers", tiers).
			Msg("a name exists on several tiers without a tierfs marker (written behind tierfs's back?): it answers EIO until one copy is removed from its tier")
		return keep
	}
	if len(keep) == 1 {
		clearSuperseded(&keep[0])
	}
	return keep
}

// clearSuperseded removes the marker of the one copy left of a file.
func clearSuperseded(l *loc) {
	if l.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	_ = onObject(l, func(p string) error { return unix.Removexattr(p, xattrSuperseded) })
}
