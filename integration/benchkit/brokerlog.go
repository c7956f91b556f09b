package benchkit

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// slowEventRE: KRaft's controller logs at ERROR any event that took over
// a second (its metadata log fsyncs on a slow disk). A measurement, not a
// failure: counted apart.
var slowEventRE = regexp.MustCompile(`Exceptionally slow controller event .* took (\d+) ms`)

// snapshotFlushRE: Kafka's WARN when a producer-state snapshot it was
// about to flush is gone.
var snapshotFlushRE = regexp.MustCompile(`WARN Failed to flush file \S+\.snapshot `)

// dirFlushRE: Kafka's WARN when a partition directory it was about to
// flush is gone: Utils.flushDirIfExists logs it only for
// NoSuchFileException (and without a stack trace).
var dirFlushRE = regexp.MustCompile(`WARN Failed to flush directory \S+ \(org\.apache\.kafka\.common\.utils\.Utils\)`)

// SplitBrokerProblems splits the problem lines of a Kafka broker's log
// (integration.Broker.ProblemLines) into real problems, each with its
// stack trace, and a summary ("" when none) of what is counted apart:
// KRaft's slow controller events (a measurement: its metadata log fsyncs
// on a slow disk) and Kafka's own races with a benchmark's topic
// deletions (an asynchronous flush finding its file, directory or log
// deleted first).
func SplitBrokerProblems(lines []string) (problems []string, slow string) {
	n, worst, real, raced := 0, 0, false, 0
	for i, l := range lines {
		if strings.HasPrefix(l, "    ") { // a stack trace line of the line before
			if real {
				problems = append(problems, l)
			}
			continue
		}
		real = false
		if m := slowEventRE.FindStringSubmatch(l); m != nil {
			n++
			ms, _ := strconv.Atoi(m[1])
			worst = max(worst, ms)
			continue
		}
		if strings.Contains(l, "This is ok if the topic/partition is being deleted") {
			continue // a checkpoint of a topic the benchmark deleted
		}
		if racedDeletion(l, lines[i+1:]) {
			raced++
			continue
		}
		real = true
		problems = append(problems, l)
	}
	if n > 0 {
		slow = fmt.Sprintf("%d slow controller events (KRaft: an event over 1 s), the slowest %d ms", n, worst)
	}
	if raced > 0 {
		if slow != "" {
			slow += "; "
		}
		slow += fmt.Sprintf("%d asynchronous flushes that found their file or log deleted first (Kafka's WARN \"Failed to flush file\" of a producer-state snapshot or \"Failed to flush directory\" of a partition, and ERROR \"The memory mapped buffer for log ... is already closed\" in its flush-log task after a topic deletion)", raced)
	}
	return problems, slow
}

// racedDeletion reports whether line l (rest: the lines after it) is one
// of Kafka's asynchronous flushes that found its log, directory or file
// deleted first by a benchmark's topic deletion or aggressive retention:
//   - the flush-log task, scheduled before the deletion closed the log;
//   - a partition's directory, flushed after a segment's deletion or a
//     checkpoint's rename (seen on the HDD-only broker, xfs, so Kafka's
//     own);
//   - a producer-state snapshot, flushed after a roll and deleted by
//     retention first.
//
// Kafka catches NoSuchFileException in the last two and logs the WARN
// (Utils.flushDirIfExists, Utils.flushFileIfExists).
func racedDeletion(l string, rest []string) bool {
	if strings.Contains(l, "Uncaught exception in scheduled task 'flush-log'") {
		return len(rest) > 0 && strings.Contains(rest[0], "The memory mapped buffer for log of") &&
			strings.Contains(rest[0], "is already closed")
	}
	return dirFlushRE.MatchString(l) || snapshotFlushRE.MatchString(l)
}
