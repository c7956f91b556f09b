#!/usr/bin/env bash
# tierfs demo: an unmodified Apache Kafka broker on tierfs.
#
# It mounts a two-tier tierfs under ./.demo (tier "fast": a private 64 MiB
# tmpfs; tier "slow": a plain directory) with the policy engine on
# (migrate_threshold 0.5), starts a single-node KRaft broker whose
# log.dirs is the mount, produces 150,000 records of 1 KiB (acks=all) with
# Kafka's ProducerPerformance so that many 4 MiB segments roll, waits
# until the policy has moved the older segments down to "slow" and fast
# is back under its threshold, shows `tierfs status` and `tierfs ls -r`,
# consumes everything back with ConsumerPerformance and checks the count,
# and tears it all down.
#
# Run it with `make demo`: it installs fuse3/attr (and Java 17 and Maven
# when missing), fetches the pinned Kafka jars from Maven Central into
# .cache/kafka/, and builds bin/tierfs first. It needs root (the fast
# tier is a tmpfs mount; tierfs's control socket lives in /run/tierfs).
# It takes well under a minute on two cores.
#
# However it ends (passed, failed, Ctrl-C, SIGTERM, SIGHUP, even SIGKILL
# of this script) it stops the broker and tierfs and leaves no mount
# behind; the work dir (logs, configuration, the tiers' contents) stays
# for you to look at until `make clean` or the next run.
#
# Environment: DEMO_RECORDS (default 150000) records to produce;
# KAFKA_LIBS the Kafka jars (default .cache/kafka/<pinned version>/libs);
# JAVA the java command; TIERFS the tierfs binary (default bin/tierfs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$ROOT/examples/$(basename "${BASH_SOURCE[0]}")
cd "$ROOT"

TIERFS=${TIERFS:-$ROOT/bin/tierfs}
JAVA=${JAVA:-java}
WORK=$ROOT/.demo
MNT=$WORK/mnt           # the tierfs mount: the broker's log.dirs
FAST=$WORK/fast         # tier "fast": a tmpfs mounted here
SLOW=$WORK/slow         # tier "slow": a plain directory
CONF=$WORK/tierfs.toml
LOG=$WORK/tierfs.log    # the daemon's log
KDIR=$WORK/kafka        # the broker's configuration; the tools' output
KLOG=$WORK/kafka.log    # the broker's log

FAST_MIB=64             # size of the fast tier
THRESHOLD=0.5           # [policy] migrate_threshold
SEGMENT_BYTES=$((4 << 20))
TOPIC=demo
PARTITIONS=2
RECORDS=${DEMO_RECORDS:-150000}
RECORD_SIZE=1024

PID=""      # tierfs  } as the demo proper
BROKER=""   # Kafka   } started them
TOOL_PID="" # the Kafka tool running now

say() { printf '==> %s\n' "$*"; }
die() { printf '==> FAILED: %s\n' "$*" >&2; exit 1; }
indent() { sed 's/^/    /'; }

