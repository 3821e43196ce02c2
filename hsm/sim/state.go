package sim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// The state file is one header line and a JSON body:
//
//	pkcshsm-sim-state v1 sha256:<hex of the body>\n
//	{ ... }
//
// The checksum catches torn or edited files; the version lets a later
// simulator refuse (or migrate) a layout it does not know. The file holds
// the clear master keys: it is the simulator's "hardware" and is written
// with mode 0600.
const (
	stateMagic    = "pkcshsm-sim-state"
	stateVersion  = 1
	stateFileName = "state"
	lockName      = "lock"
	genName       = "generation"
	sysName       = "sys"
)

// stateFile is the persisted simulator state.
type stateFile struct {
	Version int          `json:"version"`
	Queues  []queueState `json:"queues"`
}

// queueState is one APQN: its adapter, master key registers and faults.
type queueState struct {
	ID       apqn.ID   `json:"apqn"`
	Mode     modeName  `json:"mode"`
	Group    int       `json:"group"` // domain group index (shared initial keys)
	CardType string    `json:"card_type"`
	Online   bool      `json:"online"`
	Chkstop  bool      `json:"chkstop,omitempty"`
	Faults   faultKnob `json:"faults,omitzero"`
	// Registers holds SYM, ASYM, AES, APKA (CCA) or WK (EP11).
	Registers map[mkvp.Type]*regSet `json:"registers"`
	// MaxSessions bounds the EP11 sessions of the APQN (0: the default,
	// DefaultMaxSessions); Sessions are those logged in (EP11 only).
	MaxSessions int            `json:"max_sessions,omitempty"`
	Sessions    []sessionState `json:"sessions,omitempty"`
	// Engines is how many requests the APQN serves at once; further ones
	// queue (0: no limit). Each request takes Faults.LatencyNS, the
	// service time. See adapter.go.
	Engines int `json:"engines,omitempty"`
}

// sessionState is one logged-in EP11 session. Secret is derived from the
// login's PIN and nonce only, so the session survives a wrapping key
// change; its pin blob and session field are derived from it and the
// CURRENT wrapping key. Issued are the pin blobs handed out for it (one
// per wrapping key it was logged in under), each of which logs it out.
type sessionState struct {
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
	Issued  [][]byte  `json:"issued"`
}

// faultKnob is the injected faults of one APQN.
type faultKnob struct {
	// FailAfter, when armed, is the number of operations still allowed;
	// at 0 every operation fails as if the APQN were offline.
	FailArmed bool  `json:"fail_armed,omitempty"`
	FailAfter int64 `json:"fail_after,omitempty"`
	// LatencyNS is the service time of every backend operation: added to
	// it, and with Engines set also the time an engine stays busy.
	LatencyNS int64 `json:"latency_ns,omitempty"`
}

// regSet is the NEW, CURRENT and OLD register of one master key type.
type regSet struct {
	New     register `json:"new"`
	Current register `json:"current"`
	Old     register `json:"old,omitzero"` // zero for EP11
}

// register is one master key register. Key is the clear content; for a
// partial CCA NEW register it is the XOR of the parts loaded so far.
type register struct {
	State stateName `json:"state,omitempty"`
	Key   []byte    `json:"key,omitempty"`
	Parts int       `json:"parts,omitempty"` // parts loaded (partial only)
	Total int       `json:"total,omitempty"` // parts announced (partial only)
}

// modeName is an adapter mode as the state file spells it.
type modeName apqn.Mode

func (m modeName) MarshalText() ([]byte, error) {
	switch apqn.Mode(m) {
	case apqn.ModeCCA:
		return []byte("cca"), nil
	case apqn.ModeEP11:
		return []byte("ep11"), nil
	}
	return nil, fmt.Errorf("mode %d cannot be stored", m)
}

