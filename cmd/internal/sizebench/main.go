// Command sizebench is the helper of scripts/bench-size.sh: it fills a
// token with many keys quickly and plays an application on a large token.
// It is a benchmark tool, not installed.
//
//	sizebench create -slot N -tokdir DIR -aes A -ec E [-batch B] < pin
//	sizebench app -slot N -label L [-duration D] [-ready FILE] [-stop FILE] [-no-agent] [-find-only] < pin
//	sizebench sqlref -tokdir DIR -dir NEWDIR [-page P] [-chunk C]
//
// create generates every key with the simulator through the token library
// (as session objects, so each key is a real secure key with the engine's
// attributes) and writes them to the token's store in transactions of
// -batch keys, instead of one durable transaction per key. Labels are
// aes-%07d and ec-%07d (the EC public keys ec-%07d.pub).
//
// app opens the library (with its runtime agent, like any application),
// logs in, finds the key with -label, encrypts 1 KiB with it, and prints
// one JSON line with the times and the peak RSS. With -duration it keeps
// encrypting 1 KiB for that long (or until -stop exists) and reports the
// latency percentiles and the longest call.
//
// sqlref is the plain-SQLite limit of a master key change pass over the
// token in -tokdir (store.PlainRewrite): a database in -dir (made, then
// removed) with as many rows as the token's blob table, of its mean row
// shape, read in pages of -page and rewritten in transactions of -chunk
// (the pass's page and commit sizes), with the store's driver and
// pragmas. It prints one JSON line with the rows, the shape and the
// rewrite's wall and CPU time.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/mkchange"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "sizebench: error: usage: sizebench create|app|sqlref [flags] < pin")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "create":
		err = create(os.Args[2:])
	case "app":
		err = app(os.Args[2:])
	case "sqlref":
		err = sqlref(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sizebench: error:", err)
		os.Exit(1)
	}
}

func readPIN() ([]byte, error) {
	pin, err := bufio.NewReader(os.Stdin).ReadString('\n')
	pin = strings.TrimRight(pin, "\r\n")
	if pin == "" {
		return nil, fmt.Errorf("no USER PIN on standard input (%v)", err)
	}
	return []byte(pin), nil
}

// peakRSS is the process's maximum resident set size in bytes.
func peakRSS() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss * 1024
}

func openLib(noAgent bool) (*tokenlib.Library, error) {
	return tokenlib.Open(tokenlib.Options{Layout: paths.FromEnv(), NoAgent: noAgent, Program: "sizebench"})
}

func login(lib *tokenlib.Library, slot uint, pin []byte) (tokenlib.SessionHandle, error) {
	h, err := lib.OpenSession(tokenlib.SlotID(slot), ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return 0, err
	}
	return h, lib.Login(h, ck.CKU_USER, pin)
}

// probe lists the attribute types of the engine's key objects, learned
// from the first key of each class (the engine gives every key of a class
// the same set).
var probe = func() []ck.Attribute {
	var out []ck.Attribute
	for a := ck.Attribute(0); a < 0x600; a++ {
		out = append(out, a)
	}
	return append(out, ck.CKA_IBM_OPAQUE, ck.CKA_IBM_OPAQUE_REENC, ck.CKA_IBM_OPAQUE_OLD)
}()

type attrReader struct {
	lib   *tokenlib.Library
	h     tokenlib.SessionHandle
	types map[uint][]ck.Attribute // by class
}

// read returns the attributes of session object o as the store keeps them.
func (r *attrReader) read(o tokenlib.ObjectHandle) (map[uint32][]byte, uint, error) {
	cv, err := r.lib.GetAttributes(r.h, o, ck.CKA_CLASS)
	if err != nil {
		return nil, 0, err
	}
	class, _ := tokenlib.DecodeUlong(cv[0])
	types, ok := r.types[class]
	if !ok {
		for _, a := range probe {
			if a == tokenlib.CKA_UNIQUE_ID { // the store's own column
				continue
			}
			if _, err := r.lib.GetAttributes(r.h, o, a); err == nil {
				types = append(types, a)
			}
		}
		r.types[class] = types
	}
	vals, err := r.lib.GetAttributes(r.h, o, types...)
	if err != nil {
		return nil, 0, err
	}
	attrs := make(map[uint32][]byte, len(types))
	for i, a := range types {
		attrs[uint32(a)] = vals[i]
	}
	attrs[uint32(ck.CKA_TOKEN)] = []byte{1}
	return attrs, class, nil
}

