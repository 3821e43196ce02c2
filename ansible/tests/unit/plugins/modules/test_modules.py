# -*- coding: utf-8 -*-
# Copyright: pkcshsm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the pkcshsm.hsm modules against fake pkcshsm tools.

The fakes (written per test into a temporary bin_dir) act out one
scenario: what `list --json` prints, which PIN prompts a command asks and
its exit status, output and error lines. Each fake records its argv and
the lines it read on stdin, so the tests check what the module ran and
that PINs went to stdin only.

Run: python3 -m unittest discover -s ansible/tests/unit -t <dir above
ansible_collections> (scripts/ansible-test.sh sets this up).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys
import tempfile
import unittest
from unittest import mock

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible.errors import AnsibleFilterError

from ansible_collections.pkcshsm.hsm.plugins.filter.change import fingerprint
from ansible_collections.pkcshsm.hsm.plugins.module_utils import pkcshsm as utils
from ansible_collections.pkcshsm.hsm.plugins.modules import mk_change, mk_change_info, token_keys_info

FAKE = r'''#!/usr/bin/python3
import json, os, sys
d = os.environ["FAKE_DIR"]
tool = os.path.basename(sys.argv[0])
args = [a for a in sys.argv[1:]]
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"tool": tool, "argv": args}) + "\n")
sc = json.load(open(os.path.join(d, "scenario.json")))
# The first subcommand word that the scenario knows.
key = None
for i in range(len(args), 0, -1):
    k = tool + " " + " ".join(args[:i])
    if k in sc:
        key = k
        break
if key is None:
    k = tool + " " + args[0] if args else tool
    key = k if k in sc else None
if key is None:
    sys.stderr.write(tool + ": error: unknown command in the fake: %r\n" % args)
    sys.exit(2)
steps = sc[key]
if isinstance(steps, list):
    n = int(open(os.path.join(d, key.replace(" ", "_") + ".n")).read()) if os.path.exists(os.path.join(d, key.replace(" ", "_") + ".n")) else 0
    open(os.path.join(d, key.replace(" ", "_") + ".n"), "w").write(str(n + 1))
    step = steps[min(n, len(steps) - 1)]
else:
    step = steps
for p in step.get("prompts", []):
    sys.stderr.write(p)
    sys.stderr.flush()
    line = sys.stdin.readline()
    with open(os.path.join(d, "stdin.jsonl"), "a") as f:
        f.write(json.dumps({"prompt": p, "line": line}) + "\n")
    if not line:
        sys.stderr.write("\n" + tool + ": error: aborted by user: end of input at the prompt\n" + tool + ": hint: answer on standard input, one line per question\n")
        sys.exit(9)
    if step.get("pin") is not None and line.rstrip("\n") != step["pin"]:
        sys.stderr.write(tool + ": error: failed to log in to slot 2: USER PIN: PIN incorrect\n" + tool + ": hint: check the PIN; wrong PINs are counted and lock the PIN\n")
        sys.exit(7)
out = step.get("stdout", "")
if not isinstance(out, str):
    out = json.dumps(out)
sys.stdout.write(out)
sys.stderr.write(step.get("stderr", ""))
if step.get("history"):
    hd = os.path.join(os.environ["PKCSHSM_ROOT"], "var/lib/pkcshsm/HSM_MK_CHANGE")
    os.makedirs(hd, exist_ok=True)
    with open(os.path.join(hd, "history.jsonl"), "a") as f:
        f.write(json.dumps(step["history"]) + "\n")
sys.exit(step.get("rc", 0))
'''

APQNS = ["01.0033", "02.0033"]
AES = "7DA05B2C85C962E4"
APKA = "E547F69DBBB63E09"


def op(state="REENCIPHERED", ident="WX9jrc", nxt=None, apqns=None, new=None, **kw):
    o = {
        "id": ident,
        "state": state,
        "apqns": apqns or APQNS,
        "new": new or {"AES": AES, "APKA": APKA},
        "slots": [{"id": 2, "label": "cca", "token_type": "cca", "current": {"AES": "80178B9746EA5A0E"}}],
        "next": nxt if nxt is not None else ["finalize", "cancel"],
        "set_loses_keys": False,
    }
    o.update(kw)
    return o


