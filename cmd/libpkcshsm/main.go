// Command libpkcshsm is the PKCS#11 module of pkcshsm's tokens, built as a
// shared library that applications load like opencryptoki.so:
//
//	go build -buildmode=c-shared -o libpkcshsm.so ./cmd/libpkcshsm
//
// All of it is in tokenlib/cabi; see libpkcshsm(3).
package main

import _ "github.com/pkcshsm/pkcshsm/tokenlib/cabi"

func main() {}
