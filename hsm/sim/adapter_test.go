package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

func setModel(t *testing.T, h *HSM, q apqn.ID, d time.Duration, engines int) {
	t.Helper()
	if err := h.Do(bg, func(tx *Tx) error {
		if err := tx.SetLatency(q, d); err != nil {
			return err
		}
		return tx.SetEngines(q, engines)
	}); err != nil {
		t.Fatal(err)
	}
}

func aesKey(t testing.TB, h *HSM, q apqn.ID) []byte {
	t.Helper()
	k, err := h.GenerateKey(bg, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEnginesQueueAcrossHandles: with 2 engines of 40 ms, 6 requests from
// two handles (each its own mapping of the engine table, as two processes
// have) need at least three rounds; while they run, exactly 2 engines are
// busy. Without an engine limit the same 6 requests are all busy at once.
func TestEnginesQueueAcrossHandles(t *testing.T) {
	h, dir := newSim(t)
	other := openSim(t, dir)
	q := ccaIDs[0]
	key := aesKey(t, h, q)
	const svc = 40 * time.Millisecond
	setModel(t, h, q, svc, 2)

	run := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for i := range 6 {
			wg.Add(1)
			go func(hh *HSM) {
				defer wg.Done()
				_, err := hh.Encrypt(bg, q, key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
				errs <- err
			}([]*HSM{h, other}[i%2])
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(start)
	}
	if d := run(); d < 3*svc {
		t.Fatalf("6 requests on 2 engines of %s took %s, want at least %s (3 rounds)", svc, d, 3*svc)
	}
	// Book 6 more and look at the table: 2 engines busy, never more.
	end := int64(0)
	for range 6 {
		end = max(end, other.eng.reserve(0, 2, int64(svc)))
	}
	if n := h.eng.busy(0, MaxEngines); n != 2 {
		t.Fatalf("%d engines busy after 6 bookings on 2 engines, want 2", n)
	}
	if got, want := time.Duration(end-monotonic()), 2*svc; got < want {
		t.Fatalf("the 6th booking completes in %s, want at least %s (queued behind 2 rounds)", got, want)
	}
	if err := waitUntil(bg, end); err != nil {
		t.Fatal(err)
	}
	// No engine limit: every request is served at once.
	setModel(t, h, q, svc, 0)
	if d := run(); d >= 3*svc {
		t.Logf("unlimited engines took %s (a loaded machine)", d)
	}
	for range 6 {
		h.eng.reserve(0, 0, int64(svc))
	}
	if n := h.eng.busy(0, MaxEngines); n != 0 {
		t.Fatalf("unlimited engines booked %d slots of the table", n)
	}
}

// TestWaitUntil: never returns before its time, and a context bounds it.
func TestWaitUntil(t *testing.T) {
	for _, d := range []time.Duration{0, 30 * time.Microsecond, 150 * time.Microsecond, 3 * time.Millisecond} {
		end := monotonic() + int64(d)
		if err := waitUntil(bg, end); err != nil {
			t.Fatal(err)
		}
		if now := monotonic(); now < end {
			t.Fatalf("waitUntil(%s) returned %s early", d, time.Duration(end-now))
		}
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Millisecond)
	defer cancel()
	if err := waitUntil(ctx, monotonic()+int64(time.Hour)); errclass.Of(err) != errclass.DeadlineExceeded {
		t.Fatalf("waitUntil with a deadline: %v", err)
	}
}

// TestOperationsHoldNoStateLock: while another holder keeps the state
// lock (as a stopped officer or login would), operations — with the
// adapter model on — still complete.
func TestOperationsHoldNoStateLock(t *testing.T) {
	h, dir := newSim(t)
	q, e := ccaIDs[0], ep11IDs[0]
	key := aesKey(t, h, q)
	ekey := aesKey(t, h, e)
	setModel(t, h, q, time.Millisecond, 2)
	lk := flock.New(filepath.Join(dir, lockName))
	if err := lk.Lock(); err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := h.Encrypt(ctx, q, key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil {
			t.Fatalf("operation %d under a held state lock: %v", i, err)
		}
		if _, err := h.Encrypt(ctx, e, ekey, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil {
			t.Fatalf("EP11 operation %d under a held state lock: %v", i, err)
		}
	}
	if _, err := h.GenerateKey(ctx, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}); err != nil {
		t.Fatalf("key generation under a held state lock: %v", err)
	}
}

// TestStoppedProcessHoldsNoEngine: a process stopped (SIGSTOP) while its
// requests queue on a 1-engine APQN cannot make another process wait
// longer than the one service time it booked.
func TestStoppedProcessHoldsNoEngine(t *testing.T) {
	if dir := os.Getenv("PKCSHSM_SIM_HOG_DIR"); dir != "" {
		hogEngine(dir)
		return
	}
	h, dir := newSim(t)
	q := ccaIDs[0]
	setModel(t, h, q, 50*time.Millisecond, 1)
	key := aesKey(t, h, q)
	cmd := exec.Command(os.Args[0], "-test.run=^TestStoppedProcessHoldsNoEngine$")
	cmd.Env = append(os.Environ(), "PKCSHSM_SIM_HOG_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "busy" {
		t.Fatalf("hog did not start: %q %v", sc.Text(), sc.Err())
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Signal(syscall.SIGCONT)
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	for i := range 5 {
		if _, err := h.Encrypt(ctx, q, key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil {
			t.Fatalf("request %d beside a stopped process: %v", i, err)
		}
	}
	// The engine is ours now: the stopped hog booked nothing more.
	if n := h.eng.busy(0, 1); n > 1 {
		t.Fatalf("%d engines busy", n)
	}
}

// hogEngine keeps the engine of the first APQN busy from a child process.
func hogEngine(dir string) {
	h, err := Open(dir, Options{})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	q := ccaIDs[0]
	key, err := h.GenerateKey(bg, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("busy")
	for {
		if _, err := h.Encrypt(bg, q, key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil && !errors.Is(err, context.Canceled) {
			os.Exit(1)
		}
	}
}

func TestEnginesOutOfRange(t *testing.T) {
	h, dir := newSim(t)
	before := snapshotDir(t, dir)
	for _, n := range []int{-1, MaxEngines + 1} {
		err := h.Do(bg, func(tx *Tx) error { return tx.SetEngines(ccaIDs[0], n) })
		if errclass.Of(err) != errclass.InvalidArgument {
			t.Fatalf("SetEngines(%d) = %v, want invalid argument", n, err)
		}
	}
	if !equalSnap(before, snapshotDir(t, dir)) {
		t.Fatal("a refused engine count changed the state directory")
	}
	setModel(t, h, ccaIDs[0], time.Millisecond, 4)
	if err := h.Do(bg, func(tx *Tx) error { return tx.ClearFaults(ccaIDs[0]) }); err != nil {
		t.Fatal(err)
	}
	f, err := h.Faults(ccaIDs[0])
	if err != nil || f.Engines != 4 || f.Latency != 0 {
		t.Fatalf("after --clear: %+v, %v; want the engines kept and the latency gone", f, err)
	}
}

// BenchmarkLatency100us measures what a 100 µs service time costs per
// call (one caller, no queueing): the goal is close to 100 µs, not the
// millisecond a plain Go timer takes.
func BenchmarkLatency100us(b *testing.B) {
	dir := b.TempDir()
	if err := Init(dir, testTopology()); err != nil {
		b.Fatal(err)
	}
	h := openSim(b, dir)
	q := ccaIDs[0]
	key := aesKey(b, h, q)
	if err := h.Do(bg, func(tx *Tx) error { return tx.SetLatency(q, 100*time.Microsecond) }); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := h.Encrypt(bg, q, key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTimer100us is the plain Go timer the model replaced, for
// comparison.
func BenchmarkTimer100us(b *testing.B) {
	for b.Loop() {
		t := time.NewTimer(100 * time.Microsecond)
		<-t.C
	}
}
