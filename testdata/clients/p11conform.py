#!/usr/bin/python3
"""p11conform: checks a PKCS#11 module through PyKCS11 (Debian's
python3-pykcs11; run it with /usr/bin/python3) the way a Python application
uses it, and checks results, not only return codes:

  AES-GCM and AES-CBC-PAD round trips (and a tampered GCM tag is refused),
  ECDSA P-256 and RSA-PSS signatures (verified, and refused for other data),
  RSA-OAEP encryption, finding objects by label, getting and setting
  attributes (the new label is read back and found), and wrapping a key with
  an AES key-wrap key, unwrapping it and proving that the unwrapped key
  decrypts what the original encrypted.

  /usr/bin/python3 p11conform.py MODULE TOKEN_LABEL < pin

Prints one "ok NAME" line per check and "p11conform: N checks passed";
exits 1 at the first failure, naming it.
"""

import os
import sys

import PyKCS11
from PyKCS11 import (
    CKA_CLASS, CKA_DECRYPT, CKA_EC_PARAMS, CKA_ENCRYPT, CKA_EXTRACTABLE, CKA_KEY_TYPE, CKA_LABEL,
    CKA_MODULUS_BITS, CKA_PRIVATE, CKA_PUBLIC_EXPONENT, CKA_SENSITIVE, CKA_SIGN, CKA_TOKEN, CKA_UNWRAP,
    CKA_VALUE_LEN, CKA_VERIFY, CKA_WRAP, CKF_RW_SESSION, CKF_SERIAL_SESSION, CKG_MGF1_SHA256, CKK_AES,
    CKM_AES_CBC_PAD, CKM_AES_KEY_GEN, CKM_AES_KEY_WRAP, CKM_ECDSA, CKM_EC_KEY_PAIR_GEN,
    CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_SHA256, CKM_SHA256_RSA_PKCS_PSS, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY,
    CKO_SECRET_KEY, CKU_USER, PyKCS11Error,
)

P256 = bytes.fromhex("06082a8648ce3d030107")
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print("p11conform: FAILED %s %s" % (name, detail), file=sys.stderr)
        sys.exit(1)
    passed += 1
    print("ok", name)


def refused(fn):
    """The CKR name fn raised, or None when it succeeded."""
    try:
        r = fn()
    except PyKCS11Error as e:
        return str(e)
    return None if r is not False else "False"


def aes_key(s, label, extra=()):
    t = [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_VALUE_LEN, 32), (CKA_TOKEN, False),
         (CKA_PRIVATE, True), (CKA_ENCRYPT, True), (CKA_DECRYPT, True), (CKA_LABEL, label)]
    t += list(extra)
    return s.generateKey(t, mecha=PyKCS11.Mechanism(CKM_AES_KEY_GEN, None))