func (m *modeName) UnmarshalText(b []byte) error {
	switch string(b) {
	case "cca":
		*m = modeName(apqn.ModeCCA)
	case "ep11":
		*m = modeName(apqn.ModeEP11)
	default:
		return fmt.Errorf("unknown mode %q", b)
	}
	return nil
}

// stateName is a register state as the state file spells it (the kernel's
// word); the zero value is "no register" (EP11 OLD).
type stateName apqn.RegState

func (s stateName) MarshalText() ([]byte, error) {
	if s == 0 {
		return nil, nil
	}
	return []byte(apqn.RegState(s).String()), nil
}

func (s *stateName) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*s = 0
		return nil
	}
	v, err := apqn.ParseRegState(string(b))
	if err != nil || v == apqn.StateUnknown {
		return fmt.Errorf("unknown register state %q", b)
	}
	*s = stateName(v)
	return nil
}

func (s stateName) st() apqn.RegState { return apqn.RegState(s) }

// keySize is the length of a master key of type t.
func keySize(t mkvp.Type) int {
	switch t {
	case mkvp.CCASYM, mkvp.CCAASYM:
		return 24
	}
	return 32
}

// encodeState renders the state file bytes.
func encodeState(s *stateFile) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, errclass.New(errclass.Internal, "refusing to write an invalid simulator state: %w", err)
	}
	body, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, errclass.New(errclass.Internal, "encode simulator state: %w", err)
	}
	body = append(body, '\n')
	sum := sha256.Sum256(body)
	head := fmt.Sprintf("%s v%d sha256:%s\n", stateMagic, stateVersion, hex.EncodeToString(sum[:]))
	return append([]byte(head), body...), nil
}

// decodeState parses and validates state file bytes. Every failure is
// DataLoss naming the file.
func decodeState(path string, raw []byte) (*stateFile, error) {
	corrupt := func(format string, args ...any) error {
		return errclass.Newh(errclass.DataLoss,
			"restore the file from a backup, or re-create the simulator with `hsmsim init --force` (all simulated keys are lost)",
			"simulator state %s is corrupt: %s", path, fmt.Sprintf(format, args...))
	}
	head, body, ok := bytes.Cut(raw, []byte("\n"))
	if !ok {
		return nil, corrupt("no header line")
	}
	f := strings.Fields(string(head))
	if len(f) != 3 || f[0] != stateMagic {
		return nil, corrupt("header %q is not %q", truncate(string(head)), stateMagic+" v1 sha256:…")
	}
	if f[1] != fmt.Sprintf("v%d", stateVersion) {
		return nil, errclass.Newh(errclass.FailedPrecondition,
			"use the hsmsim that wrote it, or re-create the simulator with `hsmsim init --force`",
			"simulator state %s has version %q; this simulator reads v%d", path, truncate(f[1]), stateVersion)
	}
	want, ok := strings.CutPrefix(f[2], "sha256:")
	sum := sha256.Sum256(body)
	if !ok || want != hex.EncodeToString(sum[:]) {
		return nil, corrupt("checksum mismatch (torn write or edited file)")
	}
	var s stateFile
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, corrupt("%v", err)
	}
	if dec.More() {
		return nil, corrupt("trailing data after the state")
	}
	if err := s.validate(); err != nil {
		return nil, corrupt("%v", err)
	}
	return &s, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// validate checks the invariants every reader relies on.
