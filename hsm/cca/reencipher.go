package cca

import (
	"context"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// ktc says which key token change verb and algorithm keyword re-encipher
// a layout (host-libraries.md §1.14, from cca_mkchange.c
// cca_reencipher_sec_key): fixed 64-byte DATA tokens CSNBKTC (token
// changed in place, no length), variable-length AES and HMAC tokens
// CSNBKTC2, PKA private tokens CSNDKTC.
var ktc = map[hsm.Layout]struct{ verb, alg string }{
	hsm.LayoutCCADESData:   {"CSNBKTC", "DES"},
	hsm.LayoutCCAAESData:   {"CSNBKTC", "AES"},
	hsm.LayoutCCAAESCipher: {"CSNBKTC2", "AES"},
	hsm.LayoutCCAHMAC:      {"CSNBKTC2", "HMAC"},
	hsm.LayoutCCAECC:       {"CSNDKTC", "ECC"},
	hsm.LayoutCCARSAME:     {"CSNDKTC", "RSA"},
	hsm.LayoutCCARSACRT:    {"CSNDKTC", "RSA"},
}

// Reencipher re-enciphers a token with RTNMK (CURRENT → NEW) or RTCMK
// (OLD → CURRENT). The register the token moves to must be loaded; the
// result must carry that register's pattern, as openCryptoki checks
// ("Re-enciphered key blob is not enciphered by expected new MK").
func (b *Backend) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	bl, err := hsm.DecodeBlob(blob)
	if err != nil {
		return nil, err
	}
	if bl.Mode != apqn.ModeCCA {
		return nil, errclass.New(errclass.InvalidArgument, "APQN %s is CCA, the key is a %s key: %w", q, bl.Mode, hsm.ErrWrongMode)
	}
	k, ok := ktc[bl.Layout]
	if !ok {
		return nil, errclass.New(errclass.InvalidArgument, "no key token change verb for %s tokens: %w", bl.Layout, hsm.ErrBadBlob)
	}
	var out []byte
	var want hsm.Register
	var rule string
	err = b.run(ctx, q, func(where string) error {
		// The registers are read in the selection that runs the verb.
		regs, err := b.lib.registersOf(where, bl.MKType)
		if err != nil {
			return err
		}
		switch d {
		case hsm.ToNew:
			if regs.New.State != apqn.StateFull {
				return errclass.Newh(errclass.FailedPrecondition, "load the new master key completely first",
					"APQN %s: re-encipher to NEW needs the %s NEW register full, it is %s: %w", q, bl.MKType, regs.New.State, hsm.ErrRegisterState)
			}
			if regs.Current.Pattern != bl.Pattern {
				return errclass.New(errclass.FailedPrecondition, "APQN %s: the key's %s master key %s is not the CURRENT one: %w", q, bl.MKType, bl.Pattern, hsm.ErrWrongMK)
			}
			rule, want = "RTNMK", regs.New
		case hsm.FromOld:
			if regs.Old.State != apqn.StateValid {
				return errclass.New(errclass.FailedPrecondition, "APQN %s: re-encipher from OLD needs the %s OLD register valid, it is %s: %w", q, bl.MKType, regs.Old.State, hsm.ErrWrongMK)
			}
			// Where the library reports no OLD pattern (SYM), the verb
			// decides: a token not under OLD fails with 8/48.
			if !regs.Old.Pattern.IsZero() && regs.Old.Pattern != bl.Pattern || bl.Pattern == regs.Current.Pattern {
				return errclass.New(errclass.FailedPrecondition, "APQN %s: the key's %s master key %s is not the OLD one: %w", q, bl.MKType, bl.Pattern, hsm.ErrWrongMK)
			}
			rule, want = "RTCMK", regs.Current
		default:
			return errclass.New(errclass.InvalidArgument, "unknown re-encipher direction %d", d)
		}
		c := newCall(k.verb)
		c.rules(2, rule, k.alg)
		var n, tok *slot
		if k.verb == "CSNBKTC" {
			// A fixed-length DATA token, changed in place: the 64-byte
			// CCA token, or the simulator's 64-byte header and sealed key.
			if len(blob) != dataTokenLen(blob) {
				return errclass.New(errclass.InvalidArgument, "%s token of %d bytes, want %d: %w", bl.Layout, len(blob), dataTokenLen(blob), hsm.ErrBadBlob)
			}
			tok = c.buf(blob, len(blob))
		} else {
			n = c.long(int64(len(blob)))
			tok = c.buf(blob, len(blob))
		}
		if err := b.lib.do(where, c); err != nil {
			return err
		}
		if n != nil && n.long != int64(len(blob)) {
			return errclass.New(errclass.Internal, "%s %s on %s changed the token length from %d to %d", k.verb, rule, where, len(blob), n.long)
		}
		out = append([]byte(nil), tok.data[:len(blob)]...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	info, err := hsm.Inspect(out)
	if err != nil || info.Pattern != want.Pattern || info.KeyType != bl.KeyType || info.Bits != bl.Bits {
		return nil, errclass.New(errclass.Internal, "%s %s on APQN %s returned a token not enciphered by the expected %s master key %s", k.verb, rule, q, bl.MKType, want.Pattern)
	}
	return out, nil
}
