package notify

import "testing"

func TestNotifier(t *testing.T) {
	var n Notifier
	a, b := n.Wait(), n.Wait()
	select {
	case <-a:
		t.Fatal("woken before a broadcast")
	default:
	}
	n.Broadcast()
	<-a
	<-b
	c := n.Wait()
	select {
	case <-c:
		t.Fatal("a new waiter saw an old broadcast")
	default:
	}
	n.Broadcast()
	n.Broadcast() // nobody waiting: harmless
	<-c
}