class Exit(Exception):
    pass


class Fail(Exception):
    pass


def exit_json(self, **kw):
    kw.setdefault("changed", False)
    raise Exit(kw)


def fail_json(self, **kw):
    raise Fail(kw)


class ModuleCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pkcshsm-ansible-unit")
        self.bin = os.path.join(self.dir, "bin")
        self.root = os.path.join(self.dir, "root")
        os.makedirs(self.bin)
        os.makedirs(self.root)
        for tool in ("pkcshsm_mk_change", "pkcshsm"):
            p = os.path.join(self.bin, tool)
            with open(p, "w") as f:
                f.write(FAKE)
            os.chmod(p, 0o755)
        self.env = mock.patch.dict(os.environ, {"FAKE_DIR": self.dir})
        self.env.start()
        self.patches = [
            mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json),
        ]
        for p in self.patches:
            p.start()

    def tearDown(self):
        for p in self.patches:
            p.stop()
        self.env.stop()
        shutil.rmtree(self.dir)

    def scenario(self, sc):
        with open(os.path.join(self.dir, "scenario.json"), "w") as f:
            json.dump(sc, f)

    def history(self, *entries):
        hd = os.path.join(self.root, "var/lib/pkcshsm/HSM_MK_CHANGE")
        os.makedirs(hd, exist_ok=True)
        with open(os.path.join(hd, "history.jsonl"), "w") as f:
            for e in entries:
                f.write(json.dumps(e) + "\n")
            f.write('{"torn line')  # a crash mid-append: skipped

    def calls(self):
        try:
            with open(os.path.join(self.dir, "calls.jsonl")) as f:
                return [json.loads(line) for line in f]
        except IOError:
            return []

    def stdin(self):
        try:
            with open(os.path.join(self.dir, "stdin.jsonl")) as f:
                return [json.loads(line) for line in f]
        except IOError:
            return []

    def run_module(self, mod, args, check=False):
        a = dict(dict(bin_dir=self.bin, root=self.root), **args)
        if check:
            a["_ansible_check_mode"] = True
        with mock.patch.object(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": a}))):
            try:
                mod.main()
            except Exit as e:
                return "ok", e.args[0]
            except Fail as e:
                return "failed", e.args[0]
        self.fail("the module returned without exit_json or fail_json")

    def change(self, **kw):
        a = dict(apqns=["01.0033", "2.33"], cca_aes_mkvp=AES.lower(), cca_apka_mkvp="0x" + APKA, user_pin="12345678")
        a.update(kw)
        return a

    def assertNoPinOnArgv(self, *pins):
        for c in self.calls():
            for p in pins:
                self.assertNotIn(p, " ".join(c["argv"]), "a PIN on the command line: %r" % c)


CREATED = "Completed.\n\nMaster key change operation 'WX9jrc' created.\n"


class TestMkChange(ModuleCase):
    def test_reencipher_fresh_answers_each_prompt_with_its_slots_pin(self):
        self.scenario({
            "pkcshsm_mk_change list --json": [{"stdout": []}, {"stdout": [op()]}],
            "pkcshsm_mk_change reencipher": {
                "prompts": ["Enter the USER PIN for slot 2: ", "Enter the USER PIN for slot 4: "],
                "stdout": CREATED,
            },
        })
        st, r = self.run_module(mk_change, self.change(state="reenciphered", user_pin=None, user_pins={"2": "pin-of-2", "4": "pin-of-4"}))
        self.assertEqual(st, "ok", r)
        self.assertTrue(r["changed"])
        self.assertEqual(r["status"], "reenciphered")
        self.assertEqual(r["operation"]["id"], "WX9jrc")
        reenc = [c for c in self.calls() if c["argv"][0] == "reencipher"]
        self.assertEqual(len(reenc), 1)
        self.assertEqual(reenc[0]["argv"], ["reencipher", "--apqns", "01.0033,02.0033", "--cca-aes-mkvp", AES.lower(), "--cca-apka-mkvp", "0x" + APKA])
        self.assertEqual([s["line"] for s in self.stdin()], ["pin-of-2\n", "pin-of-4\n"])
        self.assertNoPinOnArgv("pin-of-2", "pin-of-4")
        self.assertNotIn("pin-of", json.dumps(r))

    def test_reenciphered_already_changes_nothing(self):
        self.scenario({"pkcshsm_mk_change list --json": {"stdout": [op()]}})
        st, r = self.run_module(mk_change, self.change(state="reenciphered"))
        self.assertEqual(st, "ok", r)
        self.assertFalse(r["changed"])
        self.assertEqual(r["status"], "reenciphered")
        self.assertEqual([c["argv"][0] for c in self.calls()], ["list"])

    def test_interrupted_reencipher_is_canceled_then_done_again(self):
        self.scenario({
            "pkcshsm_mk_change list --json": [
                {"stdout": [op(state="REENCIPHERING", nxt=["cancel"])]},
                {"stdout": [op(ident="Nw2Op0")]},
            ],
            "pkcshsm_mk_change cancel": {"prompts": ["Enter the USER PIN for slot 2: "], "stdout": "canceled\n"},
            "pkcshsm_mk_change reencipher": {"prompts": ["Enter the USER PIN for slot 2: "], "stdout": CREATED.replace("WX9jrc", "Nw2Op0")},
        })
        st, r = self.run_module(mk_change, self.change(state="reenciphered"))
        self.assertEqual(st, "ok", r)
        self.assertTrue(r["changed"])
        self.assertEqual([c["argv"][:3] for c in self.calls() if c["argv"][0] != "list"],
                         [["cancel", "--id", "WX9jrc"], ["reencipher", "--apqns", "01.0033,02.0033"]])
        self.assertEqual(r["operation"]["id"], "Nw2Op0")

    def test_finished_change_changes_nothing(self):
        self.scenario({"pkcshsm_mk_change list --json": {"stdout": []}})
        self.history({"at": "x", "outcome": "canceled", "uid": 0, "op": op(ident="Old001")},
                     {"at": "y", "outcome": "finalized", "uid": 0, "op": op()})
        for state in ("reenciphered", "finalized"):
            st, r = self.run_module(mk_change, self.change(state=state))
            self.assertEqual(st, "ok", r)
            self.assertFalse(r["changed"], state)
            self.assertEqual(r["status"], "finalized")
            self.assertEqual(r["operation"]["id"], "WX9jrc")
        # Canceling a finalized change is refused: the new keys are in use.
        st, r = self.run_module(mk_change, self.change(state="canceled"))
        self.assertEqual(st, "failed")
        self.assertIn("was finalized", r["msg"])
        self.assertEqual([c["argv"][0] for c in self.calls()], ["list"] * 3)

    def test_another_operation_on_the_apqns_is_a_conflict(self):
        self.scenario({"pkcshsm_mk_change list --json": {"stdout": [op(ident="Other1", new={"AES": "1111111111111111"})]}})
        st, r = self.run_module(mk_change, self.change(state="reenciphered"))
        self.assertEqual(st, "failed")
        self.assertEqual(r["rc"], 5)
        self.assertIn("already in another master key change operation Other1", r["msg"])
        self.assertIn("pkcshsm_mk_change finalize --id Other1 or pkcshsm_mk_change cancel --id Other1", r["hint"])

    def test_running_command_is_a_conflict(self):
        self.scenario({"pkcshsm_mk_change list --json": {"stdout": [op(running_pid=4711, running="pkcshsm_mk_change finalize")]}})
        st, r = self.run_module(mk_change, self.change(state="finalized"))
        self.assertEqual(st, "failed")
        self.assertEqual(r["rc"], 5)
        self.assertIn("pid 4711", r["msg"])

    def test_wrong_pin_fails_with_the_tools_error_and_hint(self):
        self.scenario({
            "pkcshsm_mk_change list --json": {"stdout": []},
            "pkcshsm_mk_change reencipher": {"prompts": ["Enter the USER PIN for slot 2: "], "pin": "12345678"},
        })
        st, r = self.run_module(mk_change, self.change(state="reenciphered", user_pin="99999999"))
        self.assertEqual(st, "failed")
        self.assertEqual(r["rc"], 7)
        self.assertEqual(r["error_class"], "permission denied")
        self.assertEqual(r["error"], "failed to log in to slot 2: USER PIN: PIN incorrect")
        self.assertEqual(r["hint"], "check the PIN; wrong PINs are counted and lock the PIN")
        self.assertIn("PIN incorrect (hint: check the PIN", r["msg"])
        self.assertNotIn("99999999", json.dumps(r))
        self.assertNoPinOnArgv("99999999")

    def test_missing_pin_names_the_slot(self):
        self.scenario({
            "pkcshsm_mk_change list --json": {"stdout": []},
            "pkcshsm_mk_change reencipher": {"prompts": ["Enter the USER PIN for slot 2: ", "Enter the USER PIN for slot 4: "]},
        })
        st, r = self.run_module(mk_change, self.change(state="reenciphered", user_pin=None, user_pins={2: "12345678"}))
        self.assertEqual(st, "failed")
        self.assertEqual(r["rc"], 9)
        self.assertIn("USER PIN of slot 4", r["hint"])

    def test_check_mode_is_the_dry_run(self):
        self.scenario({
            "pkcshsm_mk_change list --json": {"stdout": []},
            "pkcshsm_mk_change reencipher": {"stdout": "Dry run: all checks passed, nothing was changed.\n"},
        })
        st, r = self.run_module(mk_change, self.change(state="reenciphered"), check=True)
        self.assertEqual(st, "ok", r)
        self.assertTrue(r["changed"])
        self.assertEqual(r["status"], "would-reencipher")
        self.assertIn("Dry run", r["plan"])
        reenc = [c["argv"] for c in self.calls() if c["argv"][0] == "reencipher"]
        self.assertEqual(len(reenc), 1)
        self.assertIn("--dry-run", reenc[0])
        self.assertEqual(self.stdin(), [])

    def test_dry_run_failure_is_reported(self):
        self.scenario({
            "pkcshsm_mk_change list --json": {"stdout": []},
            "pkcshsm_mk_change reencipher": {"rc": 6, "stderr": "pkcshsm_mk_change: error: the daemon is not running: dial unix /run/pkcshsm/admin.sock\npkcshsm_mk_change: hint: start pkcshsmd\n"},
        })
        st, r = self.run_module(mk_change, self.change(state="reenciphered"), check=True)
        self.assertEqual(st, "failed")
        self.assertEqual((r["rc"], r["error_class"]), (6, "unavailable"))
        self.assertEqual(r["msg"], "the daemon is not running: dial unix /run/pkcshsm/admin.sock (hint: start pkcshsmd)")

    def test_finalize_resumes_an_interrupted_finalize(self):
        self.scenario({
            "pkcshsm_mk_change list --json": [{"stdout": [op(state="FINALIZING", nxt=["finalize"])]}, {"stdout": []}],
            "pkcshsm_mk_change finalize": {"prompts": ["Enter the USER PIN for slot 2: "], "history": {"at": "z", "outcome": "finalized", "op": op(state="FINALIZED")}},
        })
        st, r = self.run_module(mk_change, dict(state="finalized", id="WX9jrc", user_pin="12345678"))
        self.assertEqual(st, "ok", r)
        self.assertTrue(r["changed"])
        self.assertEqual([c["argv"] for c in self.calls() if c["argv"][0] == "finalize"], [["finalize", "--id", "WX9jrc"]])
        self.assertEqual(r["operation"]["outcome"], "finalized")

    def test_never_cancel_a_finalizing_operation(self):
        self.scenario({"pkcshsm_mk_change list --json": {"stdout": [op(state="FINALIZING", nxt=["finalize"])]}})
        st, r = self.run_module(mk_change, self.change(state="canceled"))
        self.assertEqual(st, "failed")
        self.assertIn("never cancel", r["hint"])
        self.assertEqual([c["argv"][0] for c in self.calls()], ["list"])

    def test_cancel_without_operation_changes_nothing(self):
        self.scenario({"pkcshsm_mk_change list --json": {"stdout": []}})
        st, r = self.run_module(mk_change, self.change(state="canceled"))
        self.assertEqual(st, "ok", r)
        self.assertFalse(r["changed"])
        self.assertEqual(r["status"], "none")

    def test_bad_input(self):
        self.scenario({"pkcshsm_mk_change list --json": {"stdout": []}})
        for args, want in (
            (self.change(state="reenciphered", apqns=["1.0033.7"]), "is not CARD.DOMAIN"),
            (self.change(state="reenciphered", cca_aes_mkvp="7DA05B2C85C962"), "has 14 hex digits, want 16"),
            (self.change(state="reenciphered", cca_aes_mkvp="7DA05B2C85C962XY"), "is not hex"),
            (dict(state="reenciphered", user_pin="1"), "needs apqns"),
            (dict(state="finalized", id="abc", user_pin="1"), "is not an operation id"),
            (dict(state="canceled", user_pin="1"), "needs id, or apqns"),
        ):
            st, r = self.run_module(mk_change, args)
            self.assertEqual(st, "failed", args)
            self.assertIn(want, r["msg"])
            self.assertEqual(r["rc"], 2)
        self.assertEqual(self.calls(), [])

    def test_missing_tool(self):
        st, r = self.run_module(mk_change, dict(self.change(state="reenciphered"), bin_dir=os.path.join(self.dir, "nowhere")))
        self.assertEqual(st, "failed")
        self.assertIn("is not an executable file", r["msg"])


class TestInfo(ModuleCase):
    def test_verify_not_ready(self):
        v = {"ready": False, "apqns": APQNS, "types": ["AES"], "slots": [{"slot": 2, "token": "cca", "token_type": "cca", "keys": 3, "missing_new": 1, "session_keys_missing_new": 0, "lost": 1, "reasons": ["key 7 has no blob under the new master key"]}], "problems": ["slot 2: 1 key would be lost"], "fix": "pkcshsm_mk_change cancel --id WX9jrc"}
        self.scenario({
            "pkcshsm_mk_change list --json": {"stdout": [op(), op(ident="Other1", apqns=["03.0033"])]},
            "pkcshsm_mk_change verify": {"rc": 4, "stdout": v},
        })
        st, r = self.run_module(mk_change_info, self.change(verify=True))
        self.assertEqual(st, "ok", r)
        self.assertFalse(r["ready"])
        self.assertEqual(r["verify"]["rc"], 4)
        self.assertEqual(r["verify"]["slots"][0]["lost"], 1)
        self.assertEqual(r["operation"]["id"], "WX9jrc")
        self.assertEqual(r["others"], [])
        self.assertEqual([c["argv"] for c in self.calls() if c["argv"][0] == "verify"], [["verify", "--json", "--id", "WX9jrc"]])

    def test_verify_ready_by_apqns(self):
        self.scenario({
            "pkcshsm_mk_change list --json": {"stdout": []},
            "pkcshsm_mk_change verify": {"stdout": {"ready": True, "apqns": APQNS, "slots": [], "problems": []}},
        })
        st, r = self.run_module(mk_change_info, self.change(verify=True))
        self.assertEqual(st, "ok", r)
        self.assertTrue(r["ready"])
        verify = [c["argv"] for c in self.calls() if c["argv"][0] == "verify"]
        self.assertEqual(verify[0][:4], ["verify", "--json", "--apqns", "01.0033,02.0033"])

    def test_verify_error_fails(self):
        self.scenario({
            "pkcshsm_mk_change list --json": {"stdout": []},
            "pkcshsm_mk_change verify": {"rc": 8, "stderr": "pkcshsm_mk_change: error: master key change operation 'WX9jrc' is unreadable\n"},
        })
        st, r = self.run_module(mk_change_info, self.change(verify=True))
        self.assertEqual(st, "failed")
        self.assertEqual((r["rc"], r["error_class"]), (8, "data loss"))

    def test_list_damaged_is_a_failure(self):
        self.scenario({"pkcshsm_mk_change list --json": {"rc": 8, "stdout": [], "stderr": "pkcshsm_mk_change: error: an operation file is unreadable (see above)\n"}})
        st, r = self.run_module(mk_change_info, {})
        self.assertEqual(st, "failed")
        self.assertEqual(r["rc"], 8)


class TestTokenKeys(ModuleCase):
    def test_counts_by_pattern(self):
        def key(h, cur, old=None, reenc=None):
            b = {"current": {"mk_type": "CCA AES", "mkvp": cur}}
            if old:
                b["old"] = {"mk_type": "CCA AES", "mkvp": old}
            if reenc:
                b["reenc"] = {"mk_type": "CCA AES", "mkvp": reenc}
            return {"handle": h, "blobs": b}
        self.scenario({
            "pkcshsm slots": {"stdout": "SLOT  TYPE  TOKEN  LABEL  STATE        SO PIN  USER PIN\n2     CCA   cca    cca    initialized  set     set\n3     CCA   cca2   -      uninitialized  -  -\n"},
            "pkcshsm keys list --slot 2 --json": {
                "prompts": ["Enter the USER PIN: "],
                "stdout": [key(1, AES.lower(), old="80178B9746EA5A0E"), key(2, "80178B9746EA5A0E", reenc=AES), {"handle": 3, "class": "PUBLIC_KEY"}],
            },
        })
        st, r = self.run_module(token_keys_info, dict(user_pins={"2": "2222"}, cca_aes_mkvp=AES))
        self.assertEqual(st, "ok", r)
        s = r["slots"]
        self.assertEqual(len(s), 1, "an uninitialized slot is not listed")
        self.assertEqual((s[0]["slot"], s[0]["label"], s[0]["keys"], s[0]["secure_keys"]), (2, "cca", 3, 2))
        self.assertEqual(s[0]["current"], {AES: 1, "80178B9746EA5A0E": 1})
        self.assertEqual(s[0]["old"], {"80178B9746EA5A0E": 1})
        self.assertEqual(s[0]["reenc"], {AES: 1})
        self.assertEqual((s[0]["reenc_keys"], s[0]["not_new"]), (1, 1))
        self.assertEqual(r["totals"]["not_new"], 1)
        self.assertEqual([x["line"] for x in self.stdin()], ["2222\n"])


class TestUtils(unittest.TestCase):
    def test_parse_error_after_a_prompt(self):
        e, h = utils.parse_error("Enter the USER PIN for slot 2: pkcshsm_mk_change: error: bad\n  slot 2: x\npkcshsm_mk_change: hint: do y\n")
        self.assertEqual((e, h), ("bad\nslot 2: x", "do y"))

    def test_patterns(self):
        self.assertEqual(utils.normalize_pattern("0x" + "ab" * 32, 32), "AB" * 16)  # sysfs WK form
        self.assertEqual(utils.apqn_list(["6.33, 0e.0033", "0x0a.0x24"]), ["06.0033", "0E.0033", "0A.0024"])


class TestFingerprint(unittest.TestCase):
    def test_same_change_in_other_spellings(self):
        a = fingerprint({"apqns": ["01.0033", "02.0033"], "cca_aes_mkvp": AES})
        b = fingerprint({"apqns": ["2.33", "0x01.0033"], "cca_aes_mkvp": "0x" + AES.lower()})
        self.assertEqual(a, b)
        self.assertEqual(a, "01.0033,02.0033 AES=" + AES)

    def test_different_changes_differ(self):
        a = fingerprint({"apqns": ["01.0033", "02.0033"], "cca_aes_mkvp": AES})
        for other in (
            {"apqns": ["01.0033"], "cca_aes_mkvp": AES},
            {"apqns": ["01.0033", "02.0033"], "cca_aes_mkvp": APKA},
            {"apqns": ["01.0033", "02.0033"], "cca_aes_mkvp": AES, "cca_apka_mkvp": APKA},
        ):
            self.assertNotEqual(a, fingerprint(other), other)

    def test_bad_change(self):
        for bad in ("01.0033", {"apqns": [1.0033], "cca_aes_mkvp": AES}, {"apqns": ["01.0033"], "cca_aes_mkvp": "xyz"}):
            with self.assertRaises(AnsibleFilterError):
                fingerprint(bad)


if __name__ == "__main__":
    unittest.main()
