package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/verbose"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
)

// The EP11 session tool (openCryptoki's pkcsep11_session): the stored
// EP11 sessions of STRICT_MODE and VHSM_MODE tokens, and the card PIN.

func newEP11SessionCommand(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "ep11-session",
		Short: "EP11 sessions of STRICT_MODE / VHSM_MODE tokens: show, logout, vhsmpin",
		Long: `ep11-session manages the EP11 sessions that EP11 tokens with STRICT_MODE or
VHSM_MODE log in on their adapters, one per PKCS#11 user session, and the
card PIN (VHSM PIN) VHSM_MODE needs. Each subcommand asks for the USER PIN of
the slot; the tool logs in no EP11 session of its own.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(newEP11SessionShowCommand(g), newEP11SessionLogoutCommand(g), newEP11SessionVHSMPINCommand(g))
	return c
}

// openSessionTool opens the token library without EP11 session modes and
// logs the USER in on slot.
func (g *globalOptions) openSessionTool(cmd *cobra.Command, slot uint) (*tokenlib.Library, tokenlib.SessionHandle, error) {
	log, err := verbose.Logger(cmd.ErrOrStderr(), g.verbose)
	if err != nil {
		return nil, 0, err
	}
	lib, err := tokenlib.Open(tokenlib.Options{Layout: paths.FromEnv(), ConfigPath: g.config, Logger: log,
		NoAgent: true, NoEP11Sessions: true})
	if err != nil {
		return nil, 0, err
	}
	info, err := lib.GetTokenInfo(tokenlib.SlotID(slot))
	if err != nil {
		lib.Close()
		return nil, 0, err
	}
	if info.TokenType != tokenlib.TokenEP11 {
		lib.Close()
		return nil, 0, fmt.Errorf("slot %d is not an EP11 token: %w", slot, errNotEP11)
	}
	h, err := g.userSession(cmd, lib, slot)
	if err != nil {
		lib.Close()
		return nil, 0, err
	}
	return lib, h, nil
}
