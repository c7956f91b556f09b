package fs

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Pages that a write completed after an earlier write had left them in part
// are dropped from the kernel's page cache, so that a reader gets them by
// read-ahead instead of one synchronous READ each.
//
// Without the write-back cache the kernel copies a write into its page
// cache and sends it on; a page that the write covers only in part, and
// that was not up to date before, stays not up to date (the kernel does not
// read the rest of it first), and the next write that fills the rest of it
// does not make it up to date either, since it too covers only part. Kafka
// appends batches that end anywhere in a page, so one page per batch stays
// in the cache not up to date for good. A reader (a consumer right behind
// the producer) finds such a page in the cache and reads it on its own: one
// synchronous 4 KiB READ per batch, a round trip each, while the rest of
// the data comes from the cache. A page that is not in the cache at all is
// read with the read-ahead: asynchronously, with the pages after it.
//
// So once a write has covered the end of a page whose beginning it did not
// write (the page is complete and no append will touch it again), that page
// is dropped with FUSE_NOTIFY_INVAL_INODE. The drop is always safe: without
// the write-back cache every write is in the backing before the kernel
// unlocks its pages, so the cache holds nothing the daemon lacks; the
// kernel drops the page under its lock, after the write that holds it. The
// notification cannot be sent from the WRITE itself (the kernel holds the
// page locked until the reply, and the drop waits for that lock), so a
// goroutine sends them. It is woken once per dropBatch pages, or dropDelay
// after the first page of a batch, not once per write: on a busy machine
// waking it for every Kafka batch cost the producer more than the drops
// gave back. A reader that gets to a page before its drop, like a page
// skipped because maxPending are waiting, costs a synchronous READ, nothing
// else. Nothing is dropped with the write-back cache (the kernel reads a
// page before writing part of it) nor with direct I/O (writes do not go
// through the cache).
type pageDropper struct {
	mu      sync.Mutex
	pending []dropReq
	armed   bool // the timer will kick the goroutine
	timer   *time.Timer

	kick     chan struct{} // one slot: wake the goroutine
	synced   chan chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	dropped  atomic.Uint64
}

type dropReq struct {
	n   *Node
	off int64
}

const (
	dropBatch  = 32
	dropDelay  = 5 * time.Millisecond
	maxPending = 4096
)

var pageSize = int64(os.Getpagesize())

func newPageDropper() *pageDropper {
	d := &pageDropper{
		kick:   make(chan struct{}, 1),
		synced: make(chan chan struct{}),
		done:   make(chan struct{}),
	}
	d.timer = time.AfterFunc(time.Hour, d.wake)
	d.timer.Stop()
	go d.run()
	return d
}

func (d *pageDropper) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *pageDropper) run() {
	var batch []dropReq
	for {
		var synced chan struct{}
		select {
		case <-d.kick:
		case synced = <-d.synced:
		case <-d.done:
			return
		}
		d.mu.Lock()
		batch, d.pending = d.pending, batch[:0]
		d.armed = false
		d.mu.Unlock()
		for _, r := range batch {
			// ENOENT: the kernel has forgotten the inode, and its
			// pages with it. Anything else: the mount is going away.
			if r.n.NotifyContent(r.off, pageSize) == 0 {
				d.dropped.Add(1)
			}
		}
		clear(batch) // let the nodes go
		if synced != nil {
			close(synced)
		}
	}
}

// wrote notes that a write put n bytes at off, and queues the page it
// completed, if it did: the page holding off, when off is not at its start
// and the write reaches the page's end.
func (d *pageDropper) wrote(node *Node, off int64, n int) {
	if d == nil || n <= 0 {
		return
	}
	page := off &^ (pageSize - 1)
	if page == off || off+int64(n) < page+pageSize {
		return
	}
	d.mu.Lock()
	if len(d.pending) >= maxPending {
		d.mu.Unlock()
		return
	}
	d.pending = append(d.pending, dropReq{n: node, off: page})
	full := len(d.pending) >= dropBatch
	arm := !full && !d.armed
	if arm {
		d.armed = true
		d.timer.Reset(dropDelay)
	}
	d.mu.Unlock()
	if full {
		d.wake()
	}
}

// sync sends the drops queued so far, and says how many pages were
// dropped since the mount.
func (d *pageDropper) sync() uint64 {
	if d == nil {
		return 0
	}
	c := make(chan struct{})
	select {
	case d.synced <- c:
		<-c
	case <-d.done:
	}
	return d.dropped.Load()
}

// stop ends the goroutine; what is still queued is not sent.
func (d *pageDropper) stop() {
	if d != nil {
		d.stopOnce.Do(func() {
			d.timer.Stop()
			close(d.done)
		})
	}
}
