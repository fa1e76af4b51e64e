package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

// each runs fn on a fresh SQLite and a fresh PostgreSQL database.
func each(t *testing.T, fn func(t *testing.T, db *store.DB)) { storetest.Each(t, fn) }

// TestInitSecretRace starts many replicas at once: exactly one stores its
// secret, and every one reads back that one.
func TestInitSecretRace(t *testing.T) {
	each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n = 8
		var (
			wg      sync.WaitGroup
			stored  [n][]byte
			created [n]bool
			errs    [n]error
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stored[i], created[i], errs[i] = db.InitSecret(ctx, "k", fmt.Appendf(nil, "candidate %d", i))
			}()
		}
		wg.Wait()
		winners := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("replica %d: %v", i, errs[i])
			}
			if created[i] {
				winners++
				if want := fmt.Appendf(nil, "candidate %d", i); !bytes.Equal(stored[i], want) {
					t.Errorf("winner %d read back %q", i, stored[i])
				}
			}
			if !bytes.Equal(stored[i], stored[0]) {
				t.Errorf("replica %d read %q, replica 0 %q", i, stored[i], stored[0])
			}
		}
		if winners != 1 {
			t.Fatalf("%d replicas stored the secret, want 1", winners)
		}
		// Later starts read it too.
		got, created2, err := db.InitSecret(ctx, "k", []byte("late"))
		if err != nil || created2 || !bytes.Equal(got, stored[0]) {
			t.Fatalf("later start: %q %v %v", got, created2, err)
		}
	})
}

func TestInitAdmin(t *testing.T) {
	each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var wg sync.WaitGroup
		const n = 4
		var (
			stored  [n][]byte
			created [n]bool
			errs    [n]error
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stored[i], created[i], errs[i] = db.InitAdmin(ctx, fmt.Appendf(nil, "sealed %d", i), "admin", api.RoleAdmin, fmt.Sprintf("hash %d", i))
			}()
		}
		wg.Wait()
		winner := -1
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("replica %d: %v", i, errs[i])
			}
			if created[i] {
				if winner >= 0 {
					t.Fatalf("replicas %d and %d both created the admin token", winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("no replica created the admin token")
		}
		for i := range n {
			if !bytes.Equal(stored[i], fmt.Appendf(nil, "sealed %d", winner)) {
				t.Errorf("replica %d read %q, want the winner's", i, stored[i])
			}
		}
		// The token row is the winner's.
		tok, err := db.TokenByHash(ctx, fmt.Sprintf("hash %d", winner))
		if err != nil || tok.Name != "admin" || tok.Role != api.RoleAdmin {
			t.Fatalf("admin token row: %+v %v", tok, err)
		}
		ts, err := db.Tokens(ctx)
		if err != nil || len(ts) != 1 {
			t.Fatalf("tokens: %+v %v", ts, err)
		}
	})
}

// A database whose tokens predate the shared admin secret keeps them: no
// second admin token, and no secret.
func TestInitAdminExistingTokens(t *testing.T) {
	each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if _, err := db.CreateToken(ctx, "admin", api.RoleAdmin, "old hash"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.InitAdmin(ctx, []byte("sealed"), "admin", api.RoleAdmin, "new hash"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("InitAdmin over existing tokens: %v, want ErrNotFound", err)
		}
		if _, err := db.TokenByHash(ctx, "new hash"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a second admin token was created: %v", err)
		}
	})
}

func TestLeases(t *testing.T) {
	each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		acquire := func(holder string, ttl time.Duration) bool {
			t.Helper()
			ok, err := db.AcquireLease(ctx, "gc", holder, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if !acquire("a", time.Hour) {
			t.Fatal("a free lease was refused")
		}
		if acquire("b", time.Hour) {
			t.Fatal("b took a lease a holds")
		}
		if !acquire("a", time.Hour) {
			t.Fatal("a could not renew its lease")
		}
		if err := db.ReleaseLease(ctx, "gc", "b"); err != nil {
			t.Fatal(err)
		}
		if acquire("b", time.Hour) {
			t.Fatal("b released a's lease")
		}
		if err := db.ReleaseLease(ctx, "gc", "a"); err != nil {
			t.Fatal(err)
		}
		// Held by b with an expiry already past: anyone may take it.
		if !acquire("b", -time.Second) {
			t.Fatal("b could not take a released lease")
		}
		if !acquire("c", time.Hour) {
			t.Fatal("c could not take an expired lease")
		}
		if acquire("b", time.Hour) {
			t.Fatal("b took c's lease back")
		}
		// Racing for a free lease: exactly one wins.
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			won int
		)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := db.AcquireLease(ctx, "sweeper", fmt.Sprint(i), time.Hour)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					won++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d holders took one lease", won)
		}
	})
}

// TestNotify: a Notify wakes the waiters of its topic, and only those. On
// PostgreSQL the notifier and the waiter are two handles on one database,
// as two processes are: the wake-up crosses through LISTEN/NOTIFY.
func TestNotify(t *testing.T) {
	for _, backend := range storetest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			db, waiter := storetest.Pair(t, backend)
			hosts := waiter.Changed(store.TopicHosts)
			builds := waiter.Changed(store.TopicBuilds)
			start := time.Now()
			db.Notify(ctx, store.TopicBuilds)
			select {
			case <-builds:
				t.Logf("woken after %s", time.Since(start))
			case <-time.After(time.Minute):
				t.Fatal("no wake-up within a minute")
			}
			// Let a stray wake-up of hosts arrive, if one were sent.
			again := waiter.Changed(store.TopicBuilds)
			db.Notify(ctx, store.TopicBuilds)
			<-again
			if isClosed(hosts) {
				t.Fatal("a notification of builds woke a waiter of hosts")
			}
			// A new waiter does not see the old notification.
			if ch := waiter.Changed(store.TopicBuilds); isClosed(ch) {
				t.Fatal("a new waiter saw an old notification")
			}
		})
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestNotifyReconnect: the listening connection dies (the server ended it);
// the listener connects again, wakes every waiter (notifications sent
// meanwhile are lost), and goes on delivering.
func TestNotifyReconnect(t *testing.T) {
	db := storetest.Open(t, "postgres")
	ctx := context.Background()
	woken := db.Changed(store.TopicHosts)
	res, err := db.SQL().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN bpfarm_changes' AND pid <> pg_backend_pid()`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d listening connections ended, want 1", n)
	}
	select {
	case <-woken:
	case <-time.After(time.Minute):
		t.Fatal("no wake-up after the listener reconnected")
	}
	for i := range 3 {
		ch := db.Changed(store.TopicHosts)
		db.Notify(ctx, store.TopicHosts)
		select {
		case <-ch:
		case <-time.After(time.Minute):
			t.Fatalf("notification %d after the reconnect not delivered", i)
		}
	}
}

// BenchmarkNotify measures a wake-up: Notify on one handle until a waiter
// on another is woken (PostgreSQL: NOTIFY through the server to another
// connection's LISTEN, as between two replicas), or in-process (SQLite).
func BenchmarkNotify(b *testing.B) {
	for _, backend := range storetest.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			db, waiter := storetest.Pair(b, backend)
			b.ResetTimer()
			for range b.N {
				ch := waiter.Changed(store.TopicHosts)
				db.Notify(ctx, store.TopicHosts)
				<-ch
			}
		})
	}
}
