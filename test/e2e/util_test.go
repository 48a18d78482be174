package e2e

import (
	"fmt"
	"os"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