func (s *stateFile) validate() error {
	if s.Version != stateVersion {
		return fmt.Errorf("version %d, want %d", s.Version, stateVersion)
	}
	if len(s.Queues) == 0 {
		return fmt.Errorf("no APQNs")
	}
	cardMode := map[uint8]string{}
	for i := range s.Queues {
		q := &s.Queues[i]
		if i > 0 && s.Queues[i-1].ID.Compare(q.ID) >= 0 {
			return fmt.Errorf("APQNs not in ascending order at %s", q.ID)
		}
		_, mode, err := apqn.ParseCardType(q.CardType)
		if err != nil || mode != apqn.Mode(q.Mode) {
			return fmt.Errorf("APQN %s: card type %q does not fit mode %s", q.ID, q.CardType, apqn.Mode(q.Mode))
		}
		if m, ok := cardMode[q.ID.Card]; ok && m != q.CardType {
			return fmt.Errorf("card %02x has APQNs of types %s and %s", q.ID.Card, m, q.CardType)
		}
		cardMode[q.ID.Card] = q.CardType
		if q.Group < 0 {
			return fmt.Errorf("APQN %s: negative group", q.ID)
		}
		if q.Faults.FailAfter < 0 || q.Faults.LatencyNS < 0 || (!q.Faults.FailArmed && q.Faults.FailAfter != 0) {
			return fmt.Errorf("APQN %s: bad fault settings", q.ID)
		}
		if q.Engines < 0 || q.Engines > MaxEngines {
			return fmt.Errorf("APQN %s: %d engines, want 0..%d", q.ID, q.Engines, MaxEngines)
		}
		if err := q.validateSessions(); err != nil {
			return fmt.Errorf("APQN %s: %w", q.ID, err)
		}
		types := []mkvp.Type{mkvp.EP11WK}
		if apqn.Mode(q.Mode) == apqn.ModeCCA {
			types = mkvp.CCATypes()
		}
		if len(q.Registers) != len(types) {
			return fmt.Errorf("APQN %s: %d register sets, want %d", q.ID, len(q.Registers), len(types))
		}
		for _, t := range types {
			r, ok := q.Registers[t]
			if !ok || r == nil {
				return fmt.Errorf("APQN %s: no %s registers", q.ID, t)
			}
			if err := r.validate(t); err != nil {
				return fmt.Errorf("APQN %s %s: %w", q.ID, t, err)
			}
		}
	}
	return nil
}

func (q *queueState) validateSessions() error {
	if q.MaxSessions < 0 || q.MaxSessions > MaxSessionLimit {
		return fmt.Errorf("session limit %d out of range 0..%d", q.MaxSessions, MaxSessionLimit)
	}
	if len(q.Sessions) > 0 && apqn.Mode(q.Mode) != apqn.ModeEP11 {
		return fmt.Errorf("EP11 sessions on a %s APQN", apqn.Mode(q.Mode))
	}
	if len(q.Sessions) > MaxSessionLimit {
		return fmt.Errorf("%d EP11 sessions, more than %d", len(q.Sessions), MaxSessionLimit)
	}
	seen := map[string]bool{}
	for i, se := range q.Sessions {
		if len(se.Secret) != sha256.Size || seen[string(se.Secret)] {
			return fmt.Errorf("EP11 session %d: bad or duplicate secret", i)
		}
		seen[string(se.Secret)] = true
		if len(se.Issued) == 0 || len(se.Issued) > maxIssued {
			return fmt.Errorf("EP11 session %d: %d pin blobs issued", i, len(se.Issued))
		}
		for _, pb := range se.Issued {
			if len(pb) != hsm.PinBlobSize {
				return fmt.Errorf("EP11 session %d: pin blob of %d bytes", i, len(pb))
			}
		}
	}
	return nil
}

