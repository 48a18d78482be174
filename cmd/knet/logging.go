package main

import (
	"fmt"
	"log/slog"
	"os"
)

// newLogger is the text logger of knet's long-running commands (daemon, node, agent, ingress),
// at the level KNET_LOG_LEVEL names: debug, info (the default), warn or error. Node processes
// inherit it from `knet up`; debug adds, e.g., the service proxy's per-sync timings.
func newLogger() *slog.Logger {
	var level slog.Level
	if v := os.Getenv("KNET_LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			fmt.Fprintf(os.Stderr, "knet: ignoring KNET_LOG_LEVEL=%q (use debug, info, warn or error)\n", v)
			level = slog.LevelInfo
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
