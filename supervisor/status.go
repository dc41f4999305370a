package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// Report is what Status finds, as StatusJSON prints it.
type Report struct {
	Segment SegmentReport `json:"segment"`
	Roles   []RoleReport  `json:"roles"`
	// Others are the peers on the segment that no pidfile names.
	Others []OtherPeer `json:"others"`
	// Supervisor is the view of archipelago run, null if none runs.
	Supervisor *RunState `json:"supervisor"`
	// Problems is why Status fails; empty if every role runs.
	Problems []string `json:"problems"`

	lostMsg string // the lost-segment line of the table, "" if none
}

// SegmentReport is the segment's state.
type SegmentReport struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	Error   string `json:"error,omitempty"` // why it cannot be read, if it exists
	// Of a running segment (zero otherwise):
	SizeBytes     uint64 `json:"size_bytes"`
	Ports         int    `json:"ports"`
	Requests      int    `json:"requests"`
	FreeRequests  int    `json:"free_requests"`
	HeapBytes     uint64 `json:"heap_bytes"`
	HeapUsedBytes uint64 `json:"heap_used_bytes"`
}

// RoleReport is one role: the table's columns, and run's counts.
type RoleReport struct {
	Role      string `json:"role"`
	Type      string `json:"type"`
	PID       int    `json:"pid"` // 0: none
	PortStart int    `json:"port_start"`
	PortEnd   int    `json:"port_end"`
	// State: running, starting, stopped, dead, on a deleted segment, and
	// under archipelago run also restarting and failed.
	State    string `json:"state"`
	InFlight int    `json:"inflight"`
	Queued   int    `json:"queued"`
	// From archipelago run (zero without it).
	Restarts int    `json:"restarts"`
	Crashes  int    `json:"crashes"`
	Failed   bool   `json:"failed"`
	LastExit string `json:"last_exit,omitempty"`
	// Program runs the role: the process of PID's, else the one start
	// would run (its own, or archipelagod for a role of [PEERS] HOSTED).
	Program string `json:"program"`
	// Hosted: Program is archipelagod, which runs other roles too (those
	// with the same PID).
	Hosted bool `json:"hosted"`
}

// OtherPeer is a peer on the segment that no pidfile names.
type OtherPeer struct {
	Role    string `json:"role"` // its --role, "" if none
	Program string `json:"program"`
	PID     int    `json:"pid"`
	State   string `json:"state"`
}

