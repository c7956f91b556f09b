package tiering

import (
	"container/list"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// dirCacheMax bounds the directories a tier keeps open (one descriptor
// each); the least recently walked go first.
const dirCacheMax = 1024

// dirCache keeps open the directories walk resolved on one tier, keyed by
// their components, so that the next walk to one is a dup. An entry names
// the inode walk opened (O_NOFOLLOW), so that a later swap of a name on
// the tier cannot redirect it; what tierfs itself does to a directory's
// name (rename, rmdir, replace, exchange) drops the entries at and under
// it (forget), right after the system call and under ns held exclusively.
// gen makes a walk that raced such a drop (one with ns free) keep its
// result to itself.
type dirCache struct {
	mu   sync.Mutex
	gen  uint64
	m    map[string]*list.Element // of *dirEntry
	lru  list.List                // front: most recently used
	hits atomic.Int64             // walks answered by a dup (tests)
}

type dirEntry struct {
	key string
	fd  int
}

func dirKey(comps []string) string { return strings.Join(comps, "/") }

// get returns a new descriptor of the directory cached under key (ok),
// and the generation to hand put after a miss.
func (c *dirCache) get(key string) (fd int, gen uint64, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[key]; e != nil {
		c.lru.MoveToFront(e)
		fd, err = dupCloexec(e.Value.(*dirEntry).fd)
		if err == nil {
			c.hits.Add(1)
		}
		return fd, c.gen, true, err
	}
	return -1, c.gen, false, nil
}

// put caches a descriptor of fd (which stays the caller's) under key,
// unless a directory was forgotten since gen: fd may then name one that
// is no longer there.
func (c *dirCache) put(key string, fd int, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || c.m[key] != nil {
		return
	}
	nfd, err := dupCloexec(fd)
	if err != nil {
		return
	}
	if c.m == nil {
		c.m = map[string]*list.Element{}
	}
	c.m[key] = c.lru.PushFront(&dirEntry{key: key, fd: nfd})
	for c.lru.Len() > dirCacheMax {
		c.drop(c.lru.Back())
	}
}

func (c *dirCache) drop(e *list.Element) {
	d := c.lru.Remove(e).(*dirEntry)
	delete(c.m, d.key)
	unix.Close(d.fd)
}

// forget drops the directory comps and every one under it (all of them
// for the root).
func (c *dirCache) forget(comps []string) {
	key := dirKey(comps)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.m {
		if key == "" || k == key || strings.HasPrefix(k, key) && k[len(key)] == '/' {
			c.drop(e)
		}
	}
}

func dupCloexec(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// forgetDir drops what the tier's cache holds of directory dir/name:
// called after anything that renames, removes or replaces it there.
func (t *Tier) forgetDir(dir []string, name string) {
	t.dirs.forget(append(append(make([]string, 0, len(dir)+1), dir...), name))
}
