// Command p11load is an application that uses pkcshsm tokens without pause:
// it encrypts, decrypts, signs, verifies and creates session and token keys
// on every slot it is given, and counts every failure. The rotation demo
// and the end-to-end tests run several of them during a master key change
// to prove that applications keep working.
//
// At start it encrypts a fixed text with each of its keys; at the end it
// checks that those ciphertexts still decrypt with every key (so data
// encrypted before a master key change decrypts after it), writes a JSON
// report and exits 1 if anything failed.
//
// The USER PIN is never taken from the command line: when standard input is
// a terminal, p11load asks "Enter the USER PIN: " there with the echo off;
// otherwise it reads the first line of standard input without a prompt
// (printf '12345678\n' | p11load ...). SIGTERM or SIGINT ends the run
// cleanly. The man page is p11load(1).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/cmd/internal/pinentry"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
)

func main() {
	os.Exit(run())
}

// usage is p11load -h.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprint(out, `Usage: p11load -slots N[,M...] [flags]

An application that uses the pkcshsm tokens of the given slots without
pause (encrypt, decrypt, sign, verify, new keys) and counts every failure.

The USER PIN (the same for every slot) is never taken from the command line:
on a terminal p11load asks "Enter the USER PIN: " with the echo off;
otherwise it reads the first line of standard input, without a prompt:
  echo "$PIN" | p11load -slots 2,4 -duration 10s

Exit status: 0 every operation succeeded, 1 an operation failed (see the
report), 2 bad usage or no PIN.

Flags:
`)
	flag.PrintDefaults()
	fmt.Fprintln(out, "\nSee p11load(1).")
}

// readPIN asks for the USER PIN on the terminal (echo off) or reads it from
// the first line of standard input. The caller clears it.
func readPIN() ([]byte, error) {
	// The prompt goes to the terminal only; from a pipe there is none, so
	// a script's output stays what it was.
	r := pinentry.New(os.Stdin, io.Discard)
	return r.PIN("Enter the USER PIN: ")
}

func run() int {
	var (
		slotList = flag.String("slots", "", "comma-separated slot ids to use (required)")
		duration = flag.Duration("duration", 0, "run this long (0: until SIGTERM)")
		report   = flag.String("report", "", "write the JSON report to this file")
		ready    = flag.String("ready", "", "create this file once the keys are set up")
		config   = flag.String("config", "", "pkcshsm.conf (default from PKCSHSM_ROOT)")
		logFile  = flag.String("log", "", "write diagnostics to this file")
		save     = flag.String("save", "", "write the token-key ciphertexts made at start to this file")
		check    = flag.String("check", "", "first decrypt the ciphertexts saved by an earlier -save run")
		newKeys  = flag.Bool("new-keys", true, "make a new session or token key every 25 rounds")
		pause    = flag.Duration("pause", 0, "wait this long after each round (0: none); a lighter load for long test matrices")
	)
	flag.Usage = usage
	flag.Parse()
	if flag.NArg() > 0 || *slotList == "" {
		fmt.Fprintln(os.Stderr, "p11load: error: -slots is required and no other argument is taken")
		fmt.Fprintln(os.Stderr, "hint: p11load -slots N[,M...] [flags]; the USER PIN is asked on the terminal or read from the first line of standard input (see p11load -h)")
		return 2
	}
	var slots []tokenlib.SlotID
	for s := range strings.SplitSeq(*slotList, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err != nil {
			fmt.Fprintf(os.Stderr, "p11load: error: invalid slot %q\n", s)
			return 2
		}
		slots = append(slots, tokenlib.SlotID(n))
	}
	pin, err := readPIN()
	if err != nil {
		fmt.Fprintf(os.Stderr, "p11load: error: no USER PIN: %v\n", err)
		fmt.Fprintln(os.Stderr, `hint: type the USER PIN at the prompt, or give it on the first line of standard input: echo "$PIN" | p11load ...`)
		return 2
	}
	defer clear(pin)
	log := zerolog.Nop()
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "p11load: error: %v\n", err)
			return 2
		}
		defer f.Close()
		log = zerolog.New(f).With().Timestamp().Int("pid", os.Getpid()).Logger()
	}
	lib, err := tokenlib.Open(tokenlib.Options{Layout: paths.FromEnv(), ConfigPath: *config, Logger: log, Program: "p11load"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "p11load: error: failed to open the token library: %v\n", err)
		return 1
	}
	defer lib.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	var workers []*worker
	for _, s := range slots {
		w, err := newWorker(lib, s, pin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "p11load: error: slot %d: %v\n", s, err)
			return 1
		}
		w.newKeys = *newKeys
		workers = append(workers, w)
	}
	if *check != "" {
		if err := checkSaved(lib, *check, workers); err != nil {
			fmt.Fprintf(os.Stderr, "p11load: error: %v\n", err)
			return 1
		}
	}
	if *save != "" {
		if err := saveSamples(*save, workers); err != nil {
			fmt.Fprintf(os.Stderr, "p11load: error: %v\n", err)
			return 1
		}
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "p11load: error: %v\n", err)
			return 1
		}
	}
	// The workers take turns; one goroutine per slot would only contend for
	// the same 2 cores the demo runs on.
	for ctx.Err() == nil {
		for _, w := range workers {
			w.round()
		}
		if *pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(*pause):
			}
		}
	}
	rep := Report{PID: os.Getpid()}
	for _, w := range workers {
		w.verifyAll()
		rep.Slots = append(rep.Slots, w.report())
	}
	for _, s := range rep.Slots {
		rep.Ops += s.Ops
		rep.Failed += s.Failed
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	if *report != "" {
		if err := os.WriteFile(*report, out, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "p11load: error: %v\n", err)
			return 1
		}
	}
	fmt.Printf("p11load %d: %d operations, %d failed\n", rep.PID, rep.Ops, rep.Failed)
	if rep.Failed > 0 {
		for _, s := range rep.Slots {
			for _, e := range s.Errors {
				fmt.Fprintf(os.Stderr, "p11load: slot %d: %s\n", s.Slot, e)
			}
		}
		return 1
	}
	if rep.Ops == 0 {
		fmt.Fprintln(os.Stderr, "p11load: error: no operation ran")
		return 1
	}
	return 0
}