func (r *regSet) validate(t mkvp.Type) error {
	newOK := []apqn.RegState{apqn.StateEmpty, apqn.StatePartial, apqn.StateFull}
	if t == mkvp.EP11WK {
		newOK = []apqn.RegState{apqn.StateEmpty, apqn.StateUncommitted, apqn.StateCommitted}
	}
	if !slices.Contains(newOK, r.New.State.st()) {
		return fmt.Errorf("NEW register state %q", r.New.State.st())
	}
	if err := r.New.validateKey(t, r.New.State.st() != apqn.StateEmpty); err != nil {
		return fmt.Errorf("NEW register: %w", err)
	}
	partial := r.New.State.st() == apqn.StatePartial
	if partial != (r.New.Total != 0) || (partial && (r.New.Parts < 1 || r.New.Parts >= r.New.Total)) ||
		(!partial && r.New.Parts != 0) {
		return fmt.Errorf("NEW register part counts %d/%d", r.New.Parts, r.New.Total)
	}
	regs := map[string]register{"CURRENT": r.Current}
	if t == mkvp.EP11WK {
		if r.Old.State != 0 || r.Old.Key != nil || r.Old.Parts != 0 || r.Old.Total != 0 {
			return fmt.Errorf("EP11 has no OLD register")
		}
	} else {
		regs["OLD"] = r.Old
	}
	for name, reg := range regs {
		st := reg.State.st()
		if st != apqn.StateValid && st != apqn.StateInvalid {
			return fmt.Errorf("%s register state %q", name, st)
		}
		if reg.Parts != 0 || reg.Total != 0 {
			return fmt.Errorf("%s register has part counts", name)
		}
		if err := reg.validateKey(t, st == apqn.StateValid); err != nil {
			return fmt.Errorf("%s register: %w", name, err)
		}
	}
	return nil
}

func (r register) validateKey(t mkvp.Type, loaded bool) error {
	switch {
	case loaded && len(r.Key) != keySize(t):
		return fmt.Errorf("key of %d bytes, want %d", len(r.Key), keySize(t))
	case !loaded && r.Key != nil:
		return fmt.Errorf("key material in an unloaded register")
	}
	return nil
}

// clone deep-copies the state, so a transaction can fail without touching
// the snapshot readers share.
func (s *stateFile) clone() *stateFile {
	c := &stateFile{Version: s.Version, Queues: make([]queueState, len(s.Queues))}
	for i, q := range s.Queues {
		q.Registers = make(map[mkvp.Type]*regSet, len(s.Queues[i].Registers))
		for t, r := range s.Queues[i].Registers {
			rc := *r
			rc.New.Key = bytes.Clone(r.New.Key)
			rc.Current.Key = bytes.Clone(r.Current.Key)
			rc.Old.Key = bytes.Clone(r.Old.Key)
			q.Registers[t] = &rc
		}
		q.Sessions = slices.Clone(q.Sessions)
		for j := range q.Sessions {
			q.Sessions[j].Issued = slices.Clone(q.Sessions[j].Issued)
		}
		c.Queues[i] = q
	}
	return c
}

func (s *stateFile) queue(id apqn.ID) *queueState {
	i, ok := slices.BinarySearchFunc(s.Queues, id, func(q queueState, id apqn.ID) int { return q.ID.Compare(id) })
	if !ok {
		return nil
	}
	return &s.Queues[i]
}

// writeFileAtomic writes data to path: temp file in the same directory,
// fsync, rename, fsync the directory. Readers see the old or the new file,
// never a torn one, and the new one survives a crash once this returns.
func writeFileAtomic(path string, data []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return ioErr(err, "create temporary file in %s", dir)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return ioErr(err, "write %s", tmp)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return ioErr(err, "chmod %s", tmp)
	}
	if durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return ioErr(err, "fsync %s", tmp)
		}
	}
	if err := f.Close(); err != nil {
		return ioErr(err, "close %s", tmp)
	}
	if err := os.Rename(tmp, path); err != nil {
		return ioErr(err, "rename %s to %s", tmp, path)
	}
	if durable {
		d, err := os.Open(dir)
		if err != nil {
			return ioErr(err, "open %s", dir)
		}
		defer d.Close()
		if err := d.Sync(); err != nil {
			return ioErr(err, "fsync %s", dir)
		}
	}
	return nil
}

func ioErr(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case os.IsNotExist(err):
		return errclass.New(errclass.NotFound, "%s: %w", msg, err)
	case os.IsPermission(err):
		return errclass.Newh(errclass.PermissionDenied,
			"run as a user who may write the simulator directory, or pick another one with --dir / PKCSHSM_ROOT",
			"%s: %w", msg, err)
	}
	return errclass.New(errclass.Unavailable, "%s: %w", msg, err)
}
