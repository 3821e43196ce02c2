#!/usr/bin/python3
"""p11stress.py: an outside Python application (PyKCS11, Debian's
python3-pykcs11; run it with /usr/bin/python3) that uses a PKCS#11 module
without pause, like testdata/clients/p11stress.c does from C:

  /usr/bin/python3 p11stress.py --module SO --token LABEL[,LABEL...]
      --stop FILE [--ready FILE] [--report FILE] [--phases FILE]
      [--progress FILE] [--duration SEC] < pin

Each round, on each token: AES-CBC-PAD and AES-GCM round trips (the
decrypted data must equal the input), an ECDSA P-256 signature verified
(and refused for a tampered digest), RSA-PSS sign/verify and RSA-OAEP
encrypt/decrypt now and then, and every few rounds a new session or token
AES key that encrypts data checked again later. Data encrypted at start is
decrypted at the end. The run ends when FILE given by --stop exists (a
signal handler would run on whatever thread the kernel picks, possibly one
of the module's, so the script does not rely on signals) or after
--duration. Phases, the report and the summary lines are as for the C
client. Exit status 0 only when no operation failed.
"""

import argparse
import json
import os
import sys
import time

import PyKCS11
from PyKCS11 import (
    CKA_CLASS, CKA_DECRYPT, CKA_EC_PARAMS, CKA_ENCRYPT, CKA_KEY_TYPE, CKA_LABEL, CKA_MODULUS_BITS,
    CKA_PRIVATE, CKA_PUBLIC_EXPONENT, CKA_SENSITIVE, CKA_SIGN, CKA_TOKEN, CKA_VALUE_LEN, CKA_VERIFY,
    CKF_RW_SESSION, CKF_SERIAL_SESSION, CKG_MGF1_SHA256, CKK_AES, CKM_AES_CBC_PAD, CKM_AES_KEY_GEN,
    CKM_ECDSA, CKM_EC_KEY_PAIR_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_SHA256, CKM_SHA256_RSA_PKCS_PSS,
    CKO_SECRET_KEY, CKR_USER_ALREADY_LOGGED_IN, CKU_USER, PyKCS11Error,
)

P256 = bytes.fromhex("06082a8648ce3d030107")
PLAIN = (b"p11stress!" * 103)[:1024]


class Load:
    def __init__(self, args):
        self.args = args
        self.recs = []  # (wall ns, latency ns, ok)
        self.ops = {}
        self.fails = {}
        self.errors = []
        self.verified = 0

    def op(self, name, fn, ok=lambda r: True):
        """Run fn, time it, count it; a PyKCS11Error or ok(r) false is a failure."""
        wall, t0 = time.time_ns(), time.monotonic_ns()
        good, r = False, None
        try:
            r = fn()
            good = bool(ok(r))
            why = "wrong result"
        except PyKCS11Error as e:
            why = str(e)
        self.recs.append((wall, time.monotonic_ns() - t0, good))
        self.ops[name] = self.ops.get(name, 0) + 1
        if not good:
            self.fails[name] = self.fails.get(name, 0) + 1
            if len(self.errors) < 20:
                self.errors.append("%s: %s" % (name, why))
        return r if good else None


def aes_key(s, token, label):
    return s.generateKey([(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_VALUE_LEN, 32),
                          (CKA_TOKEN, token), (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_ENCRYPT, True),
                          (CKA_DECRYPT, True), (CKA_LABEL, label)],
                         mecha=PyKCS11.Mechanism(CKM_AES_KEY_GEN, None))


