# -*- coding: utf-8 -*-
# Copyright: pkcshsm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared code of the pkcshsm modules: running the pkcshsm tools on the
managed host, answering their PIN prompts from module parameters over a
pipe, and turning their error and hint lines into module failures.

PINs are only ever written to the tool's standard input, one line per
prompt the tool prints ("Enter the USER PIN for slot N: "); they never go
on the command line, into the environment or into a result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import selectors
import subprocess
import time

# The tool asks for one PIN per token, naming its slot; `pkcshsm keys`
# asks without a slot (the caller says which slot it is).
PIN_PROMPT = re.compile(r"Enter the USER PIN(?: for slot (\d+))?: $")
# A yes/no question (an absent token): the module never says yes for the
# operator; it answers no and the tool aborts with its own message.
YES_NO = re.compile(r"\[y/N\]\? ?$")

# Exit codes of the pkcshsm tools (pkcshsm_mk_change(1) EXIT STATUS).
EXIT_CLASSES = {
    0: "ok",
    1: "internal",
    2: "invalid argument",
    3: "not found",
    4: "failed precondition",
    5: "conflict",
    6: "unavailable",
    7: "permission denied",
    8: "data loss",
    9: "aborted",
    10: "deadline exceeded",
    130: "interrupted",
    143: "interrupted",
}

# Master key types and the reencipher option of each.
PATTERN_OPTIONS = (
    ("ep11_wkvp", "WK", "--ep11-wkvp", 32),
    ("cca_sym_mkvp", "SYM", "--cca-sym-mkvp", 16),
    ("cca_asym_mkvp", "ASYM", "--cca-asym-mkvp", 16),
    ("cca_aes_mkvp", "AES", "--cca-aes-mkvp", 16),
    ("cca_apka_mkvp", "APKA", "--cca-apka-mkvp", 16),
)

COMMON_ARGS = dict(
    root=dict(type="path"),
    bin_dir=dict(type="path"),
    config=dict(type="path"),
    state_dir=dict(type="path"),
    socket=dict(type="path"),
    timeout=dict(type="str"),
)

PIN_ARGS = dict(
    user_pin=dict(type="str", no_log=True),
    user_pins=dict(type="dict", no_log=True),
)

PATTERN_ARGS = dict(
    apqns=dict(type="list", elements="str"),
    ep11_wkvp=dict(type="str"),
    cca_sym_mkvp=dict(type="str"),
    cca_asym_mkvp=dict(type="str"),
    cca_aes_mkvp=dict(type="str"),
    cca_apka_mkvp=dict(type="str"),
)


