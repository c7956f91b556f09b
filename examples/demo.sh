#!/usr/bin/env bash
# tierfs demo: mounts a two-tier tierfs (fast "nvme" + slow "hdd", both
# plain directories) under ./.demo, writes a Kafka-shaped partition into
# it, shows what tierfs reports, and unmounts again.
#
# Run it with `make demo` (which builds bin/tierfs first). Needs /dev/fuse
# and either root or fusermount3 (Debian package fuse3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TIERFS=${TIERFS:-$ROOT/bin/tierfs}
WORK=$ROOT/.demo
MNT=$WORK/mnt
LOG=$WORK/tierfs.log
CONF=$WORK/tierfs.toml
PID=""

say() { printf '==> %s\n' "$*"; }
die() { printf '==> FAILED: %s\n' "$*" >&2; exit 1; }

# is_mounted: is anything (live or stale) mounted on $MNT? mountinfo
# escapes spaces as \040; a stale mount is listed there even though
# stat on it fails.
mountinfo_path() {
	local esc=${1//\\/\\134}
	printf '%s' "${esc// /\\040}"
}
is_mounted() {
	# (ENVIRON, not awk -v, which would decode the backslashes.)
	MP=$(mountinfo_path "$MNT") awk '$5 == ENVIRON["MP"] { found = 1 } END { exit !found }' /proc/self/mountinfo
}

unmount_mnt() {
	is_mounted || return 0
	fusermount3 -u "$MNT" 2>/dev/null ||
		umount "$MNT" 2>/dev/null ||
		umount -l "$MNT" 2>/dev/null ||
		fusermount3 -uz "$MNT" 2>/dev/null || true
	! is_mounted
}

# daemon_alive: is the tierfs we started still running?
daemon_alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if daemon_alive; then
		kill -TERM "$PID" 2>/dev/null || true
		for _ in $(seq 100); do daemon_alive || break; sleep 0.1; done
		if daemon_alive; then
			echo "==> tierfs (pid $PID) ignored SIGTERM; killing it" >&2
			kill -KILL "$PID" 2>/dev/null || true
		fi
		wait "$PID" 2>/dev/null || true
	fi
	if is_mounted; then
		echo "==> cleaning up the mount on $MNT" >&2
		unmount_mnt || echo "==> could not unmount $MNT; run: fusermount3 -u $MNT || umount -l $MNT" >&2
	fi
	if [ "$rc" -ne 0 ] && [ -s "$LOG" ]; then
		echo "==> last lines of $LOG:" >&2
		tail -n 30 "$LOG" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -x "$TIERFS" ] || die "$TIERFS not found; run 'make build' (or 'make demo')"
[ -e /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse?)"
if [ "$(id -u)" != 0 ] && ! command -v fusermount3 >/dev/null 2>&1; then
	die "fusermount3 not found; install it (apt-get install fuse3) or run as root"
fi

# --- fresh work dir ---------------------------------------------------------
if [ -e "$WORK" ]; then
	say "removing the work dir a previous run left in $WORK"
	if is_mounted; then
		say "a previous run left a mount on $MNT; unmounting it"
		unmount_mnt || die "$MNT is still mounted; run: fusermount3 -u $MNT || umount -l $MNT"
	fi
	# --one-file-system: never delete through a mount that might remain.
	rm -rf --one-file-system "$WORK"
fi
mkdir -p "$WORK/fast" "$WORK/slow" "$MNT"

say "writing $CONF"
cat >"$CONF" <<EOF
# Two tiers, fastest first. Paths are plain directories for the demo.
[[tier]]
name = "fast"
type = "nvme"
path = "$WORK/fast"
capacity = "64MiB"

[[tier]]
name = "slow"
type = "hdd"
path = "$WORK/slow"
EOF
sed 's/^/    /' "$CONF"

# --- mount ------------------------------------------------------------------
say "starting: $TIERFS mount --config $CONF $MNT (log: $LOG)"
"$TIERFS" mount --config "$CONF" "$MNT" >"$LOG" 2>&1 &
PID=$!

say "waiting for $MNT to be mounted"
mounted=""
for _ in $(seq 200); do # 200 x 0.1s = 20s
	if ! daemon_alive; then
		wait "$PID" && rc=0 || rc=$?
		PID=""
		die "tierfs exited (status $rc) before the mount came up"
	fi
	if is_mounted && stat "$MNT" >/dev/null 2>&1; then
		mounted=1
		break
	fi
	sleep 0.1
done
[ -n "$mounted" ] || die "$MNT was not mounted within 20s"
say "mounted: $(MP=$(mountinfo_path "$MNT") awk '$5 == ENVIRON["MP"] { for (i = 7; $i != "-"; i++); print $(i+1), "from", $(i+2) }' /proc/self/mountinfo)"

# --- Kafka-shaped data ------------------------------------------------------
P=$MNT/demo-topic-0
say "writing a Kafka partition: $P"
mkdir "$P"
dd if=/dev/urandom of="$WORK/seg0.bin" bs=1M count=8 status=none
dd if=/dev/urandom of="$WORK/seg1.bin" bs=1M count=3 status=none
# Active-looking first segment, written the way a broker appends.
dd if="$WORK/seg0.bin" of="$P/00000000000000000000.log" bs=1M status=none
# Kafka preallocates index files (log.index.size.max.bytes = 10MiB).
truncate -s 10M "$P/00000000000000000000.index"
truncate -s 10M "$P/00000000000000000000.timeindex"
printf '0\n1\n0 0\n' >"$P/leader-epoch-checkpoint"
printf 'version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAA\n' >"$P/partition.metadata"
# A second (rolled) segment.
dd if="$WORK/seg1.bin" of="$P/00000000000000004096.log" bs=1M status=none
truncate -s 10M "$P/00000000000000004096.index"
truncate -s 10M "$P/00000000000000004096.timeindex"
sync

say "reading the segments back"
cmp "$WORK/seg0.bin" "$P/00000000000000000000.log" || die "segment 0 reads back different"
cmp "$WORK/seg1.bin" "$P/00000000000000004096.log" || die "segment 4096 reads back different"
ls -l "$P"

say "$TIERFS status $MNT"
"$TIERFS" status "$MNT"

say "$TIERFS ls -r $MNT"
"$TIERFS" ls -r "$MNT"

if command -v getfattr >/dev/null 2>&1; then
	say "getfattr -n user.tierfs.tier $P/00000000000000000000.log"
	getfattr -n user.tierfs.tier "$P/00000000000000000000.log" ||
		echo "==> warning: tierfs did not report user.tierfs.tier for the segment" >&2
else
	say "getfattr not installed (apt-get install attr); skipping the xattr check"
fi

say "where the bytes live on the backing tiers:"
(cd "$WORK" && find fast slow -type f -printf '    %-60p %10s bytes\n' | sort)

# --- unmount ----------------------------------------------------------------
say "stopping tierfs (SIGTERM to pid $PID); it unmounts itself"
kill -TERM "$PID"
for _ in $(seq 200); do daemon_alive || break; sleep 0.1; done
daemon_alive && die "tierfs still running 20s after SIGTERM"
wait "$PID" && rc=0 || rc=$?
PID=""
[ "$rc" -eq 0 ] || die "tierfs exited with status $rc after SIGTERM"

if is_mounted; then
	die "$MNT is still mounted after tierfs exited"
fi
if [ -n "$(ls -A "$MNT")" ]; then
	die "$MNT is not empty after unmounting"
fi
say "unmounted cleanly; $MNT is an empty directory again"
say "demo finished OK (work dir: $WORK, log: $LOG)"
