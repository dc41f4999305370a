// Package cli holds the commands of Archipelago's programs, one file per
// program or subcommand; cmd/<program>/main.go only calls them.
package cli
