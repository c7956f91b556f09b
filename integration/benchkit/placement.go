package benchkit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Placement says where a target's files must be for its figures to
// count: on the branch (or tier directory) on the fast medium, and on no
// other. A peer whose files went to its slow branch measured a disk, not
// the medium the others wrote to; its run fails instead of being
// reported. tierfs's own tiers are checked the same way.
type Placement struct {
	Target string   // the target's name, for the errors
	Fast   string   // the directory on the fast medium holding the target's files (mergerfs's first branch, tierfs's <fast>/data)
	Others []string // the target's other branches or tier directories
}

// CheckFile checks that rel, a path relative to the target's mount, is a
// regular file of size bytes under Fast and absent from every other
// branch. Call it after writing the file and before removing it.
func (p Placement) CheckFile(rel string, size int64) error {
	rel = filepath.Clean(rel)
	if filepath.IsAbs(rel) || rel == "." || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%s: %q is not a path inside the mount", p.Target, rel)
	}
	var elsewhere []string
	for _, o := range p.Others {
		if _, err := os.Lstat(filepath.Join(o, rel)); err == nil {
			elsewhere = append(elsewhere, filepath.Join(o, rel))
		}
	}
	fi, err := os.Lstat(filepath.Join(p.Fast, rel))
	switch {
	case len(elsewhere) > 0:
		return fmt.Errorf("%s wrote %s off the fast medium: it is at %s (fast branch %s): its figures would be a slow branch's",
			p.Target, rel, strings.Join(elsewhere, ", "), p.Fast)
	case err != nil:
		return fmt.Errorf("%s wrote %s, which is not on the fast branch %s (%v) nor on %s",
			p.Target, rel, p.Fast, err, strings.Join(p.Others, ", "))
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s: %s on the fast branch is a %v, not a regular file", p.Target, rel, fi.Mode().Type())
	case size >= 0 && fi.Size() != size:
		return fmt.Errorf("%s: %s on the fast branch %s has %d bytes, %d were written", p.Target, rel, p.Fast, fi.Size(), size)
	}
	return nil
}

// CheckTree checks a whole run's files: no regular file with data under
// any other branch, and at least atLeast bytes in regular files under Fast
// (the data the run wrote, still there). For a run whose files are too
// many to name (a Kafka broker's log).
func (p Placement) CheckTree(atLeast int64) error {
	var elsewhere []string
	var n int
	var errs []error
	for _, o := range p.Others {
		err := filepath.WalkDir(o, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed meanwhile (a deleted topic)
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil || fi.Size() == 0 {
				return nil
			}
			n++
			if len(elsewhere) < 5 {
				elsewhere = append(elsewhere, fmt.Sprintf("%s (%d bytes)", path, fi.Size()))
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if n > 0 {
		return fmt.Errorf("%s wrote %d file(s) off the fast medium, e.g. %s: its figures would be a slow branch's",
			p.Target, n, strings.Join(elsewhere, ", "))
	}
	var onFast int64
	err := filepath.WalkDir(p.Fast, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				onFast += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: checking where its files are: %w", p.Target, errors.Join(errs...))
	}
	if onFast < atLeast {
		return fmt.Errorf("%s: %d bytes in files on the fast branch %s, want at least %d (what the run wrote)",
			p.Target, onFast, p.Fast, atLeast)
	}
	return nil
}
