package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ep11sess"
)

type ep11LogoutOptions struct {
	*globalOptions
	slot  uint
	id    string
	pid   int
	dead  bool
	force bool
}

func newEP11SessionLogoutCommand(g *globalOptions) *cobra.Command {
	o := &ep11LogoutOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "logout --slot N (--id ID | --pid PID | --dead) [--force]",
		Short: "Log out stored EP11 sessions and remove them",
		Long: `logout logs out stored EP11 sessions on their APQNs and removes their hidden
objects: one session by id (32 hex digits, as show prints it), every session
of a process (--pid), or every session whose process no longer runs (--dead,
e.g. after a program was killed). A session of a running process is refused
unless --force is given (its session-bound keys stop working). --force also
removes a session object where the logout failed on some APQNs.`,
		Example: `  pkcshsm ep11-session logout --slot 4 --dead
  pkcshsm ep11-session logout --slot 4 --id 3F0C...`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	f := c.Flags()
	f.UintVar(&o.slot, "slot", 0, "slot number")
	f.StringVar(&o.id, "id", "", "session id (32 hex digits)")
	f.IntVar(&o.pid, "pid", 0, "every session of this process")
	f.BoolVar(&o.dead, "dead", false, "every session of a process that no longer runs")
	f.BoolVar(&o.force, "force", false, "also sessions of running processes, and remove objects where the logout failed")
	c.MarkFlagRequired("slot")
	return c
}

func (o *ep11LogoutOptions) selector(cmd *cobra.Command) (ep11sess.Selector, error) {
	fs := cmd.Flags()
	n := 0
	for _, f := range []string{"id", "pid", "dead"} {
		if fs.Changed(f) {
			n++
		}
	}
	if n != 1 {
		return ep11sess.Selector{}, errclass.Newh(errclass.InvalidArgument, "give exactly one of --id ID, --pid PID, --dead",
			"say which sessions to log out")
	}
	switch {
	case fs.Changed("id"):
		id, err := ep11sess.ParsePublicID(o.id)
		if err != nil {
			return ep11sess.Selector{}, err
		}
		return ep11sess.Selector{ID: &id}, nil
	case fs.Changed("pid"):
		if o.pid <= 0 {
			return ep11sess.Selector{}, errclass.Newh(errclass.InvalidArgument, "give a process id from `pkcshsm ep11-session show`",
				"--pid %d is not a process id", o.pid)
		}
		return ep11sess.Selector{PID: o.pid}, nil
	}
	return ep11sess.Selector{Dead: o.dead}, nil
}

func (o *ep11LogoutOptions) run(cmd *cobra.Command, _ []string) error {
	sel, err := o.selector(cmd)
	if err != nil {
		return err
	}
	lib, h, err := o.openSessionTool(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	res, err := lib.EP11Logout(cmd.Context(), h, sel, o.force)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Using slot #%d...\n\n", o.slot)
	done := 0
	var failed []error
	for _, r := range res {
		id := strings.ToUpper(r.Record.ID.String())
		switch {
		case r.Err != nil:
			fmt.Fprintf(w, "%s: not logged out (pid %d)\n", id, r.Record.PID)
			failed = append(failed, r.Err)
		case r.Removed:
			done++
			note := ""
			if len(r.Left) > 0 {
				note = fmt.Sprintf(", removed although the logout failed on %d APQNs (--force)", len(r.Left))
			}
			fmt.Fprintf(w, "%s: logged out (pid %d)%s\n", id, r.Record.PID, note)
		}
	}
	fmt.Fprintf(w, "%d EP11-Sessions logged out\n", done)
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return failed[0]
	}
	return errclass.WithHint(fmt.Errorf("%w (and %d more sessions not logged out)", failed[0], len(failed)-1), errclass.Hint(failed[0]))
}
