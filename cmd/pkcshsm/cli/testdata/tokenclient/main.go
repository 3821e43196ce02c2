// Command tokenclient is a test program: a long-lived process that keeps a
// token library open (with its object cache) and answers commands on
// standard input, one line each, so a test can check what another process
// sees of this process's changes and the other way round.
//
//	tokenclient SLOT        first input line: the USER PIN
//	list                    -> "keys: <label>,<label>..." (sorted)
//	delete LABEL            -> "deleted N"
package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

func main() {
	if err := run(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func run() error {
	slot, err := strconv.Atoi(os.Args[1])
	if err != nil {
		return err
	}
	lib, err := tokenlib.Open(tokenlib.Options{Layout: paths.FromEnv()})
	if err != nil {
		return err
	}
	defer lib.Close()
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return fmt.Errorf("no PIN")
	}
	h, err := lib.OpenSession(tokenlib.SlotID(slot), ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	if err := lib.Login(h, ck.CKU_USER, in.Bytes()); err != nil {
		return err
	}
	fmt.Println("ready")
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "list":
			keys, err := labels(lib, h, nil)
			if err != nil {
				return err
			}
			var ls []string
			for _, k := range keys {
				ls = append(ls, k.label)
			}
			slices.Sort(ls)
			fmt.Println("keys: " + strings.Join(ls, ","))
		case "delete":
			keys, err := labels(lib, h, []tokenlib.Attribute{tokenlib.String(ck.CKA_LABEL, arg)})
			if err != nil {
				return err
			}
			for _, k := range keys {
				if err := lib.DestroyObject(h, k.h); err != nil {
					return err
				}
			}
			fmt.Printf("deleted %d\n", len(keys))
		case "quit":
			return nil
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
	return nil
}

type key struct {
	h     tokenlib.ObjectHandle
	label string
}

func labels(lib *tokenlib.Library, h tokenlib.SessionHandle, tmpl []tokenlib.Attribute) ([]key, error) {
	if err := lib.FindObjectsInit(h, tmpl); err != nil {
		return nil, err
	}
	defer lib.FindObjectsFinal(h)
	var out []key
	for {
		hs, err := lib.FindObjects(h, 100)
		if err != nil {
			return nil, err
		}
		if len(hs) == 0 {
			return out, nil
		}
		for _, o := range hs {
			v, err := lib.GetAttributes(h, o, ck.CKA_LABEL)
			if err != nil {
				return nil, err
			}
			out = append(out, key{o, string(v[0])})
		}
	}
}
