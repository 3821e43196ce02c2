package cabi_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/tokenlib/cabi"
	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestConcurrentCallers: threads with their own sessions use one shared
// token key at once through the C layer (run under -race), then C_Finalize
// arrives while they are still calling: each call either completes or
// answers CKR_CRYPTOKI_NOT_INITIALIZED, never anything else, and
// C_Finalize waits for the calls in flight.
func TestConcurrentCallers(t *testing.T) {
	m := ready(t)
	h0 := m.user()
	key := m.aesKey(h0, true)
	const workers, rounds = 4, 30
	type worker struct {
		h             uintptr
		in, out, back ctest.Mem
		n             ctest.Mem
		mech          ctest.Mem
	}
	ws := make([]worker, workers)
	for i := range ws {
		ws[i] = worker{h: m.open(ccaSlot, false), in: m.bytes(bytes.Repeat([]byte{byte(i)}, 64)),
			out: m.alloc(64), back: m.alloc(64), n: m.ulong(0), mech: m.mech(ck.CKM_AES_ECB, nil)}
	}
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds*2)
	run := func(w worker, finalizing bool) {
		defer wg.Done()
		for range rounds {
			rv := ck.RV(m.f.C_EncryptInit(w.h, w.mech.P, key))
			if rv == ck.CKR_OK {
				ctest.SetULong(w.n.P, 64)
				rv = ck.RV(m.f.C_Encrypt(w.h, w.in.P, 64, w.out.P, w.n.P))
			}
			if rv == ck.CKR_OK {
				rv = ck.RV(m.f.C_DecryptInit(w.h, w.mech.P, key))
			}
			if rv == ck.CKR_OK {
				ctest.SetULong(w.n.P, 64)
				rv = ck.RV(m.f.C_Decrypt(w.h, w.out.P, 64, w.back.P, w.n.P))
				if rv == ck.CKR_OK && !bytes.Equal(w.back.Bytes(), w.in.Bytes()) {
					errs <- "round trip returned other data"
				}
			}
			switch {
			case rv == ck.CKR_OK:
			case finalizing && (rv == ck.CKR_CRYPTOKI_NOT_INITIALIZED || rv == ck.CKR_SESSION_HANDLE_INVALID ||
				rv == ck.CKR_OPERATION_NOT_INITIALIZED || rv == ck.CKR_USER_NOT_LOGGED_IN || rv == ck.CKR_KEY_HANDLE_INVALID):
				if rv == ck.CKR_CRYPTOKI_NOT_INITIALIZED {
					return
				}
			default:
				errs <- rv.String()
			}
		}
	}
	for _, w := range ws {
		wg.Add(1)
		go run(w, false)
	}
	wg.Wait()
	for _, w := range ws {
		wg.Add(1)
		go run(w, true)
	}
	m.ok("C_Finalize while calls are in flight", m.f.C_Finalize(0))
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// The library is gone for everyone, and comes back.
	wantRV(t, "C_GetSessionInfo", m.f.C_GetSessionInfo(ws[0].h, m.alloc(ctest.SizeofSession).P), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	m.ok("C_Initialize", m.f.C_Initialize(0))
}

// TestFinalizeWaitsForCallsInFlight: C_Finalize does not pull the library
// away from a call that is running (held inside the module by the entry
// hook): it returns only after the call, and the call succeeds.
func TestFinalizeWaitsForCallsInFlight(t *testing.T) {
	m := ready(t)
	h := m.open(ccaSlot, false)
	pin := m.bytes([]byte(userPIN))
	entered, release := make(chan struct{}), make(chan struct{})
	cabi.SetEntryHook(func(name string) {
		if name == "C_Login" {
			close(entered)
			<-release
		}
	})
	loginRV := make(chan uint, 1)
	go func() { loginRV <- m.f.C_Login(h, uintptr(ck.CKU_USER), pin.P, uintptr(pin.N)) }()
	<-entered
	finalized := make(chan uint, 1)
	go func() { finalized <- m.f.C_Finalize(0) }()
	early := false
	var finRV uint
	select {
	case finRV = <-finalized:
		early = true
		t.Errorf("C_Finalize returned %v while C_Login was in flight", ck.RV(finRV))
	case <-time.After(300 * time.Millisecond): // bounded wait for a wrong early return
	}
	close(release)
	wantRV(t, "C_Login in flight during C_Finalize", <-loginRV, ck.CKR_OK)
	if !early {
		finRV = <-finalized
	}
	wantRV(t, "C_Finalize", finRV, ck.CKR_OK)
	cabi.SetEntryHook(nil)
	wantRV(t, "C_GetSessionInfo after C_Finalize", m.f.C_GetSessionInfo(h, m.alloc(ctest.SizeofSession).P), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
}