def main():
    if len(sys.argv) != 3:
        print("usage: p11conform.py MODULE TOKEN_LABEL < pin", file=sys.stderr)
        return 2
    module, want = sys.argv[1], sys.argv[2]
    pin = sys.stdin.readline().rstrip("\r\n")
    if not pin:
        print("p11conform: error: no USER PIN on standard input", file=sys.stderr)
        return 2
    lib = PyKCS11.PyKCS11Lib()
    lib.load(module)
    slot = None
    for sl in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(sl).label.strip() == want:
            slot = sl
    check("token-found", slot is not None, want)
    s = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
    s.login(pin, CKU_USER)
    data = bytes(range(256)) * 4 + b"tail"  # not a block multiple

    k = aes_key(s, "p11conform-aes")
    iv = bytes(range(16))
    ct = bytes(s.encrypt(k, data, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv)))
    check("aes-cbc-pad-length", len(ct) == (len(data) // 16 + 1) * 16, str(len(ct)))
    pt = bytes(s.decrypt(k, ct, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv)))
    check("aes-cbc-pad-roundtrip", pt == data)
    other = bytes(s.decrypt(k, ct, PyKCS11.Mechanism(CKM_AES_CBC_PAD, bytes(16))))
    check("aes-cbc-pad-iv-matters", other[16:] == data[16:] and other[:16] != data[:16])

    giv = bytes(range(12))
    gcm = PyKCS11.AES_GCM_Mechanism(giv, b"header", 128)
    gct = bytes(s.encrypt(k, data, gcm))
    check("aes-gcm-length", len(gct) == len(data) + 16, str(len(gct)))
    check("aes-gcm-roundtrip", bytes(s.decrypt(k, gct, PyKCS11.AES_GCM_Mechanism(giv, b"header", 128))) == data)
    bad = bytearray(gct)
    bad[-1] ^= 1
    err = refused(lambda: s.decrypt(k, bytes(bad), PyKCS11.AES_GCM_Mechanism(giv, b"header", 128)))
    check("aes-gcm-tampered-tag-refused", err is not None and "CKR_OK" not in err, str(err))
    err = refused(lambda: s.decrypt(k, gct, PyKCS11.AES_GCM_Mechanism(giv, b"other", 128)))
    check("aes-gcm-wrong-aad-refused", err is not None, str(err))

    pub, priv = s.generateKeyPair(
        [(CKA_EC_PARAMS, P256), (CKA_VERIFY, True), (CKA_TOKEN, False), (CKA_LABEL, "p11conform-ec")],
        [(CKA_SIGN, True), (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_TOKEN, False), (CKA_LABEL, "p11conform-ec")],
        mecha=PyKCS11.Mechanism(CKM_EC_KEY_PAIR_GEN, None))
    digest = bytes([7]) * 32
    sig = bytes(s.sign(priv, digest, PyKCS11.Mechanism(CKM_ECDSA, None)))
    check("ecdsa-signature-length", len(sig) == 64, str(len(sig)))
    check("ecdsa-verifies", s.verify(pub, digest, sig, PyKCS11.Mechanism(CKM_ECDSA, None)))
    err = refused(lambda: s.verify(pub, bytes([8]) * 32, sig, PyKCS11.Mechanism(CKM_ECDSA, None)))
    check("ecdsa-other-digest-refused", err is not None, str(err))

    rpub, rpriv = s.generateKeyPair(
        [(CKA_MODULUS_BITS, 2048), (CKA_PUBLIC_EXPONENT, (1, 0, 1)), (CKA_VERIFY, True), (CKA_ENCRYPT, True),
         (CKA_TOKEN, False), (CKA_LABEL, "p11conform-rsa")],
        [(CKA_SIGN, True), (CKA_DECRYPT, True), (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_TOKEN, False),
         (CKA_LABEL, "p11conform-rsa")],
        mecha=PyKCS11.Mechanism(CKM_RSA_PKCS_KEY_PAIR_GEN, None))
    pss = PyKCS11.RSA_PSS_Mechanism(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32)
    rsig = bytes(s.sign(rpriv, data, pss))
    check("rsa-pss-signature-length", len(rsig) == 256, str(len(rsig)))
    check("rsa-pss-verifies", s.verify(rpub, data, rsig, pss))
    err = refused(lambda: s.verify(rpub, data + b"x", rsig, pss))
    check("rsa-pss-other-data-refused", err is not None, str(err))
    rsig2 = bytes(s.sign(rpriv, data, pss))
    check("rsa-pss-randomised", rsig2 != rsig and s.verify(rpub, data, rsig2, pss))

    # SoftHSMv2 2.6 knows OAEP with SHA-1 only: P11CONFORM_OAEP=sha1 for it.
    if os.environ.get("P11CONFORM_OAEP") == "sha1":
        oaep = PyKCS11.RSAOAEPMechanism(PyKCS11.CKM_SHA_1, PyKCS11.CKG_MGF1_SHA1)
    else:
        oaep = PyKCS11.RSAOAEPMechanism(CKM_SHA256, CKG_MGF1_SHA256)
    secret = b"an OAEP secret of 32 bytes......"
    oct1 = bytes(s.encrypt(rpub, secret, oaep))
    oct2 = bytes(s.encrypt(rpub, secret, oaep))
    check("rsa-oaep-length-and-randomised", len(oct1) == 256 and oct1 != oct2)
    check("rsa-oaep-roundtrip", bytes(s.decrypt(rpriv, oct1, oaep)) == secret)

    found = s.findObjects([(CKA_LABEL, "p11conform-ec")])
    classes = sorted(s.getAttributeValue(o, [CKA_CLASS])[0] for o in found)
    check("find-by-label", classes == sorted([CKO_PUBLIC_KEY, CKO_PRIVATE_KEY]), str(classes))
    check("find-by-class-and-label",
          [o.value() for o in s.findObjects([(CKA_CLASS, CKO_SECRET_KEY), (CKA_LABEL, "p11conform-aes")])] == [k.value()])
    check("find-nothing", s.findObjects([(CKA_LABEL, "p11conform-no-such-object")]) == [])

    label, vlen, enc, sens = s.getAttributeValue(k, [CKA_LABEL, CKA_VALUE_LEN, CKA_ENCRYPT, CKA_SENSITIVE])
    check("get-attributes", label == "p11conform-aes" and vlen == 32 and enc is True, str((label, vlen, enc, sens)))
    s.setAttributeValue(k, [(CKA_LABEL, "p11conform-renamed")])
    check("set-attribute-read-back", s.getAttributeValue(k, [CKA_LABEL])[0] == "p11conform-renamed")
    check("set-attribute-found-by-new-label",
          [o.value() for o in s.findObjects([(CKA_LABEL, "p11conform-renamed")])] == [k.value()] and
          s.findObjects([(CKA_LABEL, "p11conform-aes")]) == [])

    kek = aes_key(s, "p11conform-kek", [(CKA_WRAP, True), (CKA_UNWRAP, True)])
    movable = aes_key(s, "p11conform-movable", [(CKA_EXTRACTABLE, True)])
    mct = bytes(s.encrypt(movable, data, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv)))
    wrapped = bytes(s.wrapKey(kek, movable, PyKCS11.Mechanism(CKM_AES_KEY_WRAP, None)))
    check("wrap-length", len(wrapped) == 40, str(len(wrapped)))
    back = s.unwrapKey(kek, wrapped, [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_TOKEN, False),
                                      (CKA_DECRYPT, True), (CKA_LABEL, "p11conform-unwrapped")],
                       PyKCS11.Mechanism(CKM_AES_KEY_WRAP, None))
    check("unwrapped-key-decrypts", bytes(s.decrypt(back, mct, PyKCS11.Mechanism(CKM_AES_CBC_PAD, iv))) == data)
    bad = bytearray(wrapped)
    bad[3] ^= 1
    err = refused(lambda: s.unwrapKey(kek, bytes(bad), [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES),
                                                         (CKA_TOKEN, False)], PyKCS11.Mechanism(CKM_AES_KEY_WRAP, None)))
    check("unwrap-tampered-refused", err is not None, str(err))

    s.logout()
    s.closeSession()
    print("p11conform: %d checks passed" % passed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
