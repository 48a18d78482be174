package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// pauseCommand is what the pause image runs: sleep until told to stop.
func pauseCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "pause",
		Hidden: true,
		Run: func(*cobra.Command, []string) {
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
			<-c
		},
	}
}
