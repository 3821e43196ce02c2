package consumers_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nssDB makes an NSS database in dir with libpkcshsm.so added as a module
// (modutil) and a password file holding the token's USER PIN.
func nssDB(t *testing.T, dir string) (db, pwfile string) {
	t.Helper()
	certutil, modutil := need(t, "certutil"), need(t, "modutil")
	db = "sql:" + filepath.Join(dir, "db")
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	pwfile = filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(userPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "", nil, certutil, "-N", "-d", db, "--empty-password")
	// modutil asks for confirmation on stdin unless -force.
	run(t, "", nil, modutil, "-dbdir", db, "-add", "pkcshsm", "-libfile", env.module, "-force")
	out := run(t, "", nil, modutil, "-dbdir", db, "-list", "pkcshsm", "-force")
	mustContain(t, "modutil -list", out, "Token Name: "+token)
	return db, pwfile
}

// freePort returns a TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startSelfserv runs NSS's test TLS server with the certificate and key
// named nick (token:label), and stops it when the test ends.
func startSelfserv(t *testing.T, db, pwfile, nick string, ec bool) int {
	t.Helper()
	selfserv := need(t, "selfserv")
	port := freePort(t)
	flag := "-n"
	if ec {
		flag = "-e"
	}
	logf := startBackground(t, "selfserv", selfserv, "-d", db, flag, nick, "-p", strconv.Itoa(port), "-f", pwfile, "-V", "tls1.2:tls1.3")
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf)
			t.Fatalf("selfserv does not listen on %d: %v\n%s", port, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startBackground starts a long-running consumer with the module's
// environment, its output in a log file (returned), and stops it with
// SIGTERM (SIGKILL after 5 s) when the test ends.
func startBackground(t *testing.T, name, path string, args ...string) string {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = toolEnv()
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	return logf.Name()
}

// tstclnt makes one TLS connection to the selfserv on port with NSS's
// test client (its own database, trusting nothing but accepting the
// self-signed certificate, -o) and returns the connection's report; the
// server's HTTP answer proves the handshake, which needs a signature by
// the token key, completed.
func tstclnt(t *testing.T, port int, version string) string {
	t.Helper()
	tst := need(t, "tstclnt")
	dir := t.TempDir()
	cdb := "sql:" + dir
	run(t, "", nil, need(t, "certutil"), "-N", "-d", cdb, "--empty-password")
	// The request comes from a file (-A): tstclnt reading an empty stdin
	// spins on TLS 1.3 connections. timeout(1) bounds a stuck client.
	req := filepath.Join(dir, "request")
	if err := os.WriteFile(req, []byte("GET / HTTP/1.0\r\n\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(t, "", nil, "timeout", "60", tst, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-d", cdb, "-o",
		"-V", version+":"+version, "-A", req)
	mustContain(t, "tstclnt", out, "HTTP/1.0 200 OK", "subject DN: CN=")
	return out
}

// TestNSSCertificateOnTokenAndTLS: certutil -S makes a key pair and a
// self-signed certificate on the token (EC and RSA); the certificate is a
// token object NSS finds again (certutil -L), the key lives only on the
// token (certutil -K finds none in NSS's own database); selfserv serves
// TLS 1.2 and 1.3 with that token key and tstclnt completes handshakes
// whose server certificate is the token's.
func TestNSSCertificateOnTokenAndTLS(t *testing.T) {
	certutil := need(t, "certutil")
	dir := t.TempDir()
	db, pw := nssDB(t, dir)
	noise := filepath.Join(dir, "noise")
	if err := os.WriteFile(noise, []byte(strings.Repeat("entropy for certutil ", 4)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		ec   bool
	}{
		{"EC", []string{"-k", "ec", "-q", "nistp256"}, true},
		{"RSA", []string{"-k", "rsa", "-g", "2048"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			label := fmt.Sprintf("nss-%s-%d", strings.ToLower(c.name), os.Getpid())
			args := append([]string{"-S", "-d", db, "-h", token, "-f", pw, "-z", noise, "-n", label, "-s", "CN=" + label,
				"-x", "-t", "u,u,u", "-v", "12", "--keyUsage", "digitalSignature,keyEncipherment", "--nsCertType", "sslServer",
				"-8", "localhost"}, c.args...)
			run(t, "", nil, certutil, args...)
			nick := token + ":" + label
			mustContain(t, "certutil -L", run(t, "", nil, certutil, "-L", "-d", db, "-h", token, "-f", pw), nick)
			mustContain(t, "certutil -K", run(t, "", nil, certutil, "-K", "-d", db, "-h", token, "-f", pw), nick)
			// The key is on the token only.
			internal, _ := runErr(t, "", nil, certutil, "-K", "-d", db, "-h", "NSS Certificate DB", "-f", pw)
			if strings.Contains(internal, label) {
				t.Fatalf("the key was made in NSS's own database:\n%s", internal)
			}
			// The certificate read back is a valid X.509 certificate for
			// the name asked for.
			pemOut := run(t, "", nil, certutil, "-L", "-d", db, "-h", token, "-f", pw, "-n", nick, "-a")
			blk, _ := pem.Decode([]byte(pemOut))
			if blk == nil {
				t.Fatalf("certutil -L -a printed no PEM:\n%s", pemOut)
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil || cert.Subject.CommonName != label {
				t.Fatalf("certificate on the token: %v, subject %v", err, cert.Subject)
			}

			port := startSelfserv(t, db, pw, nick, c.ec)
			for _, v := range []string{"tls1.2", "tls1.3"} {
				out := tstclnt(t, port, v)
				mustContain(t, "tstclnt "+v, out, "subject DN: CN="+label)
			}
		})
	}
}