class Token:
    """One token's session and keys."""

    def __init__(self, lib, slot, pin, ld):
        self.ld = ld
        self.s = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        try:
            self.s.login(pin, CKU_USER)
        except PyKCS11Error as e:
            if e.value != CKR_USER_ALREADY_LOGGED_IN:
                raise
        pid = os.getpid()
        self.ec_pub, self.ec_priv = self.s.generateKeyPair(
            [(CKA_EC_PARAMS, P256), (CKA_VERIFY, True), (CKA_TOKEN, False)],
            [(CKA_SIGN, True), (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_TOKEN, False)],
            mecha=PyKCS11.Mechanism(CKM_EC_KEY_PAIR_GEN, None))
        self.rsa_pub, self.rsa_priv = self.s.generateKeyPair(
            [(CKA_MODULUS_BITS, 2048), (CKA_PUBLIC_EXPONENT, (1, 0, 1)), (CKA_VERIFY, True), (CKA_ENCRYPT, True),
             (CKA_TOKEN, False)],
            [(CKA_SIGN, True), (CKA_DECRYPT, True), (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_TOKEN, False)],
            mecha=PyKCS11.Mechanism(CKM_RSA_PKCS_KEY_PAIR_GEN, None))
        # (key, what, iv, ciphertext): data that must decrypt again later.
        self.keys = []
        for token in (False, True):
            k = aes_key(self.s, token, "p11stress-py-%d-%s" % (pid, "token" if token else "session"))
            self.keys.append(self.sample(k, "%s key made at start" % ("token" if token else "session")))
        self.base = len(self.keys)
        self.n = 0

    def sample(self, k, what):
        iv = os.urandom(16)
        ct = self.ld.op("aes-cbc-encrypt", lambda: bytes(self.s.encrypt(k, PLAIN, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv))))
        return (k, what, iv, ct)

    def check(self, entry):
        k, what, iv, ct = entry
        if ct is None:
            return
        r = self.ld.op("decrypt-earlier-data",
                       lambda: bytes(self.s.decrypt(k, ct, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv))),
                       lambda pt: pt == PLAIN)
        if r is None:
            self.ld.errors.append("data encrypted earlier with the %s does not decrypt" % what)
        else:
            self.ld.verified += 1

    def round(self):
        self.n += 1
        ld, s = self.ld, self.s
        k = self.keys[self.n % len(self.keys)][0]
        iv = os.urandom(16)
        ct = ld.op("aes-cbc-encrypt", lambda: bytes(s.encrypt(k, PLAIN, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv))))
        if ct is not None:
            ld.op("aes-cbc-decrypt", lambda: bytes(s.decrypt(k, ct, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv))),
                  lambda pt: pt == PLAIN)
        giv = os.urandom(12)
        gct = ld.op("aes-gcm-encrypt", lambda: bytes(s.encrypt(k, PLAIN, PyKCS11.AES_GCM_Mechanism(giv, b"py", 128))))
        if gct is not None:
            ld.op("aes-gcm-decrypt", lambda: bytes(s.decrypt(k, gct, PyKCS11.AES_GCM_Mechanism(giv, b"py", 128))),
                  lambda pt: pt == PLAIN)
        digest = os.urandom(32)
        sig = ld.op("ecdsa-sign", lambda: bytes(s.sign(self.ec_priv, digest, PyKCS11.Mechanism(CKM_ECDSA, None))))
        if sig is not None:
            ld.op("ecdsa-verify", lambda: s.verify(self.ec_pub, digest, sig, PyKCS11.Mechanism(CKM_ECDSA, None)),
                  lambda r: r is True)
            other = bytes([digest[0] ^ 1]) + digest[1:]

            def tampered():
                try:
                    return s.verify(self.ec_pub, other, sig, PyKCS11.Mechanism(CKM_ECDSA, None))
                except PyKCS11Error as e:
                    return str(e)
            ld.op("ecdsa-verify-tampered", tampered, lambda r: r is False or "CKR_SIGNATURE_INVALID" in str(r))
        if self.n % 4 == 0:
            pss = PyKCS11.RSA_PSS_Mechanism(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32)
            rsig = ld.op("rsa-pss-sign", lambda: bytes(s.sign(self.rsa_priv, PLAIN, pss)))
            if rsig is not None:
                ld.op("rsa-pss-verify", lambda: s.verify(self.rsa_pub, PLAIN, rsig, pss), lambda r: r is True)
            oaep = PyKCS11.RSAOAEPMechanism(CKM_SHA256, CKG_MGF1_SHA256)
            oct_ = ld.op("rsa-oaep-encrypt", lambda: bytes(s.encrypt(self.rsa_pub, digest, oaep)))
            if oct_ is not None:
                ld.op("rsa-oaep-decrypt", lambda: bytes(s.decrypt(self.rsa_priv, oct_, oaep)), lambda r: r == digest)
        if self.n % 15 == 0:
            token = self.n % 30 == 0
            what = "token key made during the run" if token else "session key made during the run"
            name = "generate-token-key" if token else "generate-session-key"
            label = "p11stress-py-%d-%d" % (os.getpid(), self.n)
            nk = ld.op(name, lambda: aes_key(s, token, label))
            if nk is not None:
                self.keys.append(self.sample(nk, what))
            if len(self.keys) > self.base + 4:
                old = self.keys.pop(self.base)
                self.check(old)
                ld.op("destroy-key", lambda: s.destroyObject(old[0]) or True)

    def finish(self):
        for e in self.keys:
            self.check(e)


