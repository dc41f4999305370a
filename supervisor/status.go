package supervisor

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// Status writes the segment's state and a table with one line per role
// (pid, ports, state, requests in flight and queued on its ports), then
// one per peer on the segment that no pidfile names. It returns an error
// listing the problems (peers not running, peers no pidfile names, a
// segment lost under running peers) unless there is none. Status takes no
// lock: it only reads.
func (s *Supervisor) Status(out io.Writer) error {
	x := s.cfg.XSEG
	seg, err := xseg.Join(x.Name)
	var problems []string
	switch {
	case errors.Is(err, errs.ErrNotFound):
		fmt.Fprintf(out, "segment %s: not running\n", x.Name)
	case err != nil:
		fmt.Fprintf(out, "segment %s: not running: %v\n", x.Name, err)
	default:
		defer seg.Close()
		in := seg.Info()
		fmt.Fprintf(out, "segment %s: %d MiB, %d ports, %d/%d requests free, heap %d/%d MiB used\n",
			x.Name, in.Size>>20, in.Ports, in.FreeRequests, in.Requests, in.HeapUsed>>20, in.HeapBytes>>20)
	}
	if lost := s.lostSegment(); len(lost) > 0 {
		msg := fmt.Sprintf("segment %s (%s) was removed or replaced while %s still run on the old one; no new client reaches them: run 'archipelago stop', then 'archipelago start'",
			x.Name, filepath.Join(xseg.ShmDir, x.Name), strings.Join(lost, ", "))
		fmt.Fprintln(out, msg)
		problems = append(problems, "the segment was lost under running peers")
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tTYPE\tPID\tPORTS\tSTATE\tINFLIGHT\tQUEUED")
	down := 0
	named := map[int]bool{}
	for i := range s.cfg.Roles {
		r := &s.cfg.Roles[i]
		pi := s.proc(r)
		pid := 0
		state, inflight, queued := "stopped", 0, 0
		if pi.Running() {
			pid = pi.PID
			named[pid] = true
			state = "starting"
			if pid != 0 && mapsDeleted(pid, x.Name) {
				state = "on a deleted segment"
			}
		}
		if seg != nil {
			owner, alive := seg.Owner(r.PortStart)
			switch {
			case alive && pid != 0 && owner == pid:
				state = "running"
			case owner != 0 && !alive && pid == 0:
				state = "dead"
			}
			for no := r.PortStart; no <= r.PortEnd; no++ {
				if ps, err := seg.PortStat(no); err == nil {
					inflight += ps.InFlight
					queued += ps.Queued
				}
			}
		}
		if state != "running" {
			down++
		}
		pidS := "-"
		if pid != 0 {
			pidS = strconv.Itoa(pid)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d..%d\t%s\t%d\t%d\n", r.Name, r.Type, pidS, r.PortStart, r.PortEnd, state, inflight, queued)
	}
	for _, sp := range segmentPeers(x.Name) {
		if named[sp.pid] {
			continue
		}
		_, configured := s.cfg.Role(sp.role)
		state := "extra (not a role of the configuration)"
		switch {
		case sp.deleted:
			state = "orphan on a deleted segment"
		case configured:
			state = "orphan (its pidfile does not name it)"
		}
		role := sp.role
		if role == "" {
			role = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t-\t%s\t-\t-\n", role, sp.prog, sp.pid, state)
		if sp.deleted || configured {
			problems = append(problems, fmt.Sprintf("%s (pid %d) of role %q runs with no pidfile naming it", sp.prog, sp.pid, sp.role))
		}
	}
	tw.Flush()
	if down > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d peers not running", down, len(s.cfg.Roles)))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
