package tokenlib

import (
	"fmt"
	"sync"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestConcurrentSessions runs sessions of one Library in parallel: key
// generation, crypto, searches and attribute changes must not race (run
// with -race) and every goroutine must see its own keys.
func TestConcurrentSessions(t *testing.T) {
	l, _ := newTestLib(t)
	userSession(t, l, slotCCA) // the login applies to the sessions below
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
			if err != nil {
				errs <- err
				return
			}
			for i := range 5 {
				label := fmt.Sprintf("g%d-%d", g, i)
				k, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate(label, i%2 == 0))
				if err != nil {
					errs <- err
					return
				}
				if err := encryptOnce(l, h, k); err != nil {
					errs <- err
					return
				}
				if err := l.SetAttributeValue(h, k, []Attribute{String(ck.CKA_ID, label)}); err != nil {
					errs <- err
					return
				}
				if err := l.FindObjectsInit(h, []Attribute{String(ck.CKA_LABEL, label)}); err != nil {
					errs <- err
					return
				}
				hs, err := l.FindObjects(h, 10)
				if err == nil && (len(hs) != 1 || hs[0] != k) {
					err = fmt.Errorf("%s: found %v, want [%d]", label, hs, k)
				}
				if err != nil {
					errs <- err
					return
				}
				if err := l.FindObjectsFinal(h); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
