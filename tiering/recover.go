package tiering

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// recover runs at mount, before anything is served: it finishes or undoes
// what a crash interrupted and counts what each tier holds.
func (s *Store) recover() error {
	for _, t := range s.tiers {
		if err := clearStaging(t); err != nil {
			return err
		}
	}
	if err := s.replayJournal(); err != nil {
		return err
	}
	var maxIno uint64
	s.scanLinks = map[[3]uint64]bool{}
	defer func() { s.scanLinks = nil }()
	if err := s.scanDir(nil, &maxIno); err != nil {
		return err
	}
	s.seenIno(maxIno)
	// Nothing is known of plain files before recovery; say so, should
	// anything have learnt something meanwhile.
	s.openMu.Lock()
	s.plain = map[uint64]plainKey{}
	s.plainGen++
	s.openMu.Unlock()
	return nil
}

func clearStaging(t *Tier) error {
	fd, err := unix.Openat(t.meta, "staging", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
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
		ns, err := readNames(d.fd)
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
		ls, err := s.locate(comps, n)
		if err != nil {
			return err
		}
		if len(ls) > 1 && !isDir(&ls[0].st) {
			ls = s.resolveDuplicate(comps, ls)
		} else if len(ls) == 1 {
			// A lone copy marked superseded: the crash came before the
			// winner was renamed into place. It is the file.
			_ = unix.Lremovexattr(procPath(ls[0].dirfd, n), xattrSuperseded)
		}
		isDirectory := false
		for i := range ls {
			st := &ls[i].st
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				isDirectory = true
				if ino, err := getIno(ls[i].dirfd, n); err == nil && ino > *maxIno && ino < 1<<62 {
					*maxIno = ino
				}
			case unix.S_IFREG:
				if ino, err := getIno(ls[i].dirfd, n); err == nil && ino > *maxIno && ino < 1<<62 {
					*maxIno = ino
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
// duplicates (made outside tierfs) are left alone and reported; the
// fastest tier's copy is served.
func (s *Store) resolveDuplicate(comps []string, ls locs) locs {
	has := map[string]bool{}
	for i := range ls {
		has[ls[i].tier.Name] = true
	}
	var keep locs
	for i := range ls {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(procPath(ls[i].dirfd, ls[i].name), xattrSuperseded, buf)
		if err == nil && has[string(buf[:n])] && string(buf[:n]) != ls[i].tier.Name {
			s.log.Info().Str("tier", ls[i].tier.Name).Strs("path", append(append([]string(nil), comps...), ls[i].name)).
				Str("winner", string(buf[:n])).Msg("recovery: removing the superseded copy of a committed move")
			if err := unix.Unlinkat(ls[i].dirfd, ls[i].name, 0); err == nil {
				_ = fsyncDirAt(ls[i].dirfd)
				closeQuiet(ls[i].dirfd)
				continue
			}
		}
		keep = append(keep, ls[i])
	}
	if len(keep) > 1 {
		s.log.Error().Strs("path", append(append([]string(nil), comps...), keep[0].name)).Int("copies", len(keep)).
			Msg("file exists on several tiers without a tierfs marker; serving the fastest tier's copy and leaving the others")
	}
	if len(keep) > 0 {
		_ = unix.Lremovexattr(procPath(keep[0].dirfd, keep[0].name), xattrSuperseded)
	}
	return keep
}
