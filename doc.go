// Package pkcshsm is the root of the pkcshsm module: concurrent HSM master
// key change for PKCS#11 tokens on IBM CCA and EP11 crypto adapters, in the
// style of openCryptoki's pkcshsm_mk_change.
//
// The code lives in the sub-packages; see README.md for what works and
// shared/design/ARCHITECTURE.md for the design. This package holds only the
// repository-wide tests, such as the import rules.
package pkcshsm