def phases(path):
    out = [("setup", -(1 << 63))]
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    out.append((parts[0], int(parts[1])))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--stop")
    ap.add_argument("--ready")
    ap.add_argument("--report")
    ap.add_argument("--phases")
    ap.add_argument("--progress", help="rewritten every 200 ms with the number of operations so far")
    ap.add_argument("--duration", type=float, default=0)
    args = ap.parse_args()
    if not args.stop and args.duration <= 0:
        ap.error("give --stop FILE or --duration SEC")
    pin = sys.stdin.readline().rstrip("\r\n")
    if not pin:
        print("p11stress.py: error: no USER PIN on standard input", file=sys.stderr)
        return 2
    lib = PyKCS11.PyKCS11Lib()
    lib.load(args.module)
    labels = {lib.getTokenInfo(sl).label.strip(): sl for sl in lib.getSlotList(tokenPresent=True)}
    ld = Load(args)
    toks = []
    for want in args.token.split(","):
        if want not in labels:
            print("p11stress.py: error: no token labelled %r in %s" % (want, args.module), file=sys.stderr)
            return 1
        toks.append(Token(lib, labels[want], pin, ld))
    pin = None
    start = time.monotonic()
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("%d\n" % os.getpid())
    last = 0.0
    while True:
        now = time.monotonic()
        if args.progress and now - last >= 0.2:
            last = now
            with open(args.progress + ".tmp", "w") as f:
                f.write("%d\n" % len(ld.recs))
            os.replace(args.progress + ".tmp", args.progress)
        if args.stop and os.path.exists(args.stop):
            break
        if args.duration > 0 and time.monotonic() - start >= args.duration:
            break
        for t in toks:
            t.round()
    for t in toks:
        t.finish()
    secs = time.monotonic() - start
    ops, failed = sum(ld.ops.values()), sum(ld.fails.values())
    pid = os.getpid()
    print("p11stress.py %d: %d operations, %d failed, %d ciphertexts from earlier verified (%.1f s)"
          % (pid, ops, failed, ld.verified, secs))
    rep = {"client": "python", "pid": pid, "seconds": round(secs, 3), "ops": ops, "failed": failed,
           "ciphertexts_verified": ld.verified,
           "per_op": {k: {"ops": v, "failed": ld.fails.get(k, 0)} for k, v in sorted(ld.ops.items())},
           "phases": [], "errors": ld.errors}
    ph = phases(args.phases)
    for i, (name, lo) in enumerate(ph):
        hi = ph[i + 1][1] if i + 1 < len(ph) else 1 << 63
        lat = sorted(r[1] for r in ld.recs if lo <= r[0] < hi)
        pf = sum(1 for r in ld.recs if lo <= r[0] < hi and not r[2])
        if not lat and i == 0:
            continue
        p50 = lat[len(lat) // 2] // 1000 if lat else 0
        p99 = lat[len(lat) * 99 // 100] // 1000 if lat else 0
        mx = lat[-1] // 1000 if lat else 0
        print("p11stress.py %d: phase %-14s %8d ops %4d failed  p50 %6d us  p99 %6d us  max %7d us"
              % (pid, name, len(lat), pf, p50, p99, mx))
        rep["phases"].append({"name": name, "ops": len(lat), "failed": pf, "p50_us": p50, "p99_us": p99, "max_us": mx})
    if args.report:
        with open(args.report, "w") as f:
            json.dump(rep, f, indent=2)
    for e in ld.errors:
        print("p11stress.py: %s" % e, file=sys.stderr)
    if failed or ops == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
