#!/usr/bin/env bash
# tierfs demo: mounts a two-tier tierfs under ./.demo (a fast "nvme" tier
# capped at 64 MiB and a slow "hdd" tier, both plain directories), writes
# a Kafka-shaped log directory into it (five 20 MiB segments, so that the
# fast tier overflows), shows where each file landed with `tierfs status`,
# `tierfs ls -r` and `getfattr -n user.tierfs.tier`, and unmounts again.
#
# Run it with `make demo` (which installs fuse3/attr and builds bin/tierfs
# first). It needs root: the daemon's control socket lives in /run/tierfs.
# However it ends (done, failed, Ctrl-C, SIGTERM, SIGHUP, even SIGKILL of
# this script) no mount is left on .demo/mnt; the work dir stays for you
# to look at until `make clean` or the next run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$ROOT/examples/$(basename "${BASH_SOURCE[0]}")
cd "$ROOT"

TIERFS=${TIERFS:-$ROOT/bin/tierfs}
WORK=$ROOT/.demo
MNT=$WORK/mnt
LOG=$WORK/tierfs.log
CONF=$WORK/tierfs.toml
PID=""     # the tierfs daemon we started
WDOG=""    # the watchdog that unmounts if this script is killed outright
STAGE=""   # "" (checking), work (work dir made), mount (tierfs started)

SEGMENTS=5 # of SEG_MIB each: more than the fast tier's 64 MiB
SEG_MIB=20

say() { printf '==> %s\n' "$*"; }
die() { printf '==> FAILED: %s\n' "$*" >&2; exit 1; }
indent() { sed 's/^/    /'; }

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

# --- watchdog mode ------------------------------------------------------------
# `demo.sh __watchdog SCRIPT_PID TIERFS_PID` runs in its own session, so a
# signal to the demo's process group does not reach it. When the demo
# script is gone without having cleaned up (kill -9), it stops tierfs and
# clears the mount. The script's own cleanup kills it first.
if [ "${1:-}" = __watchdog ]; then
	script=$2 daemon=$3
	trap '' INT HUP
	trap 'exit 0' TERM
	while kill -0 "$script" 2>/dev/null; do sleep 0.5; done
	if kill -0 "$daemon" 2>/dev/null; then
		kill -TERM "$daemon" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$daemon" 2>/dev/null || true
	fi
	unmount_mnt || true
	rm -rf "$WORK/src"
	exit 0
fi

# daemon_alive: is the tierfs we started still running?
daemon_alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; }

