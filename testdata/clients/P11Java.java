// P11Java drives libpkcshsm.so through Java's SunPKCS11 provider, as a
// Java application would: signatures with the token keys keytool made
// (SHA256withRSA, RSASSA-PSS, SHA256withECDSA), the same with a session
// RSA key pair, and AES-GCM with a session AES key. Every signature is
// verified with the JDK's own software provider; AES-GCM data must come
// back equal and a changed tag must be refused. Usage:
//
//   java P11Java.java CONFIG RSA_ALIAS EC_ALIAS  < PIN
//
// It prints one "ok NAME" line per check and exits 1 on the first failure.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.security.*;
import java.security.cert.Certificate;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PSSParameterSpec;
import java.util.Arrays;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;

public class P11Java {
    static Provider p11;

    static void check(String name, boolean ok) {
        if (!ok) {
            System.out.println("FAILED " + name);
            System.exit(1);
        }
        System.out.println("ok " + name);
    }

    // sign signs with the token provider and verifies with the JDK's.
    static void sign(String name, String alg, PSSParameterSpec pss, PrivateKey priv, PublicKey pub) throws Exception {
        byte[] msg = ("message for " + name).getBytes("UTF-8");
        Signature s = Signature.getInstance(alg, p11);
        if (pss != null) s.setParameter(pss);
        s.initSign(priv);
        s.update(msg);
        byte[] sig = s.sign();
        Signature v = Signature.getInstance(alg, pss != null ? "SunRsaSign" : (alg.endsWith("ECDSA") ? "SunEC" : "SunRsaSign"));
        if (pss != null) v.setParameter(pss);
        v.initVerify(pub);
        v.update(msg);
        boolean good = v.verify(sig);
        v.initVerify(pub);
        v.update(new byte[] {1, 2, 3});
        check(name + " (" + priv.getClass().getSimpleName() + ")", good && !v.verify(sig));
    }

    public static void main(String[] args) throws Exception {
        char[] pin = new BufferedReader(new InputStreamReader(System.in)).readLine().toCharArray();
        p11 = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(p11);
        KeyStore ks = KeyStore.getInstance("PKCS11", p11);
        ks.load(null, pin);
        Arrays.fill(pin, ' ');
        PSSParameterSpec pss = new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1);

        PrivateKey rsa = (PrivateKey) ks.getKey(args[1], null);
        Certificate rsaCert = ks.getCertificate(args[1]);
        check("token RSA key is an HSM key", rsa != null && !(rsa instanceof java.security.interfaces.RSAPrivateCrtKey));
        sign("token SHA256withRSA", "SHA256withRSA", null, rsa, rsaCert.getPublicKey());
        sign("token RSASSA-PSS", "RSASSA-PSS", pss, rsa, rsaCert.getPublicKey());

        PrivateKey ec = (PrivateKey) ks.getKey(args[2], null);
        Certificate ecCert = ks.getCertificate(args[2]);
        check("token EC key is an HSM key", ec != null && !(ec instanceof java.security.interfaces.ECPrivateKey));
        sign("token SHA256withECDSA", "SHA256withECDSA", null, ec, ecCert.getPublicKey());

        KeyPairGenerator kpg = KeyPairGenerator.getInstance("RSA", p11);
        kpg.initialize(2048);
        KeyPair kp = kpg.generateKeyPair();
        sign("session SHA256withRSA", "SHA256withRSA", null, kp.getPrivate(), kp.getPublic());
        sign("session RSASSA-PSS", "RSASSA-PSS", pss, kp.getPrivate(), kp.getPublic());

        KeyGenerator kg = KeyGenerator.getInstance("AES", p11);
        kg.init(256);
        SecretKey aes = kg.generateKey();
        check("AES key stays in the token", aes.getEncoded() == null);
        byte[] iv = new byte[12];
        new SecureRandom().nextBytes(iv);
        byte[] data = "AES-GCM through SunPKCS11 and the HSM".getBytes("UTF-8");
        Cipher c = Cipher.getInstance("AES/GCM/NoPadding", p11);
        c.init(Cipher.ENCRYPT_MODE, aes, new GCMParameterSpec(128, iv));
        c.updateAAD(new byte[] {9, 9});
        byte[] ct = c.doFinal(data);
        c = Cipher.getInstance("AES/GCM/NoPadding", p11);
        c.init(Cipher.DECRYPT_MODE, aes, new GCMParameterSpec(128, iv));
        c.updateAAD(new byte[] {9, 9});
        check("AES-GCM round trip", Arrays.equals(c.doFinal(ct), data) && ct.length == data.length + 16);
        ct[ct.length - 1] ^= 1;
        c = Cipher.getInstance("AES/GCM/NoPadding", p11);
        c.init(Cipher.DECRYPT_MODE, aes, new GCMParameterSpec(128, iv));
        c.updateAAD(new byte[] {9, 9});
        boolean refused = false;
        try {
            c.doFinal(ct);
        } catch (AEADBadTagException e) {
            refused = true;
        }
        check("AES-GCM refuses a changed tag", refused);
    }
}