# is_mounted DIR: is anything (live or stale) mounted on DIR? mountinfo
# escapes spaces as \040; a stale FUSE mount is listed there even though
# stat on it fails.
mountinfo_path() {
	local esc=${1//\\/\\134}
	printf '%s' "${esc// /\\040}"
}
is_mounted() {
	# (ENVIRON, not awk -v, which would decode the backslashes.)
	MP=$(mountinfo_path "$1") awk '$5 == ENVIRON["MP"] { found = 1 } END { exit !found }' /proc/self/mountinfo
}

unmount_mnt() {
	is_mounted "$MNT" || return 0
	fusermount3 -u "$MNT" 2>/dev/null ||
		umount "$MNT" 2>/dev/null ||
		umount -l "$MNT" 2>/dev/null ||
		fusermount3 -uz "$MNT" 2>/dev/null || true
	! is_mounted "$MNT"
}

# unmount_fast: unmount the tmpfs of the fast tier, retrying while a
# dying daemon still holds it, then detaching it lazily.
unmount_fast() {
	for _ in $(seq 50); do
		is_mounted "$FAST" || return 0
		umount "$FAST" 2>/dev/null && return 0
		sleep 0.2
	done
	umount -l "$FAST" 2>/dev/null || true
	! is_mounted "$FAST"
}

# demo_pids KIND: the pids of this demo's processes of one kind, found by
# the arguments that name this work dir's files, so that nothing else is
# ever signalled: tierfs (mounted with $CONF), broker (kafka.Kafka with
# $KDIR's log4j config), tool (a Kafka tool with $KDIR/tools' config),
# main (the demo proper, `demo.sh __main`).
demo_pids() {
	local f pid a h want=() have
	case $1 in
	tierfs) want=(mount --config "$CONF" "$MNT") ;;
	broker) want=(kafka.Kafka "-Dlog4j2.configurationFile=$KDIR/log4j2.properties") ;;
	tool) want=("-Dlog4j2.configurationFile=$KDIR/tools/log4j2.properties") ;;
	main) want=("$SELF" __main) ;;
	esac
	for f in /proc/[0-9]*/cmdline; do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		[ "$pid" != "$$" ] || continue
		have=()
		{ mapfile -d '' -t have <"$f"; } 2>/dev/null || continue
		for a in "${want[@]}"; do
			for h in "${have[@]}"; do
				[ "$h" != "$a" ] || continue 2
			done
			continue 2 # $a is not among its arguments
		done
		echo "$pid"
	done
}

