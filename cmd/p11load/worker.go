package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Report is what p11load writes at the end.
type Report struct {
	PID    int          `json:"pid"`
	Ops    int          `json:"ops"`
	Failed int          `json:"failed"`
	Slots  []SlotReport `json:"slots"`
}

// SlotReport counts one slot's operations.
type SlotReport struct {
	Slot      uint     `json:"slot"`
	Ops       int      `json:"ops"`
	Failed    int      `json:"failed"`
	Keys      int      `json:"keys_created"`
	Verified  int      `json:"ciphertexts_verified"`
	P50Micros int64    `json:"encrypt_1k_p50_us"`
	P99Micros int64    `json:"encrypt_1k_p99_us"`
	Errors    []string `json:"errors,omitempty"`
}

// sample is a ciphertext made at start that must decrypt at the end.
type sample struct {
	key    tokenlib.ObjectHandle
	iv, ct []byte
	what   string
	label  string
}

type worker struct {
	lib     *tokenlib.Library
	slot    tokenlib.SlotID
	sess    tokenlib.SessionHandle
	aes     []tokenlib.ObjectHandle // session and token AES keys
	ecPriv  tokenlib.ObjectHandle
	ecPub   tokenlib.ObjectHandle
	samples []sample
	rep     SlotReport
	lat     []time.Duration
	n       int
	newKeys bool // make a new key every 25 rounds
}

var plain = bytes.Repeat([]byte("pkcshsm!"), 128) // 1 KiB

func newWorker(lib *tokenlib.Library, slot tokenlib.SlotID, pin []byte) (*worker, error) {
	w := &worker{lib: lib, slot: slot, rep: SlotReport{Slot: uint(slot)}}
	s, err := lib.OpenSession(slot, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("open session: %w", err)
	}
	w.sess = s
	if err := lib.Login(s, ck.CKU_USER, pin); err != nil && tokenlib.RV(err) != ck.CKR_USER_ALREADY_LOGGED_IN {
		return nil, fmt.Errorf("login: %w", err)
	}
	for _, token := range []bool{false, true} {
		k, err := w.genAES(token, fmt.Sprintf("p11load-%d-%v", os.Getpid(), token))
		if err != nil {
			return nil, err
		}
		w.aes = append(w.aes, k)
	}
	ecParams, _ := tokenlib.ECParams("P-256")
	w.ecPub, w.ecPriv, err = lib.GenerateKeyPair(s, tokenlib.Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
		[]tokenlib.Attribute{tokenlib.Bytes(ck.CKA_EC_PARAMS, ecParams), tokenlib.Bool(ck.CKA_VERIFY, true)},
		[]tokenlib.Attribute{tokenlib.Bool(ck.CKA_SIGN, true), tokenlib.Bool(ck.CKA_PRIVATE, true), tokenlib.Bool(ck.CKA_SENSITIVE, true)})
	if err != nil {
		return nil, fmt.Errorf("generate EC key pair: %w", err)
	}
	for i, k := range w.aes {
		iv := bytes.Repeat([]byte{byte(i + 1)}, 16)
		ct, err := w.encrypt(k, iv, plain)
		if err != nil {
			return nil, fmt.Errorf("encrypt sample: %w", err)
		}
		w.samples = append(w.samples, sample{key: k, iv: iv, ct: ct, what: []string{"session", "token"}[i] + " AES key",
			label: fmt.Sprintf("p11load-%d-%v", os.Getpid(), i == 1)})
	}
	return w, nil
}

func (w *worker) genAES(token bool, label string) (tokenlib.ObjectHandle, error) {
	w.rep.Keys++
	if label == "" {
		label = fmt.Sprintf("p11load-%d-%d", os.Getpid(), w.rep.Keys)
	}
	k, err := w.lib.GenerateKey(w.sess, tokenlib.Mechanism{Type: ck.CKM_AES_KEY_GEN}, []tokenlib.Attribute{
		tokenlib.Ulong(ck.CKA_VALUE_LEN, 32), tokenlib.Bool(ck.CKA_TOKEN, token), tokenlib.Bool(ck.CKA_PRIVATE, true),
		tokenlib.Bool(ck.CKA_ENCRYPT, true), tokenlib.Bool(ck.CKA_DECRYPT, true),
		tokenlib.String(ck.CKA_LABEL, label),
	})
	if err != nil {
		return 0, fmt.Errorf("generate AES key (token=%v): %w", token, err)
	}
	return k, nil
}

func (w *worker) encrypt(k tokenlib.ObjectHandle, iv, data []byte) ([]byte, error) {
	if err := w.lib.EncryptInit(w.sess, tokenlib.Mechanism{Type: ck.CKM_AES_CBC_PAD, Param: iv}, k); err != nil {
		return nil, err
	}
	out := make([]byte, len(data)+16)
	n, err := w.lib.Encrypt(w.sess, data, out)
	return out[:n], err
}

func (w *worker) decrypt(k tokenlib.ObjectHandle, iv, data []byte) ([]byte, error) {
	if err := w.lib.DecryptInit(w.sess, tokenlib.Mechanism{Type: ck.CKM_AES_CBC_PAD, Param: iv}, k); err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	n, err := w.lib.Decrypt(w.sess, data, out)
	return out[:n], err
}

