package tiering

// The ctime a program sees must not change because tierfs moved a file:
// the copy a move makes is a new backing inode, and the entry leaving one
// directory copy and entering another changes both copies' ctime. No one
// can set a ctime, so tierfs keeps the one to show: for a backing object
// whose ctime an operation of its own changed, the ctime it showed before
// and the one the backing has after. While the backing still has exactly
// that ctime, the kept one is shown; any later change (a write, a chmod,
// an entry added) gives the backing a new ctime, and from then on the
// backing's own is shown and the entry is forgotten.
//
// Entries are kept by backing object (tier, device, inode) in memory and
// appended to .tierfs/ctimes on the object's tier, read back at mount and
// kept there only for the objects the recovery scan finds still with
// that ctime. The log is not fsynced: it is lost only with a power cut,
// after which a moved file shows the time of its move as its ctime.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const ctimeLog = "ctimes"

type ctimeKey struct {
	tier     int
	dev, ino uint64
}

type ctimeEntry struct {
	backing, shown unix.Timespec
	// prev is the backing ctime the entry had before tierfs last changed
	// it (or shown, if none): a getattr that stat'ed the object before
	// that change and asks after it must still get shown.
	prev unix.Timespec
	// pending: tierfs is changing the object's ctime right now (hold);
	// it shows shown whatever its ctime, until keep.
	pending bool
}

// ctimes is the Store's table of kept ctimes.
type ctimes struct {
	mu      sync.Mutex
	entries map[ctimeKey]ctimeEntry
	live    map[ctimeKey]bool // during recovery: entries the scan confirmed
}

// shown is the ctime to show for st, the backing of an object on tier t.
func (c *ctimes) shown(t *Tier, st *unix.Stat_t) unix.Timespec {
	k := ctimeKey{t.Index, st.Dev, st.Ino}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	switch {
	case !ok:
		return st.Ctim
	case e.pending || st.Ctim == e.prev:
		return e.shown
	case e.backing != st.Ctim:
		// Changed since (a write, a chmod): its own ctime from now on.
		// Only a stat taken after the entry's may say so: one taken
		// before tierfs's own change (a getattr outside the lock that
		// change no longer holds) would drop the entry too soon.
		if timespecAfter(st.Ctim, e.backing) {
			delete(c.entries, k)
		}
		return st.Ctim
	}
	if c.live != nil {
		c.live[k] = true
	}
	return e.shown
}

// hold has the object st describes on tier t show shown while tierfs
// changes its ctime (an xattr of its own, outside the namespace lock, so
// a getattr may come between the change and keep), until keep.
func (c *ctimes) hold(t *Tier, st *unix.Stat_t, shown unix.Timespec) {
	if shown == (unix.Timespec{}) {
		return
	}
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[ctimeKey]ctimeEntry{}
	}
	k := ctimeKey{t.Index, st.Dev, st.Ino}
	prev := st.Ctim
	if e, ok := c.entries[k]; ok && !e.pending && e.backing == st.Ctim {
		prev = e.backing
	}
	c.entries[k] = ctimeEntry{shown: shown, prev: prev, pending: true}
	c.mu.Unlock()
}

// keep records that the object open as fd on tier t, whose ctime tierfs
// just changed, is to show shown for as long as its ctime stays.
func (c *ctimes) keep(t *Tier, fd int, shown unix.Timespec) {
	var st unix.Stat_t
	if shown == (unix.Timespec{}) || unix.Fstat(fd, &st) != nil || st.Ctim == shown {
		if st.Ino != 0 {
			c.mu.Lock()
			if e, ok := c.entries[ctimeKey{t.Index, st.Dev, st.Ino}]; ok && e.pending {
				delete(c.entries, ctimeKey{t.Index, st.Dev, st.Ino})
			}
			c.mu.Unlock()
		}
		return
	}
	e := ctimeEntry{backing: st.Ctim, shown: shown, prev: shown}
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[ctimeKey]ctimeEntry{}
	}
	if old, ok := c.entries[ctimeKey{t.Index, st.Dev, st.Ino}]; ok && old.pending {
		e.prev = old.prev // the ctime the object had before the change held
	}
	c.entries[ctimeKey{t.Index, st.Dev, st.Ino}] = e
	c.mu.Unlock()
	lf, err := unix.Openat(t.meta, ctimeLog, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return
	}
	_, _ = unix.Write(lf, []byte(formatCtime(st.Dev, st.Ino, e)))
	unix.Close(lf)
}

func formatCtime(dev, ino uint64, e ctimeEntry) string {
	return fmt.Sprintf("%d %d %d.%09d %d.%09d\n", dev, ino, e.backing.Sec, e.backing.Nsec, e.shown.Sec, e.shown.Nsec)
}

// load reads every tier's log before the recovery scan, which marks the
// entries still true (shown); settle then keeps only those.
func (c *ctimes) load(tiers []*Tier) error {
	c.entries = map[ctimeKey]ctimeEntry{}
	c.live = map[ctimeKey]bool{}
	for _, t := range tiers {
		fd, err := unix.Openat(t.meta, ctimeLog, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("tier %s: %s: %w", t.Name, ctimeLog, err)
		}
		f := os.NewFile(uintptr(fd), ctimeLog)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var dev, ino uint64
			var e ctimeEntry
			if _, err := fmt.Sscanf(sc.Text(), "%d %d %d.%d %d.%d", &dev, &ino, &e.backing.Sec, &e.backing.Nsec, &e.shown.Sec, &e.shown.Nsec); err != nil {
				continue // a line cut short by a crash
			}
			c.entries[ctimeKey{t.Index, dev, ino}] = e
		}
		f.Close()
	}
	return nil
}

// settle forgets what the scan did not confirm and writes each tier's log
// anew with what is left.
func (c *ctimes) settle(tiers []*Tier) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if !c.live[k] {
			delete(c.entries, k)
		}
	}
	c.live = nil
	for _, t := range tiers {
		var b strings.Builder
		for k, e := range c.entries {
			if k.tier == t.Index {
				b.WriteString(formatCtime(k.dev, k.ino, e))
			}
		}
		if b.Len() == 0 {
			_ = unix.Unlinkat(t.meta, ctimeLog, 0)
			continue
		}
		// Written whole before it replaces the old log.
		_ = publishFile(t.meta, ctimeLog, []byte(b.String()), "")
	}
}

func timespecAfter(a, b unix.Timespec) bool {
	return a.Sec > b.Sec || a.Sec == b.Sec && a.Nsec > b.Nsec
}