func create(args []string) error {
	fs := flag.NewFlagSet("create", flag.ExitOnError)
	slot := fs.Uint("slot", 0, "slot of the token")
	dir := fs.String("tokdir", "", "the token's directory (paths.TokenDir)")
	nAES := fs.Int("aes", 0, "AES-256 keys to make")
	nEC := fs.Int("ec", 0, "EC P-256 key pairs to make")
	batch := fs.Int("batch", 5000, "keys per store transaction")
	start := fs.Int("start", 0, "first key number (to add to a token)")
	distinct := fs.Int("distinct", 0, "generate at most this many keys of each kind and store copies of them (new labels and unique ids, the same blobs) for the rest; 0: every key generated")
	fs.Parse(args)
	pin, err := readPIN()
	if err != nil {
		return err
	}
	began := time.Now()
	lib, err := openLib(true)
	if err != nil {
		return err
	}
	defer lib.Close()
	h, err := login(lib, *slot, pin)
	if err != nil {
		return err
	}
	// The master key summaries are recorded as the library records them,
	// so the token is the one an application would have written.
	st, err := store.Open(*dir, store.Options{Summary: mkchange.Summarize, SummaryAttrs: mkchange.SummaryAttrs})
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()
	dk, err := st.Login(ctx, store.User, pin)
	if err != nil {
		return err
	}
	defer dk.Destroy()
	r := &attrReader{lib: lib, h: h, types: map[uint][]ck.Attribute{}}
	ecParams, _ := tokenlib.ECParams("P-256")
	made := 0
	gen := func(i int, ec bool) ([]*store.Object, error) {
		var hs []tokenlib.ObjectHandle
		if ec {
			label := fmt.Sprintf("ec-%07d", i)
			pub, priv, err := lib.GenerateKeyPair(h, tokenlib.Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
				[]tokenlib.Attribute{tokenlib.Bytes(ck.CKA_EC_PARAMS, ecParams), tokenlib.Bool(ck.CKA_VERIFY, true),
					tokenlib.String(ck.CKA_LABEL, label+".pub")},
				[]tokenlib.Attribute{tokenlib.Bool(ck.CKA_SIGN, true), tokenlib.Bool(ck.CKA_PRIVATE, true),
					tokenlib.Bool(ck.CKA_SENSITIVE, true), tokenlib.String(ck.CKA_LABEL, label)})
			if err != nil {
				return nil, err
			}
			hs = []tokenlib.ObjectHandle{pub, priv}
		} else {
			k, err := lib.GenerateKey(h, tokenlib.Mechanism{Type: ck.CKM_AES_KEY_GEN}, []tokenlib.Attribute{
				tokenlib.Ulong(ck.CKA_VALUE_LEN, 32), tokenlib.Bool(ck.CKA_PRIVATE, true),
				tokenlib.Bool(ck.CKA_ENCRYPT, true), tokenlib.Bool(ck.CKA_DECRYPT, true),
				tokenlib.String(ck.CKA_LABEL, fmt.Sprintf("aes-%07d", i)),
			})
			if err != nil {
				return nil, err
			}
			hs = []tokenlib.ObjectHandle{k}
		}
		var out []*store.Object
		for _, o := range hs {
			attrs, class, err := r.read(o)
			if err != nil {
				return nil, err
			}
			priv, _ := tokenlib.DecodeBool(attrs[uint32(ck.CKA_PRIVATE)])
			out = append(out, &store.Object{Class: class, Private: priv, Attrs: attrs})
			if err := lib.DestroyObject(h, o); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	// copyOf makes key i from generated key t (-distinct): the same
	// attributes but the label.
	copyOf := func(t []*store.Object, i int, ec bool) []*store.Object {
		var out []*store.Object
		for _, o := range t {
			attrs := maps.Clone(o.Attrs)
			label := fmt.Sprintf("aes-%07d", i)
			if ec {
				label = fmt.Sprintf("ec-%07d", i)
				if o.Class == uint(ck.CKO_PUBLIC_KEY) {
					label += ".pub"
				}
			}
			attrs[uint32(ck.CKA_LABEL)] = []byte(label)
			out = append(out, &store.Object{Class: o.Class, Private: o.Private, Attrs: attrs})
		}
		return out
	}
	for _, kind := range []struct {
		n  int
		ec bool
	}{{*nAES, false}, {*nEC, true}} {
		var templates [][]*store.Object
		for i := 0; i < kind.n; i += *batch {
			var objs []*store.Object
			for j := i; j < min(i+*batch, kind.n); j++ {
				if *distinct > 0 && j >= *distinct {
					objs = append(objs, copyOf(templates[j%*distinct], *start+j, kind.ec)...)
					continue
				}
				o, err := gen(*start+j, kind.ec)
				if err != nil {
					return err
				}
				if *distinct > 0 {
					templates = append(templates, copyOf(o, 0, kind.ec))
				}
				objs = append(objs, o...)
			}
			err := st.Batch(ctx, dk, func(tx *store.Tx) error {
				for _, o := range objs {
					if err := tx.Create(o); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			made += len(objs)
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"objects": made, "seconds": time.Since(began).Seconds(), "peak_rss_mb": float64(peakRSS()) / (1 << 20),
	})
}

func app(args []string) error {
	fs := flag.NewFlagSet("app", flag.ExitOnError)
	slot := fs.Uint("slot", 0, "slot of the token")
	label := fs.String("label", "", "label of the AES key to use")
	duration := fs.Duration("duration", 0, "keep encrypting this long")
	ready := fs.String("ready", "", "create this file once the key is found")
	stop := fs.String("stop", "", "stop early when this file exists")
	noAgent := fs.Bool("no-agent", false, "run without the runtime agent")
	findOnly := fs.Bool("find-only", false, "only find the key (any key type), do not encrypt")
	fs.Parse(args)
	pin, err := readPIN()
	if err != nil {
		return err
	}
	t0 := time.Now()
	lib, err := openLib(*noAgent)
	if err != nil {
		return err
	}
	defer lib.Close()
	h, err := lib.OpenSession(tokenlib.SlotID(*slot), ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	tOpen := time.Since(t0)
	tl := time.Now()
	// The login derives the PIN key (Argon2id): its cost is the token's
	// KDF setting, the same for any number of objects.
	if err := lib.Login(h, ck.CKU_USER, pin); err != nil {
		return err
	}
	tLogin := time.Since(tl)
	t1 := time.Now()
	if err := lib.FindObjectsInit(h, []tokenlib.Attribute{tokenlib.String(ck.CKA_LABEL, *label)}); err != nil {
		return err
	}
	hs, err := lib.FindObjects(h, 2)
	if err != nil {
		return err
	}
	if err := lib.FindObjectsFinal(h); err != nil {
		return err
	}
	if len(hs) != 1 {
		return fmt.Errorf("%d keys have label %q, want 1", len(hs), *label)
	}
	tFind := time.Since(t1)
	if *findOnly {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"open_ms": ms(tOpen), "login_ms": ms(tLogin), "find_ms": ms(tFind), "peak_rss_mb": float64(peakRSS()) / (1 << 20),
		})
	}
	plain := make([]byte, 1024)
	out := make([]byte, 1024+16)
	iv := make([]byte, 16)
	encrypt := func() error {
		if err := lib.EncryptInit(h, tokenlib.Mechanism{Type: ck.CKM_AES_CBC_PAD, Param: iv}, hs[0]); err != nil {
			return err
		}
		_, err := lib.Encrypt(h, plain, out)
		return err
	}
	t2 := time.Now()
	if err := encrypt(); err != nil {
		return err
	}
	tEnc := time.Since(t2)
	rep := map[string]any{
		"open_ms": ms(tOpen), "login_ms": ms(tLogin), "find_ms": ms(tFind), "encrypt_1k_ms": ms(tEnc),
		"open_find_ms": ms(tOpen + tFind), "rss_after_find_mb": float64(peakRSS()) / (1 << 20),
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return err
		}
	}
	if *duration > 0 {
		var lat []time.Duration
		failed := 0
		end := time.Now().Add(*duration)
		for time.Now().Before(end) {
			if *stop != "" && len(lat)%64 == 0 {
				if _, err := os.Stat(*stop); err == nil {
					break
				}
			}
			s := time.Now()
			if err := encrypt(); err != nil {
				failed++
			}
			lat = append(lat, time.Since(s))
		}
		slices.Sort(lat)
		pct := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(float64(len(lat))*p))]) }
		rep["ops"], rep["failed"] = len(lat), failed
		if len(lat) > 0 {
			rep["p50_ms"], rep["p99_ms"], rep["max_ms"] = pct(0.50), pct(0.99), ms(lat[len(lat)-1])
			over := 0
			for _, d := range lat {
				if d > 5*time.Millisecond {
					over++
				}
			}
			rep["over_5ms"] = over
		}
	}
	rep["peak_rss_mb"] = float64(peakRSS()) / (1 << 20)
	return json.NewEncoder(os.Stdout).Encode(rep)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sqlref(args []string) error {
	fs := flag.NewFlagSet("sqlref", flag.ExitOnError)
	tokdir := fs.String("tokdir", "", "the token's directory: its blob table gives the row count and shape")
	dir := fs.String("dir", "", "a new directory for the reference database (removed afterwards)")
	page := fs.Int("page", 2000, "rows read per page (mkchange.BatchSize)")
	chunk := fs.Int("chunk", 250, "rows per write transaction (the pass's commit chunk)")
	fs.Parse(args)
	if *tokdir == "" || *dir == "" {
		return fmt.Errorf("sqlref needs -tokdir and -dir")
	}
	ctx := context.Background()
	st, err := store.Open(*tokdir, store.Options{})
	if err != nil {
		return err
	}
	shape, err := st.BlobRowShape(ctx)
	st.Close()
	if err != nil {
		return err
	}
	defer os.RemoveAll(*dir)
	res, err := store.PlainRewrite(ctx, *dir, shape, *page, *chunk)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"rows": res.Rows, "blob_bytes": shape.Blobs, "mk_bytes": shape.Summ, "page": *page, "chunk": *chunk,
		"wall_s": res.Wall.Seconds(), "cpu_s": res.CPU.Seconds(),
		"rows_per_s": float64(res.Rows) / res.Wall.Seconds(), "rows_per_cpu_s": float64(res.Rows) / res.CPU.Seconds(),
		"peak_rss_mb": float64(peakRSS()) / (1 << 20),
	})
}
