package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Failover backoff: a server that failed is tried again, before the
// others, only after FailoverBackoffMin, doubling with each further
// failure up to FailoverBackoffMax.
const (
	FailoverBackoffMin = time.Second
	FailoverBackoffMax = 30 * time.Second
)

// servers is the set of replicas a client talks to: it sticks to the one
// that answered last, and moves to the next when it cannot be reached or
// answers 5xx, keeping a failed one aside for a backoff.
type servers struct {
	mu   sync.Mutex
	list []*replica
	cur  int // index of the server in use
}

// replica is one server URL and its health.
type replica struct {
	base      *url.URL
	failures  int       // consecutive failures
	downUntil time.Time // tried only after the others until then
}

// parseServers parses a comma-separated list of server URLs.
func parseServers(list string) (*servers, error) {
	if strings.TrimSpace(list) == "" {
		list = DefaultServer
	}
	s := &servers{}
	seen := map[string]bool{}
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("server URL %q: want http://HOST:PORT or https://HOST", raw)
		}
		if seen[u.String()] {
			continue
		}
		seen[u.String()] = true
		s.list = append(s.list, &replica{base: u})
	}
	if len(s.list) == 0 {
		return nil, fmt.Errorf("server URL %q: no URL", list)
	}
	return s, nil
}

// order returns the servers to try, in order: the one in use, then the
// others in turn, those in backoff last (soonest back first), so that a
// call tries every server once before it fails.
func (s *servers) order() []*replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var up, down []*replica
	for i := range s.list {
		r := s.list[(s.cur+i)%len(s.list)]
		if now.Before(r.downUntil) {
			down = append(down, r)
		} else {
			up = append(up, r)
		}
	}
	for i := 1; i < len(down); i++ { // few servers: insertion sort
		for j := i; j > 0 && down[j].downUntil.Before(down[j-1].downUntil); j-- {
			down[j], down[j-1] = down[j-1], down[j]
		}
	}
	return append(up, down...)
}

// ok records an answer from r: it is healthy, and the one in use.
func (s *servers) ok(r *replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.failures, r.downUntil = 0, time.Time{}
	for i, x := range s.list {
		if x == r {
			s.cur = i
		}
	}
}

// failed records that r could not answer: it is kept aside for a backoff.
func (s *servers) failed(r *replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.failures++
	d := FailoverBackoffMin << min(r.failures-1, 16)
	r.downUntil = time.Now().Add(min(d, FailoverBackoffMax))
	if s.list[s.cur] == r && len(s.list) > 1 {
		s.cur = (s.cur + 1) % len(s.list)
	}
}

// current returns the server in use.
func (s *servers) current() *replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list[s.cur]
}

// shouldFailover reports whether a call that failed with err may go to
// another server: no answer came (connection refused or reset, timed out),
// or the server answered 5xx (it, or its route to the database or blob
// store, is down).
func shouldFailover(err error) bool {
	var te *transportError
	if errors.As(err, &te) {
		return true
	}
	var ae *APIError
	return errors.As(err, &ae) && ae.Status >= 500
}

// rewindable makes a request body sendable again to another server: a
// seekable body is rewound to where it started, a buffer is read through a
// reader over its bytes; any other body can be sent again only if the
// failed attempt read none of it (connection refused before sending).
type rewindable struct {
	body  io.Reader
	seek  io.Seeker
	start int64
	count *countingReader
}

func newRewindable(body io.Reader) (*rewindable, io.Reader) {
	switch b := body.(type) {
	case nil:
		return &rewindable{}, nil
	case *bytes.Buffer:
		r := bytes.NewReader(b.Bytes())
		return &rewindable{body: r, seek: r}, r
	case io.ReadSeeker:
		if pos, err := b.Seek(0, io.SeekCurrent); err == nil {
			return &rewindable{body: b, seek: b, start: pos}, b
		}
	}
	c := &countingReader{r: body}
	return &rewindable{body: c, count: c}, c
}

// rewind readies the body for another attempt; false if it cannot be sent
// again.
func (r *rewindable) rewind() (io.Reader, bool) {
	switch {
	case r.body == nil:
		return nil, true
	case r.seek != nil:
		_, err := r.seek.Seek(r.start, io.SeekStart)
		return r.body, err == nil
	default:
		return r.body, r.count.n == 0
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// failoverError is a call that no server answered: every attempt's error,
// in order. It matches what any of them matches (errors.Is, errors.As).
type failoverError struct {
	errs  []error
	hosts []string
}

func (e *failoverError) Error() string {
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = err.Error()
		var ae *APIError
		if errors.As(err, &ae) {
			parts[i] = e.hosts[i] + ": " + parts[i] // which server answered so
		}
	}
	return "no server answered: " + strings.Join(parts, "; ")
}

func (e *failoverError) Unwrap() []error { return e.errs }
