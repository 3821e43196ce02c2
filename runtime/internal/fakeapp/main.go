// Command fakeapp is a tiny stand-in for a process that uses the token
// library, for the runtime integration tests and benchmarks. It runs a real
// runtime agent with a trivial handler, or acts as an admin client.
//
//	fakeapp -socket app.sock [-tokens N | -claims JSON] [-hang | -fail] [-reconcile-log F]
//	fakeapp -socket app.sock -raw [-claims JSON]
//	fakeapp -admin status|broadcast -socket admin.sock
//
// With -raw it is a hostile client: it says hello with the tokens of
// -claims (a JSON list of event.Token, made up or copied from another
// process), prints "welcomed" once the daemon accepted it, and then never
// reads or answers anything until it is killed.
// In agent mode it answers every event with "affected, 1 object" per token
// (with -fail, "failed" per token; with -hang it never answers: the handler
// blocks until the process ends), appends one line per
// Reconcile call to the reconcile log, and runs until killed. In admin mode
// it prints the daemon's answer as JSON, or "class: <class>" and the error
// on stderr with exit status 2.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/runtime/agent"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

type handler struct {
	tokens       []event.Token
	hang, fail   bool
	life         context.Context // the process's lifetime; -hang waits for it
	reconcileLog string
}

func (h *handler) Tokens() []event.Token { return h.tokens }

func (h *handler) HandleEvent(ctx context.Context, ev event.Event) event.Reply {
	if h.hang {
		// Really hung: past the event's deadline, until the process ends.
		<-h.life.Done()
	}
	var r event.Reply
	for _, t := range h.tokens {
		switch {
		case !ev.Target.MatchToken(t):
		case h.fail:
			r.Tokens = append(r.Tokens, event.TokenResult{Slot: t.Slot, Serial: t.Serial, Result: event.Failed,
				Error: "refused by fakeapp -fail", Class: errclass.PermissionDenied})
		default:
			r.Tokens = append(r.Tokens, event.TokenResult{Slot: t.Slot, Serial: t.Serial, Result: event.Affected, Objects: 1})
		}
	}
	return r
}

func (h *handler) Reconcile(context.Context) error {
	if h.reconcileLog == "" {
		return nil
	}
	f, err := os.OpenFile(h.reconcileLog, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "reconcile %d\n", os.Getpid())
	return err
}

func main() {
	socket := flag.String("socket", "", "app socket (agent mode) or admin socket (admin mode)")
	opsDir := flag.String("ops-dir", "", "operations directory to watch")
	ntok := flag.Int("tokens", 1, "number of tokens to announce")
	hang := flag.Bool("hang", false, "never answer events before their deadline")
	rlog := flag.String("reconcile-log", "", "append a line per Reconcile call to this file")
	adm := flag.String("admin", "", "admin mode: status or broadcast")
	evType := flag.String("type", "test.ping", "event type in admin broadcast mode")
	verbose := flag.Bool("v", false, "log to stderr")
	raw := flag.Bool("raw", false, "hostile client: hello, then never read or answer")
	failAll := flag.Bool("fail", false, "answer every event with a failure for every addressed token")
	claims := flag.String("claims", "", "tokens to claim in -raw mode (JSON list of event.Token)")
	flag.Parse()

	log := zerolog.Nop()
	if *verbose {
		log = zerolog.New(os.Stderr).With().Timestamp().Int("pid", os.Getpid()).Logger()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if *adm != "" {
		os.Exit(runAdmin(ctx, *adm, *socket, *evType))
	}
	if *raw {
		os.Exit(runRaw(ctx, *socket, *claims))
	}

	h := &handler{hang: *hang, fail: *failAll, reconcileLog: *rlog, life: ctx}
	if *claims != "" {
		if err := json.Unmarshal([]byte(*claims), &h.tokens); err != nil {
			os.Exit(fail(errclass.New(errclass.InvalidArgument, "-claims: %w", err)))
		}
		*ntok = 0
	}
	for i := range *ntok {
		typ := event.CCA
		if i%2 == 1 {
			typ = event.EP11
		}
		h.tokens = append(h.tokens, event.Token{Slot: uint32(i), Label: fmt.Sprintf("tok%d", i),
			Serial: fmt.Sprintf("%d.%d", os.Getpid(), i), Type: typ})
	}
	a, err := agent.New(agent.Options{AppSocket: *socket, OpsDir: *opsDir, Handler: h, Logger: log,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeapp:", err)
		os.Exit(1)
	}
	if err := a.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fakeapp:", err)
		os.Exit(1)
	}
	<-ctx.Done()
	a.Close()
}

func runAdmin(ctx context.Context, mode, socket, evType string) int {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := admin.Dial(ctx, socket)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	var out any
	switch mode {
	case "status":
		out, err = c.Status(ctx)
	case "broadcast":
		out, err = c.Broadcast(ctx, event.Event{Type: evType})
	default:
		err = errclass.New(errclass.InvalidArgument, "unknown admin mode %q", mode)
	}
	if err != nil {
		return fail(err)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// runRaw connects, claims tokens and then ignores the daemon.
func runRaw(ctx context.Context, socket, claims string) int {
	var tokens []event.Token
	if claims != "" {
		if err := json.Unmarshal([]byte(claims), &tokens); err != nil {
			return fail(errclass.New(errclass.InvalidArgument, "-claims: %w", err))
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	hello := event.Hello{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), Program: "hostile", Tokens: tokens}
	if err := event.WriteMessage(c, event.Wrap(&hello)); err != nil {
		return fail(err)
	}
	m, err := event.ReadMessage(c)
	if err != nil {
		return fail(err)
	}
	if m.Kind != event.KindWelcome {
		return fail(errclass.New(errclass.PermissionDenied, "daemon answered %s", m.Kind))
	}
	fmt.Println("welcomed")
	<-ctx.Done()
	return 0
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "class: %s\nerror: %v\n", errclass.Of(err), err)
	return 2
}
