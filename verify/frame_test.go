package verify

import (
	"reflect"
	"strings"
	"testing"
)

func sampleRecords() []Record {
	return []Record{
		{Kind: KindInfo, Info: &GuestInfo{Release: "6.1.0-50-cloud-amd64", BTF: true, UptimeMS: 1450}},
		{Kind: KindProgram, Program: &ProgramResult{Program: "p", Mode: ModeRelocated, Accepted: true, Instructions: 16}},
		{Kind: KindProgram, Program: &ProgramResult{Program: "q", Mode: ModeRelocated, Verifier: true,
			Error: "BPF_MOV uses reserved fields", Log: []string{"0: (bf) r0 = (s8)r1", "BPF_MOV uses reserved fields"}}},
	}
}

func frames(t *testing.T, nonce string, recs []Record) []string {
	t.Helper()
	lines, err := EncodeFrames(nonce, recs)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestFramesRoundTrip(t *testing.T) {
	recs := sampleRecords()
	p := NewParser("00112233445566778899aabb")
	p.Line("[    1.234] random: crng init done\r\n")
	for _, l := range frames(t, "00112233445566778899aabb", recs) {
		p.Line(strings.ReplaceAll(l, "\n", "\r\n")) // a tty's line endings
	}
	got, ok := p.Done()
	if !ok || !p.Begun() || p.Garbled() != 0 {
		t.Fatalf("done %v, begun %v, garbled %d, err %v", ok, p.Begun(), p.Garbled(), p.Err())
	}
	if !reflect.DeepEqual(got, recs) {
		t.Errorf("got %+v, want %+v", got, recs)
	}
}

// A kernel message in the middle of a frame line garbles it; the second
// copy completes the set.
func TestFramesGarbledLineRecovered(t *testing.T) {
	nonce := "0123456789abcdef"
	recs := sampleRecords()
	lines := frames(t, nonce, recs)
	p := NewParser(nonce)
	for i, l := range lines {
		if i == 2 {
			l = l[:40] + "[    2.5] virtio: something\n"
		}
		p.Line(l)
	}
	if _, ok := p.Done(); ok {
		t.Fatal("done with a record missing")
	}
	if p.Garbled() != 1 {
		t.Errorf("garbled %d, want 1", p.Garbled())
	}
	for _, l := range lines {
		p.Line(l)
	}
	got, ok := p.Done()
	if !ok || !reflect.DeepEqual(got, recs) {
		t.Fatalf("second copy: done %v, got %+v", ok, got)
	}
}

// Frames of another job, flipped bits and text that merely looks like a
// frame are never results.
func TestFramesRefuseForeignAndCorrupt(t *testing.T) {
	recs := sampleRecords()
	p := NewParser("aaaaaaaaaaaaaaaa")
	for _, l := range frames(t, "bbbbbbbbbbbbbbbb", recs) {
		p.Line(l)
	}
	for _, l := range frames(t, "aaaaaaaaaaaaaaaa", recs) {
		if strings.HasPrefix(l, markResult) {
			b := []byte(l)
			b[len(b)/2] ^= 0x01
			l = string(b)
		}
		p.Line(l)
	}
	p.Line("BPFARM-RESULT aaaaaaaaaaaaaaaa 0 e30= 00000000")
	p.Line("BPFARM-END aaaaaaaaaaaaaaaa 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 00000000")
	if got, ok := p.Done(); ok {
		t.Fatalf("accepted %+v", got)
	}
	if p.Garbled() < 3 {
		t.Errorf("garbled %d, want at least 3", p.Garbled())
	}
}

// An empty set (a runner that found no program) is complete too.
func TestFramesEmptySet(t *testing.T) {
	p := NewParser("cccccccccccccccc")
	for _, l := range frames(t, "cccccccccccccccc", nil) {
		p.Line(l)
	}
	if got, ok := p.Done(); !ok || len(got) != 0 {
		t.Fatalf("done %v, got %+v", ok, got)
	}
}

func TestComplaint(t *testing.T) {
	log := []string{"0: R1=ctx() R10=fp0", "0: (bf) r0 = (s8)r1", "BPF_MOV uses reserved fields",
		"processed 6 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0", ""}
	if c := Complaint(log); c != "BPF_MOV uses reserved fields" {
		t.Errorf("complaint %q", c)
	}
	if n := ProcessedInsns(log); n != 6 {
		t.Errorf("processed %d", n)
	}
}