func (w *worker) fail(what string, err error) {
	w.rep.Failed++
	if len(w.rep.Errors) < 20 {
		w.rep.Errors = append(w.rep.Errors, fmt.Sprintf("%s: %v", what, err))
	}
}

// round does one of everything on a few keys.
func (w *worker) round() {
	w.n++
	k := w.aes[w.n%len(w.aes)]
	iv := make([]byte, 16)
	start := time.Now()
	ct, err := w.encrypt(k, iv, plain)
	w.rep.Ops++
	if err != nil {
		w.fail("encrypt", err)
		return
	}
	w.lat = append(w.lat, time.Since(start))
	pt, err := w.decrypt(k, iv, ct)
	w.rep.Ops++
	if err != nil || !bytes.Equal(pt, plain) {
		w.fail("decrypt", fmt.Errorf("%v (round trip ok: %v)", err, bytes.Equal(pt, plain)))
	}
	digest := sha256.Sum256(ct)
	w.rep.Ops++
	if err := w.lib.SignInit(w.sess, tokenlib.Mechanism{Type: ck.CKM_ECDSA}, w.ecPriv); err != nil {
		w.fail("sign init", err)
		return
	}
	sig := make([]byte, 64)
	n, err := w.lib.Sign(w.sess, digest[:], sig)
	if err != nil {
		w.fail("sign", err)
		return
	}
	w.rep.Ops++
	if err := w.lib.VerifyInit(w.sess, tokenlib.Mechanism{Type: ck.CKM_ECDSA}, w.ecPub); err != nil {
		w.fail("verify init", err)
	} else if err := w.lib.Verify(w.sess, digest[:], sig[:n]); err != nil {
		w.fail("verify", err)
	}
	// Now and then a new session key and a new token key, which must carry
	// the new master key's blob too while a change is active.
	if w.newKeys && w.n%25 == 0 {
		w.rep.Ops++
		nk, err := w.genAES(w.n%50 == 0, "")
		if err != nil {
			w.fail("generate", err)
			return
		}
		w.aes = append(w.aes, nk)
		if len(w.aes) > 8 { // keep the set small; the first two stay
			w.aes = slices.Delete(w.aes, 2, 3)
		}
	}
}

// verifyAll decrypts the ciphertexts made at start with their keys.
func (w *worker) verifyAll() {
	for _, s := range w.samples {
		w.rep.Ops++
		pt, err := w.decrypt(s.key, s.iv, s.ct)
		if err != nil || !bytes.Equal(pt, plain) {
			w.fail("decrypt data encrypted at start with the "+s.what, fmt.Errorf("%v", err))
			continue
		}
		w.rep.Verified++
	}
}

func (w *worker) report() SlotReport {
	if len(w.lat) > 0 {
		slices.Sort(w.lat)
		w.rep.P50Micros = w.lat[len(w.lat)/2].Microseconds()
		w.rep.P99Micros = w.lat[len(w.lat)*99/100].Microseconds()
	}
	return w.rep
}

// Saved is a ciphertext made with a token key, kept across runs.
type Saved struct {
	Slot  uint   `json:"slot"`
	Label string `json:"label"`
	IV    []byte `json:"iv"`
	CT    []byte `json:"ct"`
}

func saveSamples(path string, workers []*worker) error {
	var out []Saved
	for _, w := range workers {
		s := w.samples[1] // the token key's
		out = append(out, Saved{Slot: uint(w.slot), Label: s.label, IV: s.iv, CT: s.ct})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// checkSaved decrypts what an earlier run saved, finding its token keys by
// label: proof that data encrypted before a master key change decrypts
// after it.
func checkSaved(lib *tokenlib.Library, path string, workers []*worker) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var saved []Saved
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(saved) == 0 {
		return fmt.Errorf("%s holds no ciphertexts", path)
	}
	for _, s := range saved {
		var w *worker
		for _, x := range workers {
			if uint(x.slot) == s.Slot {
				w = x
			}
		}
		if w == nil {
			return fmt.Errorf("slot %d of %s is not in -slots", s.Slot, path)
		}
		if err := lib.FindObjectsInit(w.sess, []tokenlib.Attribute{tokenlib.String(ck.CKA_LABEL, s.Label)}); err != nil {
			return err
		}
		hs, err := lib.FindObjects(w.sess, 2)
		lib.FindObjectsFinal(w.sess)
		if err != nil || len(hs) != 1 {
			return fmt.Errorf("slot %d: token key %q: found %d keys (%v)", s.Slot, s.Label, len(hs), err)
		}
		pt, err := w.decrypt(hs[0], s.IV, s.CT)
		if err != nil || !bytes.Equal(pt, plain) {
			return fmt.Errorf("slot %d: data encrypted earlier with %q does not decrypt: %v", s.Slot, s.Label, err)
		}
		w.rep.Verified++
		fmt.Printf("p11load: slot %d: data encrypted earlier with token key %q decrypts\n", s.Slot, s.Label)
	}
	return nil
}
