package observe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfarm/bpfarm/client/decode"
)

// ErrNoType is returned (wrapped) when decoding a record whose type is
// unknown.
var ErrNoType = errors.New("record type unknown")

// PerfBufferSize is the size of each CPU's buffer when reading a perf
// event array.
const PerfBufferSize = 256 * 1024

// Event is one record read from a ring buffer or perf event array, or a
// notice of lost samples.
type Event struct {
	// Map is the map the record came from.
	Map *Map
	// CPU is the CPU a perf event array record was written on (-1 for
	// ring buffers).
	CPU int
	// Raw is the record's bytes. It is valid until the next call of Next.
	Raw []byte
	// Lost, when not zero, says that the kernel dropped this many samples
	// (the perf buffer was full); Raw is then empty.
	Lost uint64
}

// raw returns the record's bytes to decode: a perf record has up to 7
// bytes of padding after the data, which are cut off.
func (e *Event) raw() ([]byte, error) {
	d := e.Map.Record
	if d == nil {
		return nil, fmt.Errorf("%w for map %s: %s", ErrNoType, e.Map.Name, e.Map.RecordNote)
	}
	b := e.Raw
	if e.Map.Type == ebpf.PerfEventArray && len(b) > d.Size() && len(b)-d.Size() < 8 {
		b = b[:d.Size()]
	}
	return b, nil
}

// Value decodes the record into a generic value (see package decode). A
// record whose size disagrees with its type is a *decode.SizeError.
func (e *Event) Value() (any, error) {
	b, err := e.raw()
	if err != nil {
		return nil, err
	}
	return e.Map.Record.Decode(b)
}

// AppendJSON appends the record decoded as JSON.
func (e *Event) AppendJSON(dst []byte) ([]byte, error) {
	if d := e.Map.Record; d != nil && len(e.Raw) == d.Size() {
		return d.AppendJSON(dst, e.Raw) // the common case, without padding
	}
	b, err := e.raw()
	if err != nil {
		return dst, err
	}
	return e.Map.Record.AppendJSON(dst, b)
}

// AppendRow appends the record as a row of t (see decode.NewTable).
func (e *Event) AppendRow(dst []byte, t *decode.Table) ([]byte, error) {
	b, err := e.raw()
	if err != nil {
		return dst, err
	}
	return t.AppendRow(dst, b)
}

