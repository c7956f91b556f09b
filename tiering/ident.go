package tiering

import (
	"errors"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Ident is a Path that knows the inode number of the object it names, as a
// FUSE node does: a name that leads to another object is not its name, and
// acting there would act on another file (answer its attributes, link it,
// truncate it). Relocate, if the name failed, gives the names it may have
// by another account (the FUSE library's tree); a walk of the tiers is the
// last resort.
type Ident interface {
	Path
	Ino() uint64
	Relocate() (comps []string, ok bool)
	// Relearn tells it the name it was found by, under the namespace
	// lock, so that the next call need not search again.
	Relearn(comps []string)
}

// resolveIdent is resolve with p's identity checked: c, the components p
// gave (nil if it could give none), led to ls (or err). It returns the
// copies of the object p names, found by another name if need be: the
// name the FUSE tree knows, then a walk of the tiers. A request on a node
// comes by a name the kernel holds, so a node is looked for even when
// nothing here knows its name any more; only a node whose file has no
// name left (an unlinked file, asked without a handle) costs a walk in
// vain, which the kernel rarely does.
func (s *Store) resolveIdent(p Path, c []string, ls locs, err error) (locs, error) {
	id, ok := p.(Ident)
	if !ok || (err != nil && !errors.Is(err, unix.ENOENT)) {
		return ls, err
	}
	want := id.Ino()
	if want == 0 || want == RootIno {
		return ls, err
	}
	if err == nil {
		if got, ierr := s.inoOf(ls[0].tier, ls[0].dirfd, ls[0].name, &ls[0].st); ierr == nil && got == want {
			return ls, nil
		}
		ls.close()
	}
	ev := s.log.Warn().Uint64("ino", want).Str("name", strings.Join(c, "/"))
	if rc, ok := id.Relocate(); ok && len(rc) > 0 && !slices.Equal(rc, c) {
		if ls, err := s.locatePath(rc); err == nil {
			if got, err := s.inoOf(ls[0].tier, ls[0].dirfd, ls[0].name, &ls[0].st); err == nil && got == want {
				ev.Str("found", strings.Join(rc, "/")).Msg("a node's name led elsewhere; found it by the name the FUSE tree knows")
				id.Relearn(rc)
				return ls, nil
			}
			ls.close()
		}
	}
	for _, t := range s.tiers {
		rc, err := findIno(t, want)
		if err != nil || rc == nil {
			continue
		}
		if ls, err := s.locatePath(rc); err == nil {
			if got, err := s.inoOf(ls[0].tier, ls[0].dirfd, ls[0].name, &ls[0].st); err == nil && got == want {
				ev.Str("found", strings.Join(rc, "/")).Msg("a node's name led to another object; found it by a walk")
				id.Relearn(rc)
				return ls, nil
			}
			ls.close()
		}
	}
	ev.Discard()
	s.log.Debug().Uint64("ino", want).Msg("a node's file has no name left")
	return nil, unix.ENOENT
}

// findIno walks t's copy of the namespace for a regular file or directory
// carrying inode number ino, reading directories without touching their
// atime. nil if there is none. Caller holds ns.
func findIno(t *Tier, ino uint64) ([]string, error) {
	var found []string
	err := walkTier(t, func(dir int, comps []string, name string, st *unix.Stat_t) bool {
		if ft := st.Mode & unix.S_IFMT; ft != unix.S_IFREG && ft != unix.S_IFDIR {
			return false
		}
		if got, err := getIno(dir, name); err == nil && got == ino {
			found = append(slices.Clone(comps), name)
			return true
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}