cleanup() {
	local rc=$?
	set +e
	trap - EXIT
	# Signals from here on must not cut the cleanup short (SIGPIPE: our
	# output may go to a pipe that is gone, e.g. `make demo | head`).
	trap '' INT TERM HUP PIPE
	[ -n "$STAGE" ] || exit "$rc" # stopped before touching anything
	if daemon_alive; then
		[ "$rc" -eq 0 ] || echo "==> stopping tierfs (pid $PID)" >&2
		kill -TERM "$PID" 2>/dev/null || true
		for _ in $(seq 100); do daemon_alive || break; sleep 0.1; done
		if daemon_alive; then
			echo "==> tierfs (pid $PID) did not exit 10s after SIGTERM; killing it" >&2
			kill -KILL "$PID" 2>/dev/null || true
		fi
		wait "$PID" 2>/dev/null || true
	fi
	if is_mounted; then
		echo "==> cleaning up the mount on $MNT" >&2
		unmount_mnt || echo "==> could not unmount $MNT; run: fusermount3 -u $MNT || umount -l $MNT" >&2
	fi
	if [ -n "$WDOG" ]; then
		kill -TERM "$WDOG" 2>/dev/null || true
	fi
	# The copies the segments were compared with (100 MiB).
	rm -rf "$WORK/src" 2>/dev/null || true
	if [ "$rc" -ne 0 ] && [ "$STAGE" = mount ] && [ -s "$LOG" ]; then
		echo "==> last lines of $LOG:" >&2
		tail -n 30 "$LOG" >&2
	fi
	if [ "$rc" -ne 0 ]; then
		echo "==> demo stopped (status $rc); no mount left on $MNT" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

# --- prerequisites ------------------------------------------------------------
[ -x "$TIERFS" ] || die "$TIERFS not found; run 'make build' (or 'make demo')"
[ -e /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse?)"
command -v fusermount3 >/dev/null 2>&1 || die "fusermount3 not found; install fuse3 (make deps)"
command -v getfattr >/dev/null 2>&1 || die "getfattr not found; install attr (make deps)"
command -v setsid >/dev/null 2>&1 || die "setsid not found; install util-linux"
if [ "$(id -u)" != 0 ]; then
	# tierfs mount creates its control socket in /run/tierfs, which only
	# root can write on a stock system.
	if ! { [ -d /run/tierfs ] && [ -w /run/tierfs ]; }; then
		die "the demo needs root (tierfs keeps its control socket in /run/tierfs): run 'sudo env PATH=\"\$PATH\" make demo'"
	fi
fi

# --- fresh work dir -------------------------------------------------------------
if [ -e "$WORK" ]; then
	say "removing the work dir a previous run left in $WORK"
	if is_mounted; then
		say "a previous run left a mount on $MNT; unmounting it"
		unmount_mnt || die "$MNT is still mounted; run: fusermount3 -u $MNT || umount -l $MNT"
	fi
	# --one-file-system: never delete through a mount that might remain.
	rm -rf --one-file-system "$WORK"
fi
mkdir -p "$WORK/fast" "$WORK/slow" "$MNT" "$WORK/src"
STAGE=work

say "writing $CONF: tier \"fast\" capped at 64 MiB, tier \"slow\" unlimited"
cat >"$CONF" <<EOF
# Two tiers, fastest first. Both are plain directories for the demo; in
# production "fast" would be on NVMe or pmem and "slow" on SSD or HDD.
[[tier]]
name = "fast"
type = "nvme"
path = "$WORK/fast"
capacity = "64MiB"   # tierfs stores at most this much here

[[tier]]
name = "slow"
type = "hdd"
path = "$WORK/slow"  # no capacity: the backing filesystem's size
EOF
indent <"$CONF"

say "$TIERFS check --config $CONF $MNT"
"$TIERFS" check --config "$CONF" "$MNT" | grep -v '^#' | grep -v '^$' | indent

# --- mount ----------------------------------------------------------------------
say "starting: $TIERFS mount --config $CONF $MNT (log: $LOG)"
# In a session of its own, so that a Ctrl-C reaches only this script,
# which then stops tierfs after the command it was running, instead of
# tierfs unmounting under that command's feet.
STAGE=mount
setsid "$TIERFS" mount --config "$CONF" "$MNT" </dev/null >"$LOG" 2>&1 &
PID=$!
setsid bash "$SELF" __watchdog "$$" "$PID" </dev/null >/dev/null 2>&1 &
WDOG=$!

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

# --- a Kafka-shaped log directory ---------------------------------------------
tier_of() { getfattr --absolute-names --only-values -n user.tierfs.tier "$1"; }

say "writing the broker's own files in the log dir (meta.properties, checkpoints)"
printf 'version=1\nnode.id=1\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n' >"$MNT/meta.properties"
: >"$MNT/.lock"
# Checkpoints are written to a temp file and renamed over the old one.
for cp in recovery-point-offset-checkpoint log-start-offset-checkpoint; do
	printf '0\n1\ndemo-topic 0 0\n' >"$MNT/$cp.tmp"
	mv -f "$MNT/$cp.tmp" "$MNT/$cp"
done

P=$MNT/demo-topic-0
say "writing partition demo-topic-0: $SEGMENTS segments of $SEG_MIB MiB each, more than the fast tier holds"
mkdir "$P"
printf 'version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAA\n' >"$P/partition.metadata"
printf '0\n1\n0 0\n' >"$P/leader-epoch-checkpoint.tmp"
mv -f "$P/leader-epoch-checkpoint.tmp" "$P/leader-epoch-checkpoint"
RECORDS_PER_SEG=20480 # 1 KiB records, so a 20 MiB segment holds 20480
segs=()
for i in $(seq 0 $((SEGMENTS - 1))); do
	base=$(printf '%020d' $((i * RECORDS_PER_SEG)))
	segs+=("$base")
	dd if=/dev/urandom of="$WORK/src/$base.log" bs=1M count="$SEG_MIB" status=none
	# A new segment: its indexes are made sparse at their maximum size
	# (log.index.size.max.bytes, 10 MiB) ...
	truncate -s 10M "$P/$base.index" "$P/$base.timeindex"
	# ... and the log is appended to in 1 MiB writes, then fsynced.
	dd if="$WORK/src/$base.log" of="$P/$base.log" bs=1M conv=fsync status=none
	# At the next roll the indexes are trimmed to what they hold.
	if [ "$i" -lt $((SEGMENTS - 1)) ]; then
		truncate -s 240K "$P/$base.index"
		truncate -s 360K "$P/$base.timeindex"
	fi
	printf '    segment %s.log (%d MiB) is on tier: %s\n' "$base" "$SEG_MIB" "$(tier_of "$P/$base.log")"
done
sync -f "$P/${segs[0]}.log" 2>/dev/null || sync

say "reading every segment back through the mount and comparing it with what was written"
for base in "${segs[@]}"; do
	cmp "$WORK/src/$base.log" "$P/$base.log" || die "segment $base reads back different"
done
rm -rf "$WORK/src"
echo "    all $SEGMENTS segments read back byte for byte"

say "ls -l $P"
ls -l "$P" | indent

say "tierfs status $MNT"
"$TIERFS" status "$MNT" | indent

say "tierfs ls -r $MNT"
"$TIERFS" ls -r "$MNT" | indent

first=$P/${segs[0]}.log
last=$P/${segs[$((SEGMENTS - 1))]}.log
say "getfattr -n user.tierfs.tier on the first segment, the last one and the partition directory"
getfattr --absolute-names -n user.tierfs.tier "$first" "$last" "$P" | indent

[ "$(tier_of "$first")" = fast ] || die "the first segment should be on fast"
[ "$(tier_of "$last")" = slow ] || die "the last segment should have spilled to slow"
on_fast=0 on_slow=0
for base in "${segs[@]}"; do
	case $(tier_of "$P/$base.log") in
	fast) on_fast=$((on_fast + 1)) ;;
	slow) on_slow=$((on_slow + 1)) ;;
	esac
done
say "result: $on_fast segments fit in the fast tier's 64 MiB; $on_slow spilled to slow"
echo "    A segment whose write hit the cap was moved whole, while open, to slow (ENOSPC"
echo "    spill) and the write went on there. Moving older segments down to make room"
echo "    for new ones is the policy engine's job; it is not implemented yet."

say "what tierfs logged about the spills ($LOG):"
grep -F 'tier full' "$LOG" | indent || echo "    (nothing)"

say "where the bytes live on the backing tiers (each tier's .tierfs/ is hidden from the mount):"
(cd "$WORK" && find fast slow -path '*/.tierfs' -prune -o -type f -printf '%-56p %10s bytes\n' | sort) | indent

# --- unmount ----------------------------------------------------------------------
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
say "demo finished OK (work dir: $WORK, log: $LOG; 'make clean' removes them)"
