package objname

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for name, want := range map[string]bool{
		"count_openat": true, "_x": true, ".rodata": true, ".data.foo": true, ".bss": true, "x1": true,
		"": false, ".": false, "..": false, "../../x": false, "a/b": false, "1x": false, "x@cpu0": false,
		"x y": false, "x\n": false, "\x00": false, "é": false, strings.Repeat("a", 256): false, strings.Repeat("a", 255): true,
	} {
		if got := Valid(name); got != want {
			t.Errorf("Valid(%q) = %v, want %v", name, got, want)
		}
	}
	err := CheckAll(map[string]int{"ok": 1}, map[string]int{".rodata": 1, "../../x": 2})
	if err == nil || !strings.Contains(err.Error(), `map name "../../x" is not a C identifier`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("CheckAll: %v", err)
	}
	if err := CheckAll(map[string]int{"a.b": 1}, map[string]int{".rodata": 1}); err != nil {
		t.Fatal(err)
	}
}
