package store

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

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

// notifyChannel is the PostgreSQL channel of wake-ups; a notification's
// payload is its topic.
const notifyChannel = "bpfarm_changes"

// notes is a DB's wake-ups in this process, one broadcast per topic, and
// on PostgreSQL the listener that feeds them from every process.
type notes struct {
	mu     sync.Mutex
	topics map[Topic]*notify.Notifier
	// stop ends the listener; done is closed when it has ended.
	stop context.CancelFunc
	done chan struct{}
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
// sharing the database: on PostgreSQL by NOTIFY (each process's listener
// wakes its own waiters, this one's included), on SQLite (one process) by
// an in-process broadcast. It never fails: when NOTIFY cannot be sent,
// this process's waiters are woken directly, and the others' poll
// intervals stand in for the lost wake-up.
func (d *DB) Notify(ctx context.Context, topic Topic) {
	if d.postgres {
		_, err := d.db.ExecContext(ctx, `SELECT pg_notify(?, ?)`, notifyChannel, string(topic))
		if err == nil {
			return
		}
		d.log().Warn("database notification not sent", "topic", topic, "err", err)
	}
	d.notes.of(topic).Broadcast()
}

// Changed returns a channel closed at the next Notify of topic, by this
// process or another sharing the database.
func (d *DB) Changed(topic Topic) <-chan struct{} {
	return d.notes.of(topic).Wait()
}

// listen starts the PostgreSQL listener and waits until it listens (or
// its first connection failed).
func (d *DB) listen(ctx context.Context) error {
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	d.notes.stop, d.notes.done = stop, make(chan struct{})
	first := make(chan error, 1)
	go func() {
		defer close(d.notes.done)
		d.notes.listen(lctx, d.url, d.log(), first)
	}()
	select {
	case err := <-first:
		if err != nil {
			stop()
			<-d.notes.done
			return fmt.Errorf("listen for database notifications: %w", classify(err))
		}
		return nil
	case <-ctx.Done():
		stop()
		<-d.notes.done
		return ctx.Err()
	}
}

// stopListening ends the listener, if any.
func (d *DB) stopListening() {
	if d.notes.stop != nil {
		d.notes.stop()
		<-d.notes.done
	}
}

// listen keeps a connection of its own LISTENing on notifyChannel and wakes
// the topics it hears, until ctx is done. A lost connection is made again
// (backoff 100 ms doubling to 5 s), and then every topic is woken: what
// was notified meanwhile is lost, so every waiter looks again. The first
// connection's outcome goes to first.
func (n *notes) listen(ctx context.Context, url string, log *slog.Logger, first chan<- error) {
	backoff := 100 * time.Millisecond
	connected := false
	for {
		err := listenOnce(ctx, url, func() {
			if !connected {
				connected = true
				first <- nil
			} else {
				log.Info("database notifications: listening again")
				n.wakeAll()
			}
			backoff = 100 * time.Millisecond
		}, func(t Topic) { n.of(t).Broadcast() })
		if ctx.Err() != nil {
			return
		}
		if !connected {
			first <- err // never listened: Open fails
			return
		}
		log.Warn("database notifications: listening connection lost; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listenOnce connects, LISTENs, calls listening, then hands every
// notification's topic to wake until the connection fails or ctx is done.
func listenOnce(ctx context.Context, url string, listening func(), wake func(Topic)) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	listening()
	for {
		nt, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if t := Topic(nt.Payload); slices.Contains(topics, t) {
			wake(t)
		}
	}
}
