package store

import (
	"context"
	"sync"

	"github.com/bpfarm/bpfarm/internal/notify"
)

// Topic names a kind of change. Notify announces one to every process
// sharing the database; Changed waits for the next. Waiters subscribe,
// re-read what they watch, then wait: a wake-up says only "look again".
type Topic string

// Topics.
const (
	// TopicBuildQueued: a build was queued; build workers look for work.
	TopicBuildQueued Topic = "build-queued"
	// TopicArtifactQueued: relocations were queued; relocators look for
	// work.
	TopicArtifactQueued Topic = "artifact-queued"
	// TopicVerifyQueued: artifacts may need verifying (a kernel got an
	// image, an artifact was queued again); verification scanners look.
	TopicVerifyQueued Topic = "verify-queued"
	// TopicBuilds: a build's or a relocation's state changed (build long
	// polls, the UI's live pages, agents' desired state, the verification
	// scanner).
	TopicBuilds Topic = "builds"
	// TopicVerifications: a verification started or finished.
	TopicVerifications Topic = "verifications"
	// TopicHosts: a host, an assignment or a host's trust changed (agents'
	// desired state).
	TopicHosts Topic = "hosts"
)

// topics lists every topic (a listener that lost notifications wakes all).
var topics = []Topic{TopicBuildQueued, TopicArtifactQueued, TopicVerifyQueued, TopicBuilds, TopicVerifications, TopicHosts}

// notes is a DB's wake-ups in this process, one broadcast per topic.
type notes struct {
	mu     sync.Mutex
	topics map[Topic]*notify.Notifier
}

func (n *notes) of(t Topic) *notify.Notifier {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.topics == nil {
		n.topics = map[Topic]*notify.Notifier{}
	}
	b, ok := n.topics[t]
	if !ok {
		b = &notify.Notifier{}
		n.topics[t] = b
	}
	return b
}

// wakeAll wakes every waiter of every topic.
func (n *notes) wakeAll() {
	for _, t := range topics {
		n.of(t).Broadcast()
	}
}

// Notify wakes every waiter on topic, in this process and in every other
// sharing the database. On SQLite (one process) it is an in-process
// broadcast. It never fails: a wake-up that does not arrive costs a
// waiter only its poll interval.
func (d *DB) Notify(ctx context.Context, topic Topic) {
	d.notes.of(topic).Broadcast()
}

// Changed returns a channel closed at the next Notify of topic, by this
// process or another sharing the database.
func (d *DB) Changed(topic Topic) <-chan struct{} {
	return d.notes.of(topic).Wait()
}
