// Command hang is an /init that never finishes: it stands for a kernel or
// runner that hangs, in TestHang.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		fmt.Fprintln(f, "bpfarm-test-hang: waiting forever")
	}
	for {
		time.Sleep(time.Hour)
	}
}
