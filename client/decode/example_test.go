package decode_test

import (
	"encoding/binary"
	"fmt"

	"github.com/bpfarm/bpfarm/client/decode"
	"github.com/cilium/ebpf/btf"
)

// A record type as a BPF object's BTF describes it:
// struct event { u32 pid; char comm[8]; }.
func ExampleDecoder() {
	u32 := &btf.Int{Name: "u32", Size: 4}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
	event := &btf.Struct{Name: "event", Size: 12, Members: []btf.Member{
		{Name: "pid", Type: u32, Offset: 0},
		{Name: "comm", Type: &btf.Array{Index: u32, Type: char, Nelems: 8}, Offset: 32},
	}}
	d, err := decode.New(event)
	if err != nil {
		panic(err)
	}

	record := make([]byte, 12)
	binary.NativeEndian.PutUint32(record, 4242)
	copy(record[4:], "bash")

	js, _ := d.AppendJSON(nil, record)
	fmt.Println(string(js))

	v, _ := d.Decode(record)
	comm, _ := v.(decode.Struct).Get("comm")
	fmt.Println(comm)

	t := decode.NewTable(d)
	row, _ := t.AppendRow(nil, record)
	fmt.Print(t.Header(), string(row))
	// Output:
	// {"pid":4242,"comm":"bash"}
	// bash
	// PID        COMM
	// 4242       bash
}

func ExampleAppendHistogram() {
	h := decode.Histogram{Slots: []uint64{0, 3, 10, 5}}
	fmt.Print(string(decode.AppendHistogram(nil, h, "usecs")))
	// Output:
	//      usecs               : count    distribution
	//          0 -> 1          : 0        |                                        |
	//          2 -> 3          : 3        |************                            |
	//          4 -> 7          : 10       |****************************************|
	//          8 -> 15         : 5        |********************                    |
}