// Status writes the segment's state and a table with one line per role
// (pid, ports, state, requests in flight and queued on its ports), then
// one per peer on the segment that no pidfile names. It returns an error
// listing the problems (peers not running, peers no pidfile names, a
// segment lost under running peers, roles archipelago run gave up on)
// unless there is none. Status takes no lock: it only reads.
func (s *Supervisor) Status(out io.Writer) error {
	rep := s.Report()
	sg := rep.Segment
	switch {
	case sg.Running:
		fmt.Fprintf(out, "segment %s: %d MiB, %d ports, %d/%d requests free, heap %d/%d MiB used\n",
			sg.Name, sg.SizeBytes>>20, sg.Ports, sg.FreeRequests, sg.Requests, sg.HeapUsedBytes>>20, sg.HeapBytes>>20)
	case sg.Error != "":
		fmt.Fprintf(out, "segment %s: not running: %s\n", sg.Name, sg.Error)
	default:
		fmt.Fprintf(out, "segment %s: not running\n", sg.Name)
	}
	if rep.lostMsg != "" {
		fmt.Fprintln(out, rep.lostMsg)
	}
	if sv := rep.Supervisor; sv != nil {
		restarts, failed := 0, []string{}
		for _, r := range sv.Roles {
			restarts += r.Restarts
			if r.State == RunFailed {
				failed = append(failed, r.Role)
			}
		}
		line := fmt.Sprintf("supervised by archipelago run (pid %d, since %s): %d restart(s)", sv.PID, sv.Since.Format("2006-01-02 15:04:05Z07:00"), restarts)
		if len(failed) > 0 {
			line += "; failed: " + strings.Join(failed, ", ")
		}
		fmt.Fprintln(out, line)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tTYPE\tPID\tPORTS\tSTATE\tINFLIGHT\tQUEUED\tPROGRAM")
	for _, r := range rep.Roles {
		pidS := "-"
		if r.PID != 0 {
			pidS = strconv.Itoa(r.PID)
		}
		prog := r.Program
		if r.Hosted && r.PID != 0 {
			prog = fmt.Sprintf("hosted in %s pid %d", r.Program, r.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d..%d\t%s\t%d\t%d\t%s\n", r.Role, r.Type, pidS, r.PortStart, r.PortEnd, r.State, r.InFlight, r.Queued, prog)
	}
	for _, o := range rep.Others {
		role := o.Role
		if role == "" {
			role = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t-\t%s\t-\t-\t%s\n", role, o.Program, o.PID, o.State, o.Program)
	}
	tw.Flush()
	if len(rep.Problems) > 0 {
		return errors.New(strings.Join(rep.Problems, "; "))
	}
	return nil
}

// StatusJSON writes the Report as JSON and fails as Status does.
func (s *Supervisor) StatusJSON(out io.Writer) error {
	rep := s.Report()
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if len(rep.Problems) > 0 {
		return errors.New(strings.Join(rep.Problems, "; "))
	}
	return nil
}

// Report reads the state of the segment, of every role and of
// archipelago run, if one runs.
func (s *Supervisor) Report() *Report {
	x := s.cfg.XSEG
	rep := &Report{Segment: SegmentReport{Name: x.Name}, Roles: []RoleReport{}, Others: []OtherPeer{}, Problems: []string{}}
	seg, err := xseg.Join(x.Name)
	switch {
	case errors.Is(err, errs.ErrNotFound):
	case err != nil:
		rep.Segment.Error = err.Error()
	default:
		defer seg.Close()
		in := seg.Info()
		rep.Segment = SegmentReport{Name: x.Name, Running: true, SizeBytes: in.Size, Ports: in.Ports,
			Requests: in.Requests, FreeRequests: in.FreeRequests, HeapBytes: in.HeapBytes, HeapUsedBytes: in.HeapUsed}
	}
	if lost := s.lostSegment(); len(lost) > 0 {
		rep.lostMsg = fmt.Sprintf("segment %s (%s) was removed or replaced while %s still run on the old one; no new client reaches them: run 'archipelago stop', then 'archipelago start'",
			x.Name, filepath.Join(xseg.ShmDir, x.Name), strings.Join(lost, ", "))
		rep.Problems = append(rep.Problems, "the segment was lost under running peers")
	}
	rep.Supervisor = s.ReadRunState()
	down := 0
	named := map[int]bool{}
	var failed []string
	for i := range s.cfg.Roles {
		r := &s.cfg.Roles[i]
		pi := s.proc(r)
		rr := RoleReport{Role: r.Name, Type: r.Type, PortStart: r.PortStart, PortEnd: r.PortEnd, State: "stopped", Program: programs[r.Type]}
		if r.Hosted {
			rr.Program = config.HostProgram
		}
		if pi.Running() {
			rr.PID = pi.PID
			named[rr.PID] = true
			rr.State = "starting"
			if rr.PID != 0 && mapsDeleted(rr.PID, x.Name) {
				rr.State = "on a deleted segment"
			}
			if p := progOf(rr.PID); p != "" {
				rr.Program = p
			}
		}
		rr.Hosted = rr.Program == config.HostProgram
		if seg != nil {
			owner, alive := seg.Owner(r.PortStart)
			switch {
			case alive && rr.PID != 0 && owner == rr.PID:
				rr.State = "running"
			case owner != 0 && !alive && rr.PID == 0:
				rr.State = "dead"
			}
			for no := r.PortStart; no <= r.PortEnd; no++ {
				if ps, err := seg.PortStat(no); err == nil {
					rr.InFlight += ps.InFlight
					rr.Queued += ps.Queued
				}
			}
		}
		if rs := rep.Supervisor.role(r.Name); rs != nil {
			rr.Restarts, rr.Crashes, rr.LastExit = rs.Restarts, rs.Crashes, rs.LastExit
			if !pi.Running() {
				switch rs.State {
				case RunFailed:
					rr.State, rr.Failed = "failed", true
					failed = append(failed, fmt.Sprintf("%s failed: it crashed more than %d times within %v s (last: %s) and archipelago run no longer restarts it; see %s, then 'archipelago restart %s'",
						r.Name, rep.Supervisor.RestartLimit, rep.Supervisor.RestartWindowSeconds, rs.LastExit, s.cfg.LogFile(r.Name), r.Name))
				case RunRestarting:
					rr.State = "restarting"
				}
			}
		}
		if rr.State != "running" {
			down++
		}
		rep.Roles = append(rep.Roles, rr)
	}
	for _, sp := range segmentPeers(x.Name) {
		if named[sp.pid] {
			continue
		}
		configured := slices.ContainsFunc(sp.roles, func(n string) bool { _, ok := s.cfg.Role(n); return ok })
		state := "extra (not a role of the configuration)"
		switch {
		case sp.deleted:
			state = "orphan on a deleted segment"
		case configured:
			state = "orphan (its pidfile does not name it)"
		}
		rep.Others = append(rep.Others, OtherPeer{Role: sp.role(), Program: sp.prog, PID: sp.pid, State: state})
		if sp.deleted || configured {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s (pid %d) runs with no pidfile naming it", sp.what(), sp.pid))
		}
	}
	rep.Problems = append(rep.Problems, failed...)
	if down > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d of %d peers not running", down, len(s.cfg.Roles)))
	}
	return rep
}
