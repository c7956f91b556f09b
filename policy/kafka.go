package policy

import (
	"strconv"
	"strings"
)

// Kafka's file names, as the planner reads them. A partition directory
// holds segments "<20-digit base offset>.log", their companions
// ("<base>.index", ".timeindex", ".txnindex", the producer-state
// "<base>.snapshot") and a few checkpoints. Kafka renames files it is
// about to remove or replace: "<name>.deleted" (retention, unlinked a
// minute later), "<name>.cleaned" and "<name>.swap" (the log cleaner), and
// a whole deleted partition directory to "<topic>-<p>.<id>-delete".

// offsetDigits is how many digits Kafka writes in a base offset.
const offsetDigits = 20

// transientSuffixes are the names Kafka gives files on their way out or in.
var transientSuffixes = []string{".deleted", ".cleaned", ".swap"}

// companionExts are the per-segment files that stay on the fastest tier.
var companionExts = []string{".index", ".timeindex", ".txnindex", ".snapshot"}

// baseName is the last element of a "/"-separated path.
func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// parseOffset parses a Kafka base offset: exactly 20 decimal digits.
func parseOffset(s string) (int64, bool) {
	if len(s) != offsetDigits {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil { // beyond int64: not an offset Kafka writes
		return 0, false
	}
	return v, true
}

// ParseSegment reports whether name (a file name, or a path whose last
// element is used) is a Kafka log segment "<20 digits>.log" and returns
// its base offset. "….log.deleted" and other renamed segments are not
// segments.
func ParseSegment(name string) (baseOffset int64, ok bool) {
	name = baseName(name)
	stem, found := strings.CutSuffix(name, ".log")
	if !found {
		return 0, false
	}
	return parseOffset(stem)
}

// IsTransient reports whether name (or a path's last element) ends in one
// of Kafka's transient suffixes: ".deleted", ".cleaned", ".swap". Only the
// final suffix counts: "00000000000000000000.log.deleted" and
// "00000000000000000000.index.swap" are transient,
// "00000000000000000000.deleted.log" is not.
func IsTransient(name string) bool {
	name = baseName(name)
	for _, s := range transientSuffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// IsCompanion reports whether name (or a path's last element) is a Kafka
// segment companion: "<20 digits>" followed by ".index", ".timeindex",
// ".txnindex" or ".snapshot", optionally followed by one transient suffix
// (".deleted", ".cleaned", ".swap"). Other files with those extensions are
// not Kafka's and are not companions.
func IsCompanion(name string) bool {
	name = baseName(name)
	for _, s := range transientSuffixes {
		if t, ok := strings.CutSuffix(name, s); ok {
			name = t
			break
		}
	}
	for _, ext := range companionExts {
		if stem, ok := strings.CutSuffix(name, ext); ok {
			_, ok := parseOffset(stem)
			return ok
		}
	}
	return false
}

// PartitionOf returns the directory part of a "/"-separated path relative
// to the mount root ("orders-3" for "orders-3/00000000000000000000.log"),
// or "" for a file at the root, which is in no partition.
func PartitionOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i]
	}
	return ""
}

// inDeletedPartition reports whether path is inside a partition directory
// Kafka renamed for deletion ("<topic>-<p>.<id>-delete"): the directory is
// about to be removed, so nothing in it is worth moving. A live partition
// directory always ends in "-<partition number>".
func inDeletedPartition(path string) bool {
	dir := PartitionOf(path)
	return dir != "" && strings.HasSuffix(baseName(dir), "-delete")
}
