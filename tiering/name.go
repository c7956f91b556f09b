package tiering

import (
	"errors"
	"strings"
)

// ErrAlreadyThere is MoveWith's answer for a file already on the tier it
// was asked to move to: nothing was copied.
var ErrAlreadyThere = errors.New("already on that tier")

// currentName is f's name now, for the log ("" once unlinked). It takes the
// namespace lock, so that the name cannot change while it is read.
func (s *Store) currentName(f *File) string {
	s.ns.RLock()
	defer s.ns.RUnlock()
	s.openMu.Lock()
	p := f.path
	s.openMu.Unlock()
	if p == nil {
		return ""
	}
	comps, ok := p.Components()
	if !ok {
		return ""
	}
	return strings.Join(comps, "/")
}