# proc_state PID: its state (R, S, D, Z, ...) or nothing when it is gone.
proc_state() {
	local st
	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 0
	st=${st##*) }
	echo "${st%% *}"
}

# alive PID...: is any of them running?
alive() {
	local p
	for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
	return 1
}

# stop SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL.
# Returns 1 if it had to kill.
stop() {
	local secs=$1
	shift
	[ $# -gt 0 ] && alive "$@" || return 0
	kill -TERM "$@" 2>/dev/null || true
	for _ in $(seq $((secs * 10))); do
		alive "$@" || return 0
		sleep 0.1
	done
	kill -KILL "$@" 2>/dev/null || true
	for _ in $(seq 50); do
		alive "$@" || break
		sleep 0.1
	done
	return 1
}

# shellcheck disable=SC2086 # $pids: lists of pids
# teardown: stop whatever of this demo still runs, in order (the demo
# proper, its tool, the broker, tierfs), and clear the mounts. Quiet when
# there is nothing to do.
teardown() {
	local pids
	pids=$(demo_pids main)
	[ -z "$pids" ] || kill -KILL $pids 2>/dev/null
	pids=$(demo_pids tool)
	[ -z "$pids" ] || kill -KILL $pids 2>/dev/null
	pids=$(demo_pids broker)
	if [ -n "$pids" ]; then
		echo "==> stopping the Kafka broker (pid $pids)" >&2
		stop 60 $pids || echo "==> the broker did not exit 60s after SIGTERM; killed it" >&2
	fi
	pids=$(demo_pids tierfs)
	if [ -n "$pids" ]; then
		echo "==> stopping tierfs (pid $pids); it unmounts itself" >&2
		stop 10 $pids || echo "==> tierfs did not exit 10s after SIGTERM; killed it" >&2
	fi
	if is_mounted "$MNT"; then
		echo "==> clearing the mount on $MNT" >&2
		unmount_mnt || echo "==> could not unmount $MNT; run: fusermount3 -u $MNT || umount -l $MNT" >&2
	fi
	if is_mounted "$FAST"; then
		echo "==> unmounting the fast tier's tmpfs on $FAST" >&2
		unmount_fast || echo "==> could not unmount $FAST; run: umount -l $FAST" >&2
	fi
}

# --- watchdog mode ------------------------------------------------------------
# `demo.sh __watchdog PID` runs in its own session, so a signal to the
# demo's process group does not reach it. When the demo (PID) is gone
# without having cleaned up (kill -9), it tears down what is left. The
# demo's own cleanup ends it first.
if [ "${1:-}" = __watchdog ]; then
	trap '' INT HUP
	trap 'exit 0' TERM
	while kill -0 "$2" 2>/dev/null; do sleep 0.5; done
	teardown >/dev/null 2>&1
	exit 0
fi

# --- the supervisor -----------------------------------------------------------
# `demo.sh` checks the prerequisites, makes a fresh work dir, runs the demo
# proper (`demo.sh __main`, below) as a child, and waits for it. A signal
# (Ctrl-C, SIGTERM, SIGHUP) interrupts that wait at once; the cleanup then
# kills the child and tears down whatever it had started. Signal traps run
# only while bash waits in `wait`, never while it runs the child's many
# command substitutions (bash 5.2 can lose a trap there).
if [ "${1:-}" != __main ]; then
	WDOG=""
	MAIN=""
	STARTED=""
	# shellcheck disable=SC2317 # run by the EXIT trap
	cleanup() {
		local rc=$?
		set +e
		trap - EXIT
		# Signals from here on must not cut the cleanup short (SIGPIPE:
		# our output may go to a pipe that is gone, `make demo | head`).
		trap '' INT TERM HUP PIPE
		[ -n "$STARTED" ] || exit "$rc" # stopped before touching anything
		# No `wait` here: after a trap, bash 5.2 can wait forever for a
		# child it has already reaped. teardown kills the demo proper;
		# disowned, it is not reported as "Killed".
		[ -z "$MAIN" ] || disown "$MAIN" 2>/dev/null
		if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then # failed, not interrupted
			kill -KILL "$MAIN" 2>/dev/null # it stopped already; to be sure
			if [ -s "$KLOG" ] && grep -qE '^\[[^]]*\] (WARN|ERROR|FATAL) ' "$KLOG"; then
				echo "==> the broker's last warnings and errors ($KLOG):" >&2
				grep -E '^\[[^]]*\] (WARN|ERROR|FATAL) ' "$KLOG" | tail -n 10 >&2
			fi
			if [ -s "$LOG" ]; then
				echo "==> the last lines of tierfs's log ($LOG):" >&2
				tail -n 8 "$LOG" >&2
			fi
		fi
		teardown
		if [ -n "$WDOG" ]; then
			kill -TERM "$WDOG" 2>/dev/null
			for _ in $(seq 20); do
				[ "$(proc_state "$WDOG")" != S ] && [ "$(proc_state "$WDOG")" != R ] && break
				sleep 0.1
			done
		fi
		if [ "$rc" -ne 0 ]; then
			echo "==> demo stopped (status $rc); no broker, tierfs or mount left (work dir: $WORK)" >&2
		fi
		exit "$rc"
	}
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	trap 'exit 141' PIPE

	# --- prerequisites ----------------------------------------------------
	[ "$(id -u)" = 0 ] || die "the demo needs root (it mounts a tmpfs and tierfs, whose control socket lives in /run/tierfs): run 'sudo env PATH=\"\$PATH\" make demo'"
	[ -x "$TIERFS" ] || die "$TIERFS not found; run 'make build' (or 'make demo')"
	[ -e /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse?)"
	for c in fusermount3 getfattr setfattr setsid; do
		command -v "$c" >/dev/null 2>&1 || die "$c not found; run 'make deps' (fuse3, attr, util-linux)"
	done
	command -v "$JAVA" >/dev/null 2>&1 || die "java not found; run 'make kafka-jars' (it installs Java 17) or set JAVA"
	jv=$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
	{ [ -n "$jv" ] && [ "$jv" -ge 17 ]; } || die "Kafka 4 needs Java 17 or newer; $JAVA is version ${jv:-unknown}"
	KVER=$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$ROOT/integration/kafka/pom.xml" | head -n 1)
	LIBS=${KAFKA_LIBS:-$ROOT/.cache/kafka/$KVER/libs}
	[[ $RECORDS =~ ^[1-9][0-9]{0,8}$ ]] || die "DEMO_RECORDS must be a positive integer, not '$RECORDS'"
	{ compgen -G "$LIBS/kafka_2.13-*.jar" && compgen -G "$LIBS/kafka-tools-*.jar"; } >/dev/null ||
		die "no Kafka jars in $LIBS; run 'make kafka-jars' (or 'make demo')"

	# --- a fresh work dir ---------------------------------------------------
	if [ -e "$WORK" ]; then
		say "removing the work dir a previous run left in $WORK"
		[ -z "$(demo_pids broker)$(demo_pids tierfs)" ] ||
			die "a broker or tierfs of another demo run still works in $WORK"
		if is_mounted "$MNT"; then
			say "a previous run left a mount on $MNT; unmounting it"
			unmount_mnt || die "$MNT is still mounted; run: fusermount3 -u $MNT || umount -l $MNT"
		fi
		if is_mounted "$FAST"; then
			say "a previous run left a tmpfs on $FAST; unmounting it"
			unmount_fast || die "$FAST is still mounted; run: umount -l $FAST"
		fi
		# --one-file-system: never delete through a mount that might remain.
		rm -rf --one-file-system "$WORK"
	fi
	mkdir -p "$MNT" "$KDIR/tools"
	mkdir -p -m 0700 "$FAST" "$SLOW" # tier directories: root's alone
	STARTED=1
	export KVER LIBS
	bash "$SELF" __main &
	MAIN=$!
	setsid bash "$SELF" __watchdog "$$" </dev/null >/dev/null 2>&1 &
	WDOG=$!
	wait "$MAIN" && rc=0 || rc=$?
	MAIN=""
	exit "$rc"
fi

# --- the demo proper (`demo.sh __main`, run by the supervisor above) -------------
# It stops what it started itself when it gets to the end; when it fails
# (die) or is interrupted, the supervisor's cleanup does.
DEMO_START=$SECONDS

# A free TCP port on 127.0.0.1 from $1 up: nothing accepts a connection.
free_port() {
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
	echo "$p"
}

# --- the tiers --------------------------------------------------------------------
say "tier \"fast\": a private ${FAST_MIB} MiB tmpfs on $FAST; tier \"slow\": the plain directory $SLOW"
mount -t tmpfs -o "size=${FAST_MIB}m,mode=0700,nosuid,nodev" tierfs-fast "$FAST" ||
	die "mount -t tmpfs on $FAST failed"
capacity_line=""
# tierfs keeps each file's inode number in a user xattr, which tmpfs has
# only since Linux 6.6; on an older kernel use a plain directory capped at
# the same size instead.
if ! { touch "$FAST/.probe" && setfattr -n user.tierfs-probe -v 1 "$FAST/.probe"; } 2>/dev/null; then
	say "this kernel's tmpfs has no user xattrs (Linux < 6.6): fast is a plain directory capped at ${FAST_MIB} MiB instead"
	rm -f "$FAST/.probe"
	unmount_fast || die "cannot unmount the tmpfs on $FAST"
	capacity_line="capacity = \"${FAST_MIB}MiB\""
fi
rm -f "$FAST/.probe"

say "writing $CONF"
cat >"$CONF" <<EOF
# Two tiers, fastest first. Here "fast" is a ${FAST_MIB} MiB tmpfs and "slow" a
# plain directory; in production "fast" is NVMe or pmem, "slow" SSD or HDD.
[[tier]]
name = "fast"
type = "nvme"
path = "$FAST"
$capacity_line
[[tier]]
name = "slow"
type = "hdd"
path = "$SLOW"

[policy]
migrate_threshold = $THRESHOLD  # above half full, move the oldest sealed segments down
interval = "1s"           # plan every second (default 5s)
min_age = "2s"            # a file unwritten for 2s counts as sealed (default 30s)
EOF
grep -v '^$' "$CONF" | indent

# --- mount ----------------------------------------------------------------------
say "starting: tierfs mount --config $CONF $MNT (log: $LOG)"
# In a session of its own, so that a Ctrl-C does not reach it: the
# supervisor then stops the broker first, and tierfs after it.
setsid "$TIERFS" mount --config "$CONF" "$MNT" </dev/null >"$LOG" 2>&1 &
PID=$!
mounted=""
for _ in $(seq 200); do # 200 x 0.1s = 20s
	alive "$PID" || die "tierfs exited before the mount came up"
	if is_mounted "$MNT" && "$TIERFS" status "$MNT" >/dev/null 2>&1; then
		mounted=1
		break
	fi
	sleep 0.1
done
[ -n "$mounted" ] || die "$MNT was not mounted within 20s"
say "mounted $MNT (tierfs pid $PID)"

# --- status helpers -----------------------------------------------------------
# read_status sets FAST_USED FAST_CAP SLOW_USED (bytes), POLICY_MOVES
# (moves done: the move ledger's "moved") and PENDING (the policy's jobs
# queued or in flight, each with a "to") from `tierfs status --json`.
read_status() {
	local out
	out=$("$TIERFS" status --json "$MNT" 2>/dev/null | awk '
		function num(s) { gsub(/[^0-9]/, "", s); return s + 0 }
		/"name":/ { t++ }
		/"capacity_bytes":/ { cap[t] = num($2) }
		/"used_bytes":/ { used[t] = num($2) }
		/^    "moved":/ { done = num($2) }
		/^ *"to":/ { pending++ }
		END { if (t) printf "%d %d %d %d %d\n", used[1], cap[1], used[2], done, pending }') || true
	[ -n "$out" ] || return 1
	read -r FAST_USED FAST_CAP SLOW_USED POLICY_MOVES PENDING <<<"$out"
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
status_line() {
	read_status || { echo "    [tierfs] (no answer from tierfs status)"; return 0; }
	printf '    [tierfs] fast %s of %s (%d%%), slow %s; moves done: %d, pending: %d\n' \
		"$(mib "$FAST_USED")" "$(mib "$FAST_CAP")" $((FAST_USED * 100 / (FAST_CAP > 0 ? FAST_CAP : 1))) \
		"$(mib "$SLOW_USED")" "$POLICY_MOVES" "$PENDING"
}

# --- Kafka tools ------------------------------------------------------------------
cat >"$KDIR/tools/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.console.ref = STDERR
EOF
# Small heap, C1 only and the serial collector: the tools are short-lived
# and start faster that way on two cores.
TOOL_JVM=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true
	"-Dlog4j2.configurationFile=$KDIR/tools/log4j2.properties" -cp "$LIBS/*")

# tool NAME SECONDS SHOW CLASS ARGS...: runs a Kafka tool class with its
# output in $KDIR/tools/NAME.{out,err}, at most SECONDS; with SHOW=1 its
# stdout is shown as it comes, and tierfs's usage every 2 seconds.
tool() {
	local name=$1 secs=$2 show=$3 start=$SECONDS shown=0 next=$((SECONDS + 2)) n rc
	shift 3
	"$JAVA" "${TOOL_JVM[@]}" "$@" </dev/null >"$KDIR/tools/$name.out" 2>"$KDIR/tools/$name.err" &
	TOOL_PID=$!
	while kill -0 "$TOOL_PID" 2>/dev/null; do
		if [ $((SECONDS - start)) -ge "$secs" ]; then
			kill -KILL "$TOOL_PID" 2>/dev/null || true
			wait "$TOOL_PID" 2>/dev/null || true
			TOOL_PID=""
			die "$name ($1) did not finish within ${secs}s; see $KDIR/tools/$name.*"
		fi
		if [ "$show" = 1 ]; then
			# Whole lines only.
			if [ -s "$KDIR/tools/$name.out" ] && [ -z "$(tail -c 1 "$KDIR/tools/$name.out")" ]; then
				n=$(wc -l <"$KDIR/tools/$name.out")
				if [ "$n" -gt "$shown" ]; then
					sed -n "$((shown + 1)),${n}p" "$KDIR/tools/$name.out" | indent
					shown=$n
				fi
			fi
			if [ "$SECONDS" -ge "$next" ]; then
				status_line
				next=$((SECONDS + 2))
			fi
		fi
		sleep 0.5
	done
	wait "$TOOL_PID" && rc=0 || rc=$?
	TOOL_PID=""
	if [ "$show" = 1 ] && [ "$(wc -l <"$KDIR/tools/$name.out")" -gt "$shown" ]; then
		tail -n +$((shown + 1)) "$KDIR/tools/$name.out" | indent
	fi
	if [ "$rc" -ne 0 ]; then
		echo "==> $name ($1) exited with status $rc; its last lines:" >&2
		tail -n 20 "$KDIR/tools/$name.err" >&2
		die "$name failed"
	fi
}

# --- the broker ----------------------------------------------------------------
PORT=$(free_port 19092)
CPORT=$(free_port $((PORT + 1)))
while :; do # a Kafka Uuid: 22 characters of URL-safe base64, not starting with '-'
	CLUSTER_ID=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
	[ "${CLUSTER_ID#-}" = "$CLUSTER_ID" ] && break
done
BOOT=127.0.0.1:$PORT
cat >"$KDIR/server.properties" <<EOF
# A single Kafka node in KRaft combined mode (broker and controller),
# written by examples/demo.sh. Its log directory is the tierfs mount.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$MNT
log.segment.bytes=$SEGMENT_BYTES
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
cat >"$KDIR/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = STDOUT
EOF
say "Kafka $KVER broker, KRaft combined mode: log.dirs=$MNT, log.segment.bytes=$SEGMENT_BYTES (4 MiB) ($KDIR/server.properties)"
say "formatting the log dir (kafka.tools.StorageTool format --standalone)"
tool format 120 0 kafka.tools.StorageTool format --cluster-id "$CLUSTER_ID" --config "$KDIR/server.properties" --standalone
indent <"$KDIR/tools/format.out"

say "starting the broker on $BOOT (-Xmx512m; log: $KLOG)"
setsid "$JAVA" -Xmx512m -Xms512m -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
	"-Dlog4j2.configurationFile=$KDIR/log4j2.properties" -cp "$LIBS/*" \
	kafka.Kafka "$KDIR/server.properties" </dev/null >"$KLOG" 2>&1 &
BROKER=$!
start=$SECONDS
until grep -q 'Kafka Server started' "$KLOG" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
	alive "$BROKER" || die "the broker exited before it served; see $KLOG"
	[ $((SECONDS - start)) -lt 120 ] || die "the broker did not serve within 120s; see $KLOG"
	sleep 0.5
done
say "the broker serves (started in $((SECONDS - start))s, pid $BROKER)"

say "creating topic $TOPIC: $PARTITIONS partitions, replication factor 1"
tool create-topic 120 0 org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --create \
	--topic "$TOPIC" --partitions "$PARTITIONS" --replication-factor 1
indent <"$KDIR/tools/create-topic.out"

# --- produce ----------------------------------------------------------------------
MIB_TOTAL=$((RECORDS * RECORD_SIZE >> 20))
say "producing $RECORDS records of $RECORD_SIZE bytes (~$MIB_TOTAL MiB, acks=all) with ProducerPerformance;"
say "the fast tier holds $FAST_MIB MiB: the policy moves sealed segments down whenever it is above ${THRESHOLD}"
start=$SECONDS
status_line
tool produce 420 1 org.apache.kafka.tools.ProducerPerformance --topic "$TOPIC" \
	--num-records "$RECORDS" --record-size "$RECORD_SIZE" --throughput -1 \
	--producer-props "bootstrap.servers=$BOOT" acks=all enable.idempotence=true linger.ms=5 batch.size=65536
if grep -q Exception "$KDIR/tools/produce.out" "$KDIR/tools/produce.err"; then
	grep -h -m 5 Exception "$KDIR/tools/produce.out" "$KDIR/tools/produce.err" >&2
	die "ProducerPerformance reported exceptions"
fi
summary=$(grep -E '^[0-9]+ records sent, ' "$KDIR/tools/produce.out" | tail -n 1)
sent=${summary%% *}
[ "$sent" = "$RECORDS" ] || die "ProducerPerformance sent ${sent:-no} records, want $RECORDS"
PRODUCE_S=$((SECONDS - start))
say "produced and acknowledged: $RECORDS records in ${PRODUCE_S}s"

say "checking the partitions' end offsets (GetOffsetShell --time -1)"
tool offsets 120 0 org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BOOT" --topic "$TOPIC" --time -1
indent <"$KDIR/tools/offsets.out"
end=$(awk -F: '{ s += $3 } END { print s + 0 }' "$KDIR/tools/offsets.out")
[ "$end" = "$RECORDS" ] || die "the end offsets add up to $end, want $RECORDS"

# --- the policy ------------------------------------------------------------------
say "waiting for the policy to bring fast under its threshold (${THRESHOLD} of $FAST_MIB MiB)"
start=$SECONDS
while :; do
	if read_status && [ "$POLICY_MOVES" -gt 0 ] && [ "$PENDING" -eq 0 ] &&
		awk -v u="$FAST_USED" -v c="$FAST_CAP" -v t="$THRESHOLD" 'BEGIN { exit !(u <= t * c) }'; then
		break
	fi
	[ $((SECONDS - start)) -lt 90 ] || { "$TIERFS" status "$MNT" | indent; die "fast is not under its threshold 90s after producing"; }
	[ $(((SECONDS - start) % 5)) -ne 0 ] || status_line
	sleep 1
done
status_line

say "tierfs status $MNT"
"$TIERFS" status "$MNT" | indent

METRICS_URL=$(grep -o '"metrics":"http[^"]*"' "$LOG" | head -1 | cut -d'"' -f4 || true)
say "metrics: ${METRICS_URL:-off} (Prometheus; examples/grafana/tierfs.json is a dashboard on them)"
if [ -n "$METRICS_URL" ] && command -v curl >/dev/null 2>&1; then
	curl -fsS "$METRICS_URL" | grep -E '^tierfs_(tier_used_bytes|tier_demotion_lag_bytes|burst_reserve_(bytes|seconds)|moves_finished_total\{outcome="moved")' | indent || true
fi

P=$MNT/$TOPIC-0
LS=$KDIR/ls-partition.txt
"$TIERFS" ls -r "$P" >"$LS"
lines=$(wc -l <"$LS")
say "tierfs ls -r $P (one of the $PARTITIONS partitions; $((lines - 1)) files, trimmed)"
if [ "$lines" -le 24 ]; then
	indent <"$LS"
else
	head -n 13 "$LS" | indent
	echo "    ... $((lines - 24)) more ..."
	tail -n 11 "$LS" | indent
fi
segs_fast=$(awk '$1 == "fast" && $NF ~ /\.log$/' "$LS" | wc -l)
segs_slow=$(awk '$1 == "slow" && $NF ~ /\.log$/' "$LS" | wc -l)
idx_fast=$(awk '$1 == "fast" && $NF ~ /\.(time)?index$/' "$LS" | wc -l)
idx_slow=$(awk '$1 == "slow" && $NF ~ /\.(time)?index$/' "$LS" | wc -l)
echo "    segments (.log) of $TOPIC-0: $segs_slow on slow, $segs_fast on fast; indexes: $idx_fast on fast, $idx_slow on slow"
[ "$segs_slow" -gt 0 ] || die "no segment of $TOPIC-0 was moved to slow"

first=$P/$(printf '%020d' 0).log
last=$(awk '$NF ~ /\.log$/ { l = $NF } END { print l }' "$LS")
say "getfattr -n user.tierfs.tier: the oldest segment, its index, the newest (active) segment"
getfattr --absolute-names -n user.tierfs.tier "$first" "${first%.log}.index" "$MNT/$last" 2>&1 |
	sed -e "s|$MNT/||" -e '/^$/d' | indent

spilled=$(grep -c 'tier full: file moved on' "$LOG" || true)
say "the moves tierfs logged ($LOG), by reason:"
sed -n 's/.*"reason":"\([^"]*\)".*"message":"moved".*/\1/p' "$LOG" | sort | uniq -c | sort -rn |
	awk '{ n = $1; $1 = ""; printf "    %4d  %s\n", n, substr($0, 2) }'
[ "$spilled" -eq 0 ] ||
	printf '    %4d  ENOSPC spill: a write found fast full and its file moved on to slow\n' "$spilled"
echo "    e.g.:"
sed -n 's/.*"path":"\([^"]*[0-9]\{20\}\.log\)","to":"\([^"]*\)","reason":"\([^"]*\)".*"message":"moved".*/      \1 -> \2 (\3)/p' "$LOG" | awk 'NR <= 3'

# --- consume ----------------------------------------------------------------------
count_promotions() { grep -c '"reason":"promote[^"]*".*"message":"moved"' "$LOG" || true; }
promoted_before=$(count_promotions)
say "consuming all $RECORDS records from the beginning with ConsumerPerformance"
echo "    (segments on slow are read through the mount; the consumer checks every batch's CRC)"
start=$SECONDS
tool consume 300 0 org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BOOT" --topic "$TOPIC" \
	--messages "$RECORDS" --timeout 60000 --group "tierfs-demo-$CLUSTER_ID"
if grep -q Exception "$KDIR/tools/consume.out" "$KDIR/tools/consume.err"; then
	grep -h -m 5 Exception "$KDIR/tools/consume.out" "$KDIR/tools/consume.err" >&2
	die "ConsumerPerformance reported exceptions"
fi
consumed=$(awk -F', *' '
	/^start.time/ { for (i = 1; i <= NF; i++) if ($i == "data.consumed.in.nMsg") col = i; next }
	col { print $col; exit }' "$KDIR/tools/consume.out")
mbs=$(awk -F', *' '
	/^start.time/ { for (i = 1; i <= NF; i++) if ($i == "MB.sec") col = i; next }
	col { print $col; exit }' "$KDIR/tools/consume.out")
[ "$consumed" = "$RECORDS" ] || die "ConsumerPerformance consumed ${consumed:-no} records, want $RECORDS"
say "consumed $consumed of $RECORDS records in $((SECONDS - start))s (${mbs:-?} MB/s): every record is back"
promoted=$(($(count_promotions) - promoted_before))
[ "$promoted" -le 0 ] || echo "    meanwhile the policy moved $promoted files back up to fast (segments being read and the ones after them)"
status_line

# --- teardown ---------------------------------------------------------------------
say "stopping the broker (SIGTERM to pid $BROKER)"
start=$SECONDS
stop 60 "$BROKER" || die "the broker did not exit 60s after SIGTERM; killed it"
wait "$BROKER" 2>/dev/null || true
BROKER=""
grep -q 'shut down completed' "$KLOG" || die "the broker log has no 'shut down completed'"
[ -e "$MNT/.kafka_cleanshutdown" ] || die "no clean-shutdown marker in $MNT"
say "the broker shut down cleanly in $((SECONDS - start))s"

say "stopping tierfs (SIGTERM to pid $PID); it unmounts itself"
kill -TERM "$PID"
for _ in $(seq 300); do alive "$PID" || break; sleep 0.1; done
alive "$PID" && die "tierfs still running 30s after SIGTERM"
wait "$PID" && rc=0 || rc=$?
PID=""
[ "$rc" -eq 0 ] || die "tierfs exited with status $rc after SIGTERM"
is_mounted "$MNT" && die "$MNT is still mounted after tierfs exited"
[ -z "$(ls -A "$MNT")" ] || die "$MNT is not empty after unmounting"
if grep -q '"level":"error"' "$LOG"; then
	grep -m 5 '"level":"error"' "$LOG" | indent >&2
	die "tierfs logged errors"
fi
unmount_fast || die "cannot unmount the tmpfs on $FAST"
say "unmounted $MNT and the fast tier's tmpfs; nothing is left running"
say "demo passed: $RECORDS records produced (acks=all) and consumed back from Kafka on tierfs, older segments on slow; $((SECONDS - DEMO_START))s"
say "logs: $LOG, $KLOG, $KDIR/tools/ ('make clean' removes .demo)"
