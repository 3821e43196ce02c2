#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pkcshsm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: token_keys_info
short_description: How many keys of each pkcshsm token are under which master key
description:
  - For every initialized token of the host (or the slots given), counts the
    secure keys by the master key verification pattern of each of their
    blobs - C(current) (CKA_IBM_OPAQUE), C(old) (CKA_IBM_OPAQUE_OLD, the
    backup a finalize keeps) and C(reenc) (CKA_IBM_OPAQUE_REENC, present
    during a change) - as C(pkcshsm keys list --json) reads them from the
    blob headers.
  - With new patterns given, also counts the keys whose current blob is
    under none of them (C(slots[].not_new)), so a play can assert that a
    rotation reached every key.
  - Logs in as USER with the PIN given, over standard input. Changes
    nothing.
version_added: "1.0.0"
author:
  - pkcshsm contributors (@pkcshsm)
options:
  slots:
    description: The slots to look at; default every slot C(pkcshsm slots) lists as initialized.
    type: list
    elements: int
extends_documentation_fragment:
  - pkcshsm.hsm.common
  - pkcshsm.hsm.common.patterns
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
"""

EXAMPLES = r"""
- name: Count the keys under each master key
  pkcshsm.hsm.token_keys_info:
    user_pin: "{{ vault_pkcshsm_user_pin }}"
    cca_aes_mkvp: 7DA05B2C85C962E4
  register: keys

- name: Every key is under the new master keys, none has a REENC blob left
  ansible.builtin.assert:
    that:
      - keys.slots | map(attribute='not_new') | sum == 0
      - keys.slots | map(attribute='reenc_keys') | sum == 0
"""

RETURN = r"""
slots:
  description: One entry per token.
  returned: always
  type: list
  elements: dict
  contains:
    slot:
      description: The slot number.
      type: int
    label:
      description: The token label.
      type: str
    keys:
      description: Key objects the USER sees.
      type: int
    secure_keys:
      description: Keys with a secure key blob.
      type: int
    current:
      description: Secure keys by the pattern of their current blob.
      type: dict
      sample: {"7DA05B2C85C962E4": 3}
    old:
      description: Secure keys by the pattern of their CKA_IBM_OPAQUE_OLD blob.
      type: dict
    reenc:
      description: Secure keys by the pattern of their CKA_IBM_OPAQUE_REENC blob.
      type: dict
    reenc_keys:
      description: Secure keys that still carry a REENC blob.
      type: int
    unreadable:
      description: Blobs whose header could not be read.
      type: int
    not_new:
      description: Secure keys whose current blob is under none of the given new patterns.
      type: int
      returned: when patterns are given
totals:
  description: The sums of keys, secure_keys, reenc_keys, unreadable (and not_new) over all slots.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pkcshsm.hsm.plugins.module_utils.pkcshsm import (
    COMMON_ARGS,
    PATTERN_ARGS,
    PIN_ARGS,
    ToolError,
    Tools,
    fail_tool,
    wanted_patterns,
)


def slot_table(tools):
    """The slots `pkcshsm slots` lists (SLOT TYPE TOKEN LABEL STATE ...):
    {slot: (label, state)}."""
    _rc, out, _err = tools.run("pkcshsm", ["slots"])
    table = {}
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) >= 5 and f[0].isdigit():
            table[int(f[0])] = (f[3], f[4])
    return table


def count(keys, patterns):
    r = dict(keys=0, secure_keys=0, current={}, old={}, reenc={}, reenc_keys=0, unreadable=0)
    if patterns:
        r["not_new"] = 0
    wanted = set(patterns.values())
    for k in keys or []:
        r["keys"] += 1
        blobs = k.get("blobs") or {}
        if not blobs:
            continue
        r["secure_keys"] += 1
        for which in ("current", "old", "reenc"):
            b = blobs.get(which)
            if not b:
                continue
            if b.get("error") or not b.get("mkvp"):
                r["unreadable"] += 1
                continue
            pat = str(b["mkvp"]).upper()
            r[which][pat] = r[which].get(pat, 0) + 1
        if blobs.get("reenc"):
            r["reenc_keys"] += 1
        if patterns:
            cur = (blobs.get("current") or {}).get("mkvp")
            if not cur or str(cur).upper() not in wanted:
                r["not_new"] += 1
    return r


def main():
    args = dict(slots=dict(type="list", elements="int"))
    args.update((k, v) for k, v in PATTERN_ARGS.items() if k != "apqns")
    args.update(PIN_ARGS)
    args.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=args, supports_check_mode=True)
    try:
        patterns = wanted_patterns(module.params)
    except ValueError as e:
        module.fail_json(msg=str(e), hint="give the patterns in hex", rc=2)
    tools = Tools(module)
    out = []
    totals = dict(keys=0, secure_keys=0, reenc_keys=0, unreadable=0)
    if patterns:
        totals["not_new"] = 0
    try:
        table = slot_table(tools)
        slots = module.params.get("slots") or sorted(s for s, (_l, st) in table.items() if st == "initialized")
        for slot in slots:
            _rc, keys, _err = tools.run_json("pkcshsm", ["keys", "list", "--slot", str(slot), "--json"], slot=slot)
            r = count(keys, patterns)
            r["slot"] = slot
            r["label"] = table.get(slot, (None, None))[0]
            out.append(r)
            for t in totals:
                totals[t] += r[t]
    except ToolError as e:
        fail_tool(module, e)
    module.exit_json(changed=False, slots=out, totals=totals)


if __name__ == "__main__":
    main()