// As decodes the record into a T of the caller's choosing, a fixed-size
// Go type laid out like the C type (as encoding/binary reads it, in the
// host's byte order).
func As[T any](e *Event) (T, error) {
	var v T
	b := e.Raw
	if n := binary.Size(v); n >= 0 && e.Map.Type == ebpf.PerfEventArray && len(b) > n && len(b)-n < 8 {
		b = b[:n]
	}
	if n := binary.Size(v); n != len(b) {
		return v, &decode.SizeError{Type: fmt.Sprintf("%T", v), Want: n, Got: len(b)}
	}
	if _, err := binary.Decode(b, binary.NativeEndian, &v); err != nil {
		return v, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}

// source reads one map's records.
type source interface {
	read(ev *Event) error
	close() error
}

type ringSource struct {
	m   *Map
	r   *ringbuf.Reader
	rec ringbuf.Record
}

func (s *ringSource) read(ev *Event) error {
	if err := s.r.ReadInto(&s.rec); err != nil {
		return err
	}
	ev.Map, ev.CPU, ev.Raw, ev.Lost = s.m, -1, s.rec.RawSample, 0 // not a literal's copy: see Next
	return nil
}

func (s *ringSource) close() error { return s.r.Close() }

type perfSource struct {
	m   *Map
	r   *perf.Reader
	rec perf.Record
}

func (s *perfSource) read(ev *Event) error {
	if err := s.r.ReadInto(&s.rec); err != nil {
		return err
	}
	ev.Map, ev.CPU, ev.Raw, ev.Lost = s.m, s.rec.CPU, s.rec.RawSample, s.rec.LostSamples
	return nil
}

func (s *perfSource) close() error { return s.r.Close() }

// Events follows the ring buffers and perf event arrays of a Set.
type Events struct {
	ctx     context.Context
	sources []source
	ring    *ringSource // the only source, when it is a ring buffer
	stop    func() bool
	lost    uint64
	count   uint64

	// One source: read directly. Several: one goroutine each, into ch.
	ch     chan item
	wg     sync.WaitGroup
	cur    Event
	closed atomic.Bool
}

type item struct {
	ev  Event
	err error
}

// Events opens the named ring buffers and perf event arrays of s (all of
// them when names is empty) for reading, until ctx is done or Close. A set
// without any is ErrNoOutputs; a map that is not pinned, ErrNotPinned.
// Reading a perf event array points it at this reader's buffers: one reader
// at a time.
func (s *Set) Events(ctx context.Context, names ...string) (_ *Events, err error) {
	var maps []*Map
	if len(names) == 0 {
		maps = s.Outputs()
		if len(maps) == 0 {
			return nil, fmt.Errorf("%s: %w: nothing to follow (its maps: %s)", s.Name, ErrNoOutputs, listOrNone(mapNames(s.Maps)))
		}
	}
	for _, n := range names {
		m, err := s.Map(n)
		if err != nil {
			return nil, err
		}
		if !m.Output() {
			return nil, fmt.Errorf("%s: map %s is a %s, %w", s.Name, n, m.Type, ErrNoOutputs)
		}
		maps = append(maps, m)
	}

	e := &Events{ctx: ctx}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	for _, m := range maps {
		em, err := m.open(false)
		if err != nil {
			return nil, err
		}
		switch m.Type {
		case ebpf.RingBuf:
			r, err := ringbuf.NewReader(em)
			em.Close()
			if err != nil {
				return nil, fmt.Errorf("map %s: %w", m.Name, err)
			}
			e.sources = append(e.sources, &ringSource{m: m, r: r})
		default:
			r, err := perf.NewReader(em, PerfBufferSize)
			em.Close()
			if err != nil {
				return nil, fmt.Errorf("map %s: %w", m.Name, err)
			}
			e.sources = append(e.sources, &perfSource{m: m, r: r})
		}
	}
	e.stop = context.AfterFunc(ctx, func() { e.closeSources() })
	if rs, ok := e.sources[0].(*ringSource); ok && len(e.sources) == 1 {
		e.ring = rs
	}
	if len(e.sources) > 1 {
		e.ch = make(chan item, 1024)
		for _, src := range e.sources {
			e.wg.Add(1)
			go e.pump(src)
		}
	}
	return e, nil
}

func mapNames(maps []*Map) []string {
	var out []string
	for _, m := range maps {
		out = append(out, m.Name)
	}
	return out
}

// pump reads src into e.ch.
func (e *Events) pump(src source) {
	defer e.wg.Done()
	var ev Event
	for {
		err := src.read(&ev)
		if err != nil {
			select {
			case e.ch <- item{err: err}:
			case <-e.ctx.Done():
			}
			return
		}
		ev.Raw = append([]byte(nil), ev.Raw...)
		select {
		case e.ch <- item{ev: ev}:
		case <-e.ctx.Done():
			return
		}
	}
}

// Next returns the next record (or lost-samples notice), waiting for one.
// It returns ctx's error once ctx is done, and os.ErrClosed after Close.
// The Event is valid until the next call.
func (e *Events) Next() (*Event, error) {
	if rs := e.ring; rs != nil {
		// One ring buffer, the common case: read in place, no lost
		// samples to count.
		if err := rs.r.ReadInto(&rs.rec); err != nil {
			return nil, e.readErr(err)
		}
		// Field by field: a composite literal is built on the stack
		// and copied, and the copy's wide loads of narrow stores stall.
		c := &e.cur
		c.Map, c.CPU, c.Raw, c.Lost = rs.m, -1, rs.rec.RawSample, 0
		e.count++
		return &e.cur, nil
	}
	if e.ch == nil {
		if err := e.sources[0].read(&e.cur); err != nil {
			return nil, e.readErr(err)
		}
	} else {
		var it item
		select {
		case it = <-e.ch:
		case <-e.ctx.Done():
			return nil, e.ctx.Err()
		}
		if it.err != nil {
			return nil, e.readErr(it.err)
		}
		e.cur = it.ev
	}
	if e.cur.Lost > 0 {
		e.lost += e.cur.Lost
	} else {
		e.count++
	}
	return &e.cur, nil
}

// readErr maps a reader's error after the context ended or Close.
func (e *Events) readErr(err error) error {
	if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, perf.ErrClosed) || errors.Is(err, os.ErrClosed) {
		if e.ctx.Err() != nil {
			return e.ctx.Err()
		}
		return os.ErrClosed
	}
	return err
}

// Lost returns the number of samples the kernel reported lost so far. Like
// Next, it is for one goroutine.
func (e *Events) Lost() uint64 { return e.lost }

// Count returns the number of records Next returned so far.
func (e *Events) Count() uint64 { return e.count }

func (e *Events) closeSources() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	for _, s := range e.sources {
		errs = append(errs, s.close())
	}
	return errors.Join(errs...)
}

// Close stops reading. The programs keep running.
func (e *Events) Close() error {
	if e.stop != nil {
		e.stop()
	}
	err := e.closeSources()
	if e.ch != nil {
		// Unblock pumps waiting to send.
		go func() {
			for range e.ch {
			}
		}()
		e.wg.Wait()
		close(e.ch)
	}
	return err
}