class ToolError(Exception):
    """A tool ended with a non-zero exit status; msg holds its error and
    hint lines."""

    def __init__(self, msg, rc=None, stdout="", stderr="", error=None, hint=None, cmd=None):
        Exception.__init__(self, msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.error = error
        self.hint = hint
        self.cmd = cmd

    def result(self):
        r = dict(msg=self.msg, rc=self.rc, stdout=self.stdout, stderr=self.stderr)
        if self.error is not None:
            r["error"] = self.error
        if self.hint is not None:
            r["hint"] = self.hint
        if self.rc is not None:
            r["error_class"] = EXIT_CLASSES.get(self.rc, "unknown")
        if self.cmd is not None:
            r["cmd"] = self.cmd
        return r


def normalize_apqn(text):
    """Returns an APQN as the tools print it (CARD.DOMAIN, upper-case hex,
    2 and 4 digits); raises ValueError for anything else."""
    m = re.match(r"^\s*(?:0x)?([0-9a-fA-F]{1,2})\.(?:0x)?([0-9a-fA-F]{1,4})\s*$", text or "")
    if not m:
        raise ValueError("APQN %r is not CARD.DOMAIN in hex (for example 0a.0024, as lszcrypt prints it)" % (text,))
    return "%02X.%04X" % (int(m.group(1), 16), int(m.group(2), 16))


def apqn_list(values):
    out = []
    for v in values or []:
        if not isinstance(v, str):
            raise ValueError("APQN %r is not text: quote it (\"01.0033\"), YAML reads 01.0033 as a number" % (v,))
        for part in re.split(r"[\s,]+", v.strip()):
            if part:
                out.append(normalize_apqn(part))
    return out


def normalize_pattern(text, digits):
    """Returns a pattern as upper-case hex without 0x. The sysfs form of
    the EP11 WK (32 bytes) keeps its first 16 bytes as the tool does."""
    t = (text or "").strip()
    if t.lower().startswith("0x"):
        t = t[2:]
    if not re.match(r"^[0-9a-fA-F]+$", t):
        raise ValueError("pattern %r is not hex" % (text,))
    if len(t) == 2 * digits:
        t = t[:digits]
    if len(t) != digits:
        raise ValueError("pattern %r has %d hex digits, want %d" % (text, len(t), digits))
    return t.upper()


def wanted_patterns(params):
    """The new patterns given in params, by master key type."""
    out = {}
    for opt, mktype, _flag, digits in PATTERN_OPTIONS:
        if params.get(opt):
            out[mktype] = normalize_pattern(params[opt], digits)
    return out


def pattern_argv(params):
    argv = []
    for opt, _mktype, flag, _digits in PATTERN_OPTIONS:
        if params.get(opt):
            argv += [flag, params[opt]]
    return argv


def parse_error(stderr):
    """The tool's `error:` and `hint:` lines (each may continue on indented
    lines)."""
    error, hint = [], []
    cur = None
    for line in (stderr or "").splitlines():
        # A prompt without a newline may precede the tool's line.
        m = re.search(r"(?:^|\b[\w.-]+: )(error|hint): (.*)$", line)
        if m:
            cur = error if m.group(1) == "error" else hint
            cur.append(m.group(2))
        elif cur is not None and line.startswith(" "):
            cur.append(line.strip())
        else:
            cur = None
    return ("\n".join(error) or None), ("\n".join(hint) or None)


class Tools:
    """Runs pkcshsm_mk_change and pkcshsm with the module's paths."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.env = dict(os.environ)
        if p.get("root"):
            self.env["PKCSHSM_ROOT"] = p["root"]
        self.bin_dir = p.get("bin_dir")
        pins = {}
        for slot, pin in (p.get("user_pins") or {}).items():
            try:
                pins[int(slot)] = str(pin)
            except (TypeError, ValueError):
                module.fail_json(msg="user_pins: key %r is not a slot number" % (slot,))
        self.pins = pins
        self.default_pin = p.get("user_pin")

    def path(self, name):
        if self.bin_dir:
            full = os.path.join(self.bin_dir, name)
            if not os.access(full, os.X_OK):
                raise ToolError("%s is not an executable file" % full, hint="set bin_dir to the directory of the pkcshsm tools, or leave it unset to search PATH")
            return full
        found = self.module.get_bin_path(name)
        if not found:
            raise ToolError(
                "%s not found on PATH (%s)" % (name, self.env.get("PATH", "")),
                hint="install pkcshsm on the host, or set bin_dir to the directory of its tools",
            )
        return found

    def global_argv(self, tool):
        p = self.module.params
        argv = []
        if p.get("config"):
            argv += ["--config", p["config"]]
        if tool == "pkcshsm_mk_change":
            if p.get("state_dir"):
                argv += ["--state-dir", p["state_dir"]]
            if p.get("socket"):
                argv += ["--socket", p["socket"]]
            if p.get("timeout"):
                argv += ["--timeout", p["timeout"]]
        return argv

    def pin_for(self, slot):
        if slot is not None and slot in self.pins:
            return self.pins[slot]
        return self.default_pin

    def run(self, tool, args, slot=None, ok_codes=(0,)):
        """Runs tool with args, answering PIN prompts. Returns (rc, stdout,
        stderr); raises ToolError for an exit status not in ok_codes."""
        argv = [self.path(tool)] + self.global_argv(tool) + list(args)
        rc, out, err, missing = self._run(argv, slot)
        if rc not in ok_codes:
            error, hint = parse_error(err)
            if missing is not None:
                hint = "the tool asked for the USER PIN of slot %s: give user_pin, or user_pins with that slot" % missing
            msg = error or ("%s exited with %d" % (tool, rc))
            raise ToolError(msg, rc=rc, stdout=out, stderr=err, error=error, hint=hint, cmd=" ".join(argv[1:]))
        return rc, out, err

    def _run(self, argv, slot):
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, close_fds=True
        )
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        out, err = bytearray(), bytearray()
        pending = ""  # stderr since the last answer, to find prompts
        missing = None
        stdin_open = True
        while sel.get_map():
            for key, _ in sel.select(timeout=1.0):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                if key.data == "out":
                    out += chunk
                    continue
                err += chunk
                pending += chunk.decode("utf-8", "replace")
                if not stdin_open:
                    continue
                m = PIN_PROMPT.search(pending)
                answer = None
                if m:
                    s = int(m.group(1)) if m.group(1) else slot
                    pin = self.pin_for(s)
                    if pin is None:
                        missing = s
                    else:
                        answer = pin.encode("utf-8") + b"\n"
                elif YES_NO.search(pending):
                    answer = b"n\n"
                else:
                    continue
                pending = ""
                try:
                    if answer is None:
                        proc.stdin.close()
                        stdin_open = False
                    else:
                        proc.stdin.write(answer)
                        proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    stdin_open = False
                answer = None
            if proc.poll() is not None and not sel.get_map():
                break
        sel.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except (BrokenPipeError, OSError):
                pass
        rc = proc.wait()
        return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), missing

    def run_json(self, tool, args, slot=None, ok_codes=(0,)):
        rc, out, err = self.run(tool, args, slot=slot, ok_codes=ok_codes)
        try:
            return rc, json.loads(out) if out.strip() else None, err
        except ValueError as e:
            raise ToolError("%s printed no JSON: %s" % (tool, e), rc=rc, stdout=out, stderr=err)

    def list_ops(self):
        """The active operations (list --json)."""
        _rc, ops, _err = self.run_json("pkcshsm_mk_change", ["list", "--json"])
        return ops or []

    def state_dir(self):
        p = self.module.params
        if p.get("state_dir"):
            return p["state_dir"]
        root = self.env.get("PKCSHSM_ROOT") or "/"
        return os.path.join(root, "var/lib/pkcshsm/HSM_MK_CHANGE")

    def history(self):
        """The ended operations (history.jsonl of the state directory,
        pkcshsm_mk_change(1) FILES), oldest first. A line that is not JSON
        (a torn last line) is skipped."""
        name = os.path.join(self.state_dir(), "history.jsonl")
        entries = []
        try:
            with open(name, "rb") as f:
                for line in f:
                    try:
                        e = json.loads(line.decode("utf-8"))
                    except ValueError:
                        continue
                    if isinstance(e, dict) and isinstance(e.get("op"), dict):
                        entries.append(e)
        except (IOError, OSError):
            pass
        return entries

    def verify(self, op_id=None, apqns=None, params=None):
        """Runs verify (see the contract in the module documentation):
        exit 0 ready, exit 4 not ready; returns the JSON object with rc."""
        args = ["verify", "--json"]
        if op_id:
            args += ["--id", op_id]
        else:
            args += ["--apqns", ",".join(apqns or [])] + pattern_argv(params or {})
        rc, res, err = self.run_json("pkcshsm_mk_change", args, ok_codes=(0, 4))
        if not isinstance(res, dict):
            raise ToolError("verify printed no JSON object", rc=rc, stderr=err)
        res["rc"] = rc
        return res


def op_matches(op, apqns, patterns):
    """Whether op changes exactly these APQNs to these patterns."""
    if not isinstance(op, dict):
        return False
    if sorted(op.get("apqns") or []) != sorted(apqns):
        return False
    new = dict((k, str(v).upper()) for k, v in (op.get("new") or {}).items())
    return new == patterns


def op_intersects(op, apqns, patterns):
    """Whether op shares an APQN and a master key type with the wanted
    change (the tool refuses such a second operation)."""
    shared = set(op.get("apqns") or []) & set(apqns)
    types = set((op.get("new") or {}).keys()) & set(patterns.keys())
    return bool(shared) and bool(types)


def cmd_advice(op):
    nxt = op.get("next") or []
    return " or ".join("pkcshsm_mk_change %s --id %s" % (n, op.get("id")) for n in nxt)


def fail_tool(module, e, **extra):
    """Fails the module with the tool's error and hint lines."""
    r = e.result()
    msg = r["msg"]
    if r.get("hint"):
        msg += " (hint: %s)" % r["hint"].replace("\n", "; ")
    r["msg"] = msg
    r.update(extra)
    module.fail_json(**r)


def now():
    return time.time()
