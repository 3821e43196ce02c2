package agent_test

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/agent"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// library stands in for the token library.
type library struct{ tokens []event.Token }

func (l *library) Tokens() []event.Token { return l.tokens }

func (l *library) HandleEvent(ctx context.Context, ev event.Event) event.Reply {
	var r event.Reply
	for _, t := range l.tokens {
		if !ev.Target.MatchToken(t) {
			continue
		}
		// Re-encipher, finalize or cancel this token's session objects
		// here, within ctx's deadline; report failures with
		// event.ResultFor(t, err).
		r.Tokens = append(r.Tokens, event.TokenResult{Slot: t.Slot, Serial: t.Serial, Result: event.Affected})
	}
	return r
}

func (l *library) Reconcile(ctx context.Context) error {
	// Re-read the operation files and adopt their state.
	return nil
}

func Example() {
	l := paths.FromEnv()
	a, err := agent.New(agent.Options{
		AppSocket: l.AppSocket(),
		OpsDir:    l.MKChangeDir(),
		Handler:   &library{tokens: []event.Token{{Slot: 0, Label: "payroll", Serial: "CCA00001", Type: event.CCA}}},
		Logger:    zerolog.Nop(),
	})
	if err != nil {
		return // invalid options
	}
	_ = a.Start(context.Background()) // returns at once; connects in the background
	defer a.Close()
	// ... the application runs; after a token is added:
	_ = a.UpdateTokens()
}
