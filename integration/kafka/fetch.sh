#!/usr/bin/env bash
# Fetch the pinned Apache Kafka jars from Maven Central into
# .cache/kafka/<version>/libs (git-ignored), for the integration tests
# (make test-kafka) and the demo. The version is kafka.version in
# integration/kafka/pom.xml, next to this script.
#
# Idempotent: when the libs directory is complete (it holds the .complete
# stamp this script writes last) it does nothing. The jars are copied into
# a temporary directory first and renamed into place, so an interrupted
# run never leaves a half-filled libs directory that looks complete.
#
# Needs Java 17+ and Maven 3 (Debian: apt-get install openjdk-17-jre-headless
# maven). Environment:
#   MVN            the Maven command (default: mvn)
#   MVN_ARGS       extra Maven arguments, e.g. "-o" or "-Dmaven.repo.local=DIR"
#   KAFKA_CACHE    the cache root (default: <repo>/.cache/kafka)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
POM=$HERE/pom.xml
MVN=${MVN:-mvn}
CACHE=${KAFKA_CACHE:-$ROOT/.cache/kafka}

say() { printf '==> kafka-jars: %s\n' "$*"; }
die() { printf '==> kafka-jars: FAILED: %s\n' "$*" >&2; exit 1; }

# The first <kafka.version> in the pom is the pin.
VERSION=$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$POM" | head -n 1)
[ -n "$VERSION" ] || die "no <kafka.version> in $POM"
DEST=$CACHE/$VERSION/libs

# required JAR-GLOB...: are all of these in the directory?
required() {
	local dir=$1 g
	shift
	for g in "$@"; do
		compgen -G "$dir/$g" >/dev/null || { echo "$g"; return 1; }
	done
}
JARS=("kafka_2.13-$VERSION.jar" "kafka-tools-$VERSION.jar" "kafka-clients-$VERSION.jar"
	"log4j-core-*.jar" "log4j-slf4j-impl-*.jar" "slf4j-api-*.jar")

if [ -f "$DEST/.complete" ] && required "$DEST" "${JARS[@]}" >/dev/null; then
	say "Kafka $VERSION jars already in $DEST"
	exit 0
fi

command -v "$MVN" >/dev/null 2>&1 || die "$MVN not found; install Maven (apt-get install maven)"
command -v java >/dev/null 2>&1 || die "java not found; install Java 17+ (apt-get install openjdk-17-jre-headless)"

mkdir -p "$CACHE/$VERSION"
TMP=$(mktemp -d "$CACHE/$VERSION/libs.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

say "fetching Kafka $VERSION (kafka_2.13, kafka-tools, log4j2 binding) from Maven Central"
# Debian's Maven 3.8 prints colour resets even in batch mode: strip them
# (pipefail keeps Maven's exit status).
# shellcheck disable=SC2086 # MVN_ARGS is a list of words on purpose
"$MVN" -B -q -Dstyle.color=never -f "$POM" ${MVN_ARGS:-} \
	dependency:copy-dependencies \
	-DincludeScope=runtime \
	-DoutputDirectory="$TMP" \
	-Dmdep.overWriteReleases=true \
	| sed 's/\x1b\[[0-9;]*m//g' \
	|| die "mvn dependency:copy-dependencies failed (is Maven Central reachable?)"

if missing=$(required "$TMP" "${JARS[@]}"); then :; else
	die "Maven did not produce $missing"
fi
touch "$TMP/.complete"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
say "Kafka $VERSION: $(find "$DEST" -name '*.jar' | wc -l) jars in $DEST"
