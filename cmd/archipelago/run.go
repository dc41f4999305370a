package main

import (
	"bytes"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/supervisor"
)

func runCmd() *cobra.Command {
	var o supervisor.RunOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Start every peer and supervise them in the foreground (systemd's ExecStart)",
		Long: `run starts the segment and every role as start does, then stays in the
foreground and supervises them: a peer that dies without 'archipelago stop'
asking for it is restarted after a back-off (100 ms, doubling up to 10 s), and
each death and restart is logged on stdout (role, pid, exit status or signal,
attempt). A role that crashes more than --restart-limit times within
--restart-window is marked failed and left down: 'archipelago status' shows it
and exits non-zero; 'archipelago restart ROLE' tries it again.

Under systemd (Type=notify), run sends READY=1 on $NOTIFY_SOCKET once every
role runs, and STATUS= lines as roles die and come back.

stop, start, restart and status keep working beside run: a role stopped with
'archipelago stop ROLE' stays stopped (run does not restart it), one started
again is supervised again, and when 'archipelago stop' stops every role, run
exits 0.

On SIGTERM or SIGINT run stops every role as 'archipelago stop' does. While
volumes are mapped or NBD clients connected it retries for --stop-wait, then
stops them anyway (as stop -f) and exits 1, saying so. Only one run per
configuration.`,
		Example: `  archipelago run                      # what archipelago.service runs
  archipelago run --restart-limit 3 --restart-window 30s
  NOTIFY_SOCKET=/run/test.sock archipelago run &`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := newSupervisor(cmd)
			if err != nil {
				return err
			}
			// 0 on the command line means none (RunOptions' zero
			// values mean the defaults).
			if o.RestartLimit == 0 {
				o.RestartLimit = -1
			}
			if o.StopWait == 0 {
				o.StopWait = -1
			}
			o.Notifier = supervisor.NotifierFromEnv()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			out := cmd.OutOrStdout()
			if os.Getenv("JOURNAL_STREAM") == "" {
				// Not to the journal, which stamps lines itself.
				out = &stamper{w: out}
			}
			return s.Run(ctx, out, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.RestartLimit, "restart-limit", 5, "restarts of one role within --restart-window at most; the next crash marks it failed (0: never restart)")
	f.DurationVar(&o.RestartWindow, "restart-window", time.Minute, "window over which --restart-limit counts crashes")
	f.DurationVar(&o.StopWait, "stop-wait", 30*time.Second, "on SIGTERM, how long to wait for mapped volumes and NBD clients to go before stopping anyway (0: at once)")
	return cmd
}

// stamper writes each line prefixed with the time.
type stamper struct {
	mu  sync.Mutex
	w   io.Writer
	mid bool // in the middle of a line
}

func (s *stamper) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	var b bytes.Buffer
	for len(p) > 0 {
		if !s.mid {
			b.WriteString(time.Now().UTC().Format("2006-01-02T15:04:05.000Z "))
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			b.Write(p)
			s.mid = true
			break
		}
		b.Write(p[:i+1])
		p = p[i+1:]
		s.mid = false
	}
	if _, err := s.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return n, nil
}
