package verify

import "testing"

func TestSummarize(t *testing.T) {
	progs := []Record{
		{Kind: KindInfo, Info: &GuestInfo{Release: "6.1.0-50-cloud-amd64"}},
		{Kind: KindProgram, Program: &ProgramResult{Program: "a", Mode: ModeRelocated, Accepted: true, Instructions: 10}},
		{Kind: KindProgram, Program: &ProgramResult{Program: "b", Mode: ModeRelocated, Error: "BPF_MOV uses reserved fields", Instructions: 6}},
		{Kind: KindProgram, Program: &ProgramResult{Program: "a", Mode: ModeHostBTF, Accepted: true, Instructions: 12}},
		{Kind: KindProgram, Program: &ProgramResult{Program: "b", Mode: ModeHostBTF, Error: "other"}},
	}
	r := Summarize(&Outcome{Status: StatusComplete, Records: progs})
	if r.Result != ResultRejected || r.Info == nil || len(r.Programs) != 4 {
		t.Fatalf("report %+v", r)
	}
	v := r.Verdicts()
	if a := v["a"]; !a.Accepted || a.Instructions != 12 || a.Error != "" {
		t.Errorf("a: %+v", a)
	}
	if b := v["b"]; b.Accepted || b.Error != "relocated: BPF_MOV uses reserved fields" {
		t.Errorf("b: %+v", b)
	}
	if r := Summarize(&Outcome{Status: StatusComplete, Records: progs[:2]}); r.Result != ResultVerified {
		t.Errorf("all accepted: %s", r.Result)
	}
	for _, c := range []struct {
		out  *Outcome
		want string
	}{
		{&Outcome{Status: StatusTimeout, Reason: "x"}, ResultTimeout},
		{&Outcome{Status: StatusKernelError, Reason: "Kernel panic"}, ResultKernelError},
		{&Outcome{Status: StatusComplete, Records: []Record{{Kind: KindError, Error: "booted 6.12"}}}, ResultRunnerError},
		{&Outcome{Status: StatusComplete, Records: progs[:1]}, ResultRunnerError},
	} {
		if r := Summarize(c.out); r.Result != c.want || r.Reason == "" {
			t.Errorf("%+v: %s %q, want %s", c.out, r.Result, r.Reason, c.want)
		}
	}
}

func TestParseJob(t *testing.T) {
	j, err := ParseJob([]byte(`{"version":1,"nonce":"0123456789abcdef","program":"p"}`))
	if err != nil || len(j.Modes) != 2 || j.LogLines != 20 {
		t.Fatalf("%+v %v", j, err)
	}
	for _, bad := range []string{`{"version":2,"nonce":"0123456789abcdef"}`, `{"version":1,"nonce":"x y"}`,
		`{"version":1,"nonce":"0123456789abcdef","modes":["min-btf"]}`, `nope`} {
		if _, err := ParseJob([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
