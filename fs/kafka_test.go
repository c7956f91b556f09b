package fs

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mustOK(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

// TestKafkaShaped does to a partition directory what a Kafka broker does.
func TestKafkaShaped(t *testing.T) {
	m := mount(t, mountOpt{})
	r := rand.New(rand.NewSource(1))
	part := m.path("orders-0")
	mustOK(t, os.Mkdir(part, 0o755), "mkdir partition")

	// Segment: O_RDWR|O_CREAT, sequential writes at the fd offset, pread.
	segPath := filepath.Join(part, "00000000000000000000.log")
	seg, err := unix.Open(segPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	mustOK(t, err, "create segment")
	defer unix.Close(seg)
	var model []byte
	for i := 0; i < 200; i++ {
		rec := randBytes(r, 100+r.Intn(5000))
		n, err := unix.Write(seg, rec)
		mustOK(t, err, "append")
		if n != len(rec) {
			t.Fatalf("short write %d", n)
		}
		model = append(model, rec...)
	}
	got := make([]byte, len(model))
	n, err := unix.Pread(seg, got, 0)
	mustOK(t, err, "pread")
	if n != len(model) || !bytes.Equal(got, model) {
		t.Fatalf("segment read back %d bytes, differs from what was written (%d)", n, len(model))
	}
	var st unix.Stat_t
	mustOK(t, unix.Fstat(seg, &st), "fstat")
	if st.Size != int64(len(model)) {
		t.Fatalf("fstat size %d, want %d", st.Size, len(model))
	}
	mustOK(t, unix.Fsync(seg), "fsync segment")

	// Index: grown sparse with ftruncate, mapped shared, fd closed,
	// written through the mapping, msync'd.
	idxPath := filepath.Join(part, "00000000000000000000.index")
	idx, err := unix.Open(idxPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	mustOK(t, err, "create index")
	mustOK(t, unix.Ftruncate(idx, 10<<20), "ftruncate index up")
	mp, err := unix.Mmap(idx, 0, 10<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	mustOK(t, err, "mmap index")
	unix.Close(idx)
	entries := randBytes(r, 8*1000)
	copy(mp, entries)
	mustOK(t, unix.Msync(mp, unix.MS_SYNC), "msync")
	// Another descriptor sees the bytes and zeros after them.
	back, err := os.ReadFile(idxPath)
	mustOK(t, err, "read index")
	if len(back) != 10<<20 || !bytes.Equal(back[:len(entries)], entries) || !allZero(back[len(entries):]) {
		t.Fatalf("index content wrong after mmap writes")
	}
	// The backing, too, holds the written entries: they reached the tier.
	bk, err := os.ReadFile(filepath.Join(m.tiers[m.tierOf(t, "orders-0/00000000000000000000.index")], "orders-0/00000000000000000000.index"))
	mustOK(t, err, "read index backing")
	if !bytes.Equal(bk[:len(entries)], entries) {
		t.Fatalf("index backing lacks the mmap-written entries")
	}
	// Trim the index at roll, as Kafka does, through a new fd.
	mustOK(t, unix.Munmap(mp), "munmap")
	mustOK(t, os.Truncate(idxPath, int64(len(entries))), "truncate index down")
	fi, err := os.Stat(idxPath)
	mustOK(t, err, "stat index")
	if fi.Size() != int64(len(entries)) {
		t.Fatalf("index size %d after trim", fi.Size())
	}

	// ftruncate up reads back zeros; down cuts.
	tp := filepath.Join(part, "leader-epoch-checkpoint")
	mustOK(t, os.WriteFile(tp, []byte("0\n1\n0 0\n"), 0o644), "write checkpoint")
	mustOK(t, os.Truncate(tp, 4096), "truncate up")
	b, _ := os.ReadFile(tp)
	if len(b) != 4096 || string(b[:8]) != "0\n1\n0 0\n" || !allZero(b[8:]) {
		t.Fatalf("truncate up: got %q...", b[:16])
	}
	mustOK(t, os.Truncate(tp, 2), "truncate down")
	if b, _ := os.ReadFile(tp); string(b) != "0\n" {
		t.Fatalf("truncate down: got %q", b)
	}

	// Checkpoint: temp + fsync + rename over + directory fsync.
	for i := 0; i < 5; i++ {
		tmp := tp + ".tmp"
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		mustOK(t, err, "create tmp")
		want := []byte("0\n1\n0 " + string(rune('0'+i)) + "\n")
		_, err = f.Write(want)
		mustOK(t, err, "write tmp")
		mustOK(t, f.Sync(), "fsync tmp")
		mustOK(t, f.Close(), "close tmp")
		mustOK(t, os.Rename(tmp, tp), "rename over")
		d, err := os.Open(part)
		mustOK(t, err, "open dir")
		mustOK(t, d.Sync(), "fsync dir")
		d.Close()
		if b, _ := os.ReadFile(tp); !bytes.Equal(b, want) {
			t.Fatalf("checkpoint %d: got %q", i, b)
		}
		if _, err := os.Stat(tmp); !os.IsNotExist(err) {
			t.Fatalf("temp file still there: %v", err)
		}
	}

	// utimensat and chmod.
	when := time.Unix(1700000000, 123456789)
	mustOK(t, os.Chtimes(segPath, when, when), "utimensat")
	mustOK(t, os.Chmod(segPath, 0o600), "chmod")
	fi, err = os.Stat(segPath)
	mustOK(t, err, "stat")
	if !fi.ModTime().Equal(when) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mtime %v mode %v", fi.ModTime(), fi.Mode())
	}

	// Retention: rename the open, mapped segment's index and the segment to
	// .deleted, then unlink; the mapping and fd keep working.
	idx2, err := unix.Open(idxPath, unix.O_RDWR, 0)
	mustOK(t, err, "reopen index")
	mustOK(t, unix.Ftruncate(idx2, 1<<20), "grow index")
	mp2, err := unix.Mmap(idx2, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	mustOK(t, err, "mmap index again")
	unix.Close(idx2)
	mustOK(t, os.Rename(segPath, segPath+".deleted"), "rename segment .deleted")
	mustOK(t, os.Rename(idxPath, idxPath+".deleted"), "rename index .deleted")
	mustOK(t, os.Remove(segPath+".deleted"), "unlink segment")
	mustOK(t, os.Remove(idxPath+".deleted"), "unlink index")
	if _, err := os.Stat(segPath + ".deleted"); !os.IsNotExist(err) {
		t.Fatalf("unlinked name still visible: %v", err)
	}
	ents, _ := os.ReadDir(part)
	for _, e := range ents {
		if e.Name() != "leader-epoch-checkpoint" {
			t.Fatalf("unexpected entry %q after unlink (no silly-rename allowed)", e.Name())
		}
	}
	n, err = unix.Pread(seg, got, 0)
	mustOK(t, err, "pread unlinked segment")
	if !bytes.Equal(got[:n], model) {
		t.Fatalf("unlinked segment reads wrong")
	}
	if !bytes.Equal(mp2[:len(entries)], entries) {
		t.Fatalf("mapping of unlinked index reads wrong")
	}
	copy(mp2[100:], []byte("after unlink"))
	mustOK(t, unix.Msync(mp2, unix.MS_SYNC), "msync after unlink")
	mustOK(t, unix.Fsync(seg), "fsync unlinked segment")
	mustOK(t, unix.Munmap(mp2), "munmap")
	for _, d := range m.tiers {
		if _, err := os.Stat(filepath.Join(d, "orders-0/00000000000000000000.log.deleted")); !os.IsNotExist(err) {
			t.Fatalf("backing of unlinked segment still named on %s", d)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestRenamePartitionAcrossTiers renames a partition directory whose files
// are open and spread over two tiers, as topic deletion does.
func TestRenamePartitionAcrossTiers(t *testing.T) {
	m := mount(t, mountOpt{})
	r := rand.New(rand.NewSource(2))
	mustOK(t, os.Mkdir(m.path("t-0"), 0o755), "mkdir")
	names := []string{"00000000000000000000.log", "00000000000000001000.log", "00000000000000002000.log"}
	data := map[string][]byte{}
	fds := map[string]int{}
	for _, n := range names {
		b := randBytes(r, 300000)
		data[n] = b
		fd, err := unix.Open(m.path("t-0/"+n), unix.O_RDWR|unix.O_CREAT, 0o644)
		mustOK(t, err, "create")
		_, err = unix.Write(fd, b)
		mustOK(t, err, "write")
		fds[n] = fd
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	mustOK(t, m.move(t, "t-0/"+names[0], "slow"), "move seg 0")
	mustOK(t, m.move(t, "t-0/"+names[1], "slow"), "move seg 1")
	if m.tierOf(t, "t-0/"+names[0]) != 1 || m.tierOf(t, "t-0/"+names[2]) != 0 {
		t.Fatalf("segments not spread over tiers")
	}
	var before unix.Stat_t
	mustOK(t, unix.Stat(m.path("t-0/"+names[0]), &before), "stat")
	mustOK(t, os.Rename(m.path("t-0"), m.path("t-0.abc-delete")), "rename partition")
	for i, n := range names {
		p := "t-0.abc-delete/" + n
		b, err := os.ReadFile(m.path(p))
		mustOK(t, err, "read renamed")
		if !bytes.Equal(b, data[n]) {
			t.Fatalf("%s differs after rename", n)
		}
		want := 1
		if i == 2 {
			want = 0
		}
		if got := m.tierOf(t, p); got != want {
			t.Fatalf("%s on tier %d, want %d", p, got, want)
		}
		// The open fds still write to the file under its new name.
		_, err = unix.Pwrite(fds[n], []byte("tail"), int64(len(data[n])))
		mustOK(t, err, "write after rename")
	}
	var after unix.Stat_t
	mustOK(t, unix.Stat(m.path("t-0.abc-delete/"+names[0]), &after), "stat")
	if after.Ino != before.Ino {
		t.Fatalf("inode changed across rename: %d -> %d", before.Ino, after.Ino)
	}
	// A move after the rename finds the file under its new name.
	mustOK(t, m.move(t, "t-0.abc-delete/"+names[2], "slow"), "move after rename")
	for _, d := range m.tiers {
		if _, err := os.Stat(filepath.Join(d, "t-0")); !os.IsNotExist(err) {
			t.Fatalf("old partition directory left on %s", d)
		}
	}
	for _, n := range names {
		b, _ := os.ReadFile(m.path("t-0.abc-delete/" + n))
		if !bytes.Equal(b, append(append([]byte(nil), data[n]...), "tail"...)) {
			t.Fatalf("%s wrong after write through old fd", n)
		}
	}
	mustOK(t, os.RemoveAll(m.path("t-0.abc-delete")), "delete topic")
	ents, err := os.ReadDir(m.mnt)
	mustOK(t, err, "readdir root")
	if len(ents) != 0 {
		t.Fatalf("root not empty: %v", ents)
	}
}

// TestKafkaSmallThings: fsync on a read-only fd, names of 255 bytes,
// fsync of the root directory, statvfs, and an fcntl lock held by another
// process's view (the kernel's).
func TestKafkaSmallThings(t *testing.T) {
	m := mount(t, mountOpt{})
	long := string(bytes.Repeat([]byte("p"), 251)) + ".log"
	mustOK(t, os.WriteFile(m.path(long), []byte("x"), 0o644), "255-byte name")
	if b, err := os.ReadFile(m.path(long)); err != nil || string(b) != "x" {
		t.Fatalf("read 255-byte name: %q %v", b, err)
	}
	if err := os.WriteFile(m.path(long+"x"), nil, 0o644); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Fatalf("256-byte name: %v, want ENAMETOOLONG", err)
	}
	ro, err := unix.Open(m.path(long), unix.O_RDONLY, 0)
	mustOK(t, err, "open read-only")
	mustOK(t, unix.Fsync(ro), "fsync read-only fd")
	mustOK(t, unix.Fdatasync(ro), "fdatasync read-only fd")
	unix.Close(ro)
	root, err := unix.Open(m.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	mustOK(t, err, "open root")
	mustOK(t, unix.Fsync(root), "fsync root directory")
	unix.Close(root)
	var sfs unix.Statfs_t
	mustOK(t, unix.Statfs(m.mnt, &sfs), "statvfs")
	if sfs.Bavail == 0 || sfs.Namelen != 255 {
		t.Fatalf("statvfs: %+v", sfs)
	}
	// .lock: a POSIX lock that a second process cannot take.
	lk, err := os.OpenFile(m.path(".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	mustOK(t, err, "create .lock")
	defer lk.Close()
	mustOK(t, unix.FcntlFlock(lk.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}), "lock")
	var probe unix.Flock_t
	probe.Type = unix.F_WRLCK
	fd2, err := unix.Open(m.path(".lock"), unix.O_RDWR, 0)
	mustOK(t, err, "open .lock again")
	defer unix.Close(fd2)
	// F_OFD_GETLK asks as an open file description of its own, so the
	// process's own POSIX lock shows up as a conflict.
	mustOK(t, unix.FcntlFlock(uintptr(fd2), unix.F_OFD_GETLK, &probe), "getlk")
	if probe.Type != unix.F_WRLCK {
		t.Fatalf("lock not visible to another owner: %+v", probe)
	}
}
