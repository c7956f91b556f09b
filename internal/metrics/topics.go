package metrics

import (
	"strings"
	"sync"

	"github.com/tierfs/tierfs/tiering"
)

// Other is the topic label of files outside any topic's directory (at
// the mount's root) and of the topics past the bound.
const Other = "other"

// Topics counts by Kafka topic: the bytes read from each tier through the
// mount (tiering calls Bucket once per opened file and counts into it
// with atomics) and the bytes each topic holds on each tier (from the
// policy's listings). The number of topics is bounded.
type Topics struct {
	ntiers, max int

	mu      sync.Mutex
	buckets map[string]*tiering.IOBucket // admitted topics, and Other
	sizes   map[string][]int64           // by topic and tier, from the last listing
	listed  bool
}

// NewTopics counts for ntiers tiers and at most max topics of their own.
func NewTopics(ntiers, max int) *Topics {
	return &Topics{ntiers: ntiers, max: max, buckets: map[string]*tiering.IOBucket{Other: tiering.NewIOBucket(ntiers)}}
}

// TopicOf is the topic of a file at comps: its top directory's name
// without Kafka's "-PARTITION" suffix ("orders-3" -> "orders"); Other for
// a file at the root.
func TopicOf(comps []string) string {
	if len(comps) < 2 || comps[0] == "" {
		return Other
	}
	name := comps[0]
	if i := strings.LastIndexByte(name, '-'); i > 0 && i < len(name)-1 && digits(name[i+1:]) {
		name = name[:i]
	}
	return name
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// labelLocked is the label topic counts under: itself while the bound
// allows (once admitted, for good), else Other.
func (t *Topics) labelLocked(topic string) string {
	if _, ok := t.buckets[topic]; ok {
		return topic
	}
	if len(t.buckets)-1 >= t.max {
		return Other
	}
	t.buckets[topic] = tiering.NewIOBucket(t.ntiers)
	return topic
}

// Bucket is tiering.Options.IOBucket: the counters of the topic of the
// file at comps.
func (t *Topics) Bucket(comps []string) *tiering.IOBucket {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buckets[t.labelLocked(TopicOf(comps))]
}

// Observe takes the bytes per topic and tier from a listing of the
// store (a file with several names counts once).
func (t *Topics) Observe(l tiering.Listing) {
	seen := make(map[uint64]bool, len(l.Files))
	t.mu.Lock()
	defer t.mu.Unlock()
	sizes := map[string][]int64{}
	for _, f := range l.Files {
		if seen[f.Ino] || f.Tier < 0 || f.Tier >= t.ntiers {
			continue
		}
		seen[f.Ino] = true
		topic, _, _ := strings.Cut(f.Path, "/")
		if !strings.Contains(f.Path, "/") {
			topic = ""
		}
		label := t.labelLocked(TopicOf([]string{topic, ""}))
		s := sizes[label]
		if s == nil {
			s = make([]int64, t.ntiers)
			sizes[label] = s
		}
		s[f.Tier] += f.Allocated
	}
	t.sizes, t.listed = sizes, true
}

// topicCounts is a scrape's copy of the counters.
type topicCounts struct {
	read   map[string][]int64 // bytes read, by topic and tier
	sizes  map[string][]int64
	listed bool
}

func (t *Topics) snapshot() topicCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := topicCounts{read: make(map[string][]int64, len(t.buckets)), sizes: t.sizes, listed: t.listed}
	for topic, b := range t.buckets {
		r := make([]int64, len(b.ReadBytes))
		for i := range b.ReadBytes {
			r[i] = b.ReadBytes[i].Load()
		}
		c.read[topic] = r
	}
	return c
}
