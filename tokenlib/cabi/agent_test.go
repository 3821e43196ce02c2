package cabi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// agentGoroutines counts goroutines running runtime/agent code.
func agentGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "pkcshsm/runtime/agent.") {
			n++
		}
	}
	return n
}

// TestAgentWithoutDaemon: with no pkcshsmd the tokens work, the runtime
// agent that C_Initialize started logs exactly one warning, and
// C_Finalize stops it.
func TestAgentWithoutDaemon(t *testing.T) {
	m := ready(t)
	if agentGoroutines() == 0 {
		t.Fatal("no runtime agent goroutine after C_Initialize")
	}
	h := m.user()
	key := m.aesKey(h, true)
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, m.mech(ck.CKM_AES_ECB, nil).P, key))
	buf, n := m.alloc(16), m.ulong(16)
	m.ok("C_Encrypt", m.f.C_Encrypt(h, buf.P, 16, buf.P, n.P))
	// The agent dials in the background: its first failure is logged
	// when it happens, maybe after these calls.
	m.waitAgentWarning()
	m.ok("C_Finalize", m.f.C_Finalize(0))
	if g := agentGoroutines(); g != 0 {
		t.Errorf("%d runtime agent goroutines after C_Finalize", g)
	}
	warnings := 0
	for _, e := range m.logLines() {
		if e["level"] == "warn" {
			warnings++
			if !strings.Contains(fmt.Sprint(e["message"]), "cannot reach pkcshsmd") {
				t.Errorf("unexpected warning %v", e)
			}
		}
	}
	if warnings != 1 {
		t.Errorf("%d warnings, want exactly one (no daemon)", warnings)
	}
}

// waitAgentWarning waits until the agent logged that pkcshsmd is absent.
func (m *module) waitAgentWarning() {
	m.t.Helper()
	waitFor(m.t, "the agent's warning about pkcshsmd", func() bool {
		for _, e := range m.logLines() {
			if e["level"] == "warn" && e["message"] == "cannot reach pkcshsmd" {
				return true
			}
		}
		return false
	})
}

// buildBinaries builds commands of this module into dir.
func buildBinaries(t testing.TB, dir string, cmds ...string) {
	t.Helper()
	goTool := lookTool(t, "go")
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	for _, c := range cmds {
		args = append(args, "../../cmd/"+c)
	}
	if out, err := exec.Command(goTool, args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or 30 s passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMasterKeyChangeThroughModule: a process using the module (this test
// binary, through the C function list) takes part in a master key change
// with the real pkcshsmd and pkcshsm_mk_change: its session key, which
// exists only in this process, gets a CKA_IBM_OPAQUE_REENC blob under the
// new AES master key and keeps working.
func TestMasterKeyChangeThroughModule(t *testing.T) {
	m := ready(t)
	bin := t.TempDir()
	buildBinaries(t, bin, "pkcshsmd", "pkcshsm_mk_change")
	env := append(os.Environ(), "PKCSHSM_ROOT="+m.layout.Root)

	daemonLog := &syncBuffer{}
	d := exec.Command(filepath.Join(bin, "pkcshsmd"), "--log-level", "debug")
	d.Env, d.Stderr = env, daemonLog
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { d.Wait(); close(done) }()
	t.Cleanup(func() {
		d.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("pkcshsmd log:\n%s", daemonLog.String())
		}
	})
	// The module connected at C_Initialize already tried once; its agent
	// retries and announces itself.
	waitFor(t, "the module's agent to connect to pkcshsmd", func() bool {
		select {
		case <-done:
			t.Fatalf("pkcshsmd exited:\n%s", daemonLog.String())
		default:
		}
		for _, e := range m.logLines() {
			if e["message"] == "connected to pkcshsmd" {
				return true
			}
		}
		return false
	})

	h := m.user()
	sessKey := m.aesKey(h, false)
	reenc := func() []byte {
		buf := m.alloc(4096)
		tmpl := m.keep(ctest.PutAttrs([]ctest.Attr{{Type: uint(ck.CKA_IBM_OPAQUE_REENC), Value: buf.P, Len: 4096}}))
		rv := ck.RV(m.f.C_GetAttributeValue(h, sessKey, tmpl.P, 1))
		if rv == ck.CKR_ATTRIBUTE_TYPE_INVALID {
			return nil
		}
		m.ok("C_GetAttributeValue(CKA_IBM_OPAQUE_REENC)", uint(rv))
		return bytes.Clone(buf.Bytes()[:ctest.GetAttr(tmpl, 0).Len])
	}
	if b := reenc(); len(b) != 0 {
		t.Fatalf("session key has a REENC blob before any change")
	}

	// The officer loads a new AES master key into both CCA APQNs.
	o, err := sim.Open(m.layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, sim.KeySize(mkvp.CCAAES))
	rand.Read(key)
	var newAES mkvp.Pattern
	for _, q := range []string{"01.0033", "02.0033"} {
		newAES, err = o.LoadNew(context.Background(), apqn.MustParse(q), mkvp.CCAAES, key, hsm.Part{})
		if err != nil {
			t.Fatal(err)
		}
	}
	o.Close()

	cmd := exec.Command(filepath.Join(bin, "pkcshsm_mk_change"), "reencipher", "-a", "01.0033,02.0033", "-A", newAES.String())
	cmd.Env = env
	// The EP11 token of slot 4 is not initialised: confirm, then the USER PIN.
	cmd.Stdin = strings.NewReader("y\n" + userPIN + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcshsm_mk_change reencipher: %v\n%s", err, out)
	}
	t.Logf("reencipher:\n%s", out)

	blob := reenc()
	if len(blob) == 0 {
		t.Fatalf("the session key has no CKA_IBM_OPAQUE_REENC after reencipher\nmodule log: %v", m.logLines())
	}
	info, err := hsm.Inspect(blob)
	if err != nil {
		t.Fatal(err)
	}
	if info.Pattern != newAES {
		t.Errorf("REENC blob under %s, want the new AES master key %s", info.Pattern, newAES)
	}
	// The key still works under the current master key.
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, m.mech(ck.CKM_AES_ECB, nil).P, sessKey))
	buf, n := m.alloc(16), m.ulong(16)
	m.ok("C_Encrypt after reencipher", m.f.C_Encrypt(h, buf.P, 16, buf.P, n.P))
}
