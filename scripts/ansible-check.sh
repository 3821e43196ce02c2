#!/usr/bin/env bash
# Static checks and unit tests of the Ansible collection in ansible/
# (pkcshsm.hsm), offline, with Debian's ansible-core, ansible-lint and
# python3-voluptuous:
#
#   1. the modules' unit tests (python3 unittest, fake pkcshsm tools);
#   2. validate-modules, the module check of `ansible-test sanity`
#      (DOCUMENTATION, EXAMPLES, RETURN against the argument specs). It runs
#      the validate.py that ansible-test ships with the system python:
#      `ansible-test sanity` itself builds a virtualenv and installs pinned
#      requirements from PyPI first, which an offline machine cannot;
#   3. ansible-playbook --syntax-check and ansible-lint (production
#      profile) on the playbooks.
#
# Exits non-zero at the first failing check.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
for c in ansible-playbook ansible-lint; do
	command -v $c >/dev/null || { echo "error: $c not found
hint: apt-get install ansible-core ansible-lint python3-voluptuous" >&2; exit 2; }
done
$py -c 'import voluptuous' 2>/dev/null || { echo "error: python3-voluptuous is missing (validate-modules needs it)
hint: apt-get install python3-voluptuous" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-ansible-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
# ansible-test and ansible-lint find a collection by its path:
# .../ansible_collections/NAMESPACE/NAME.
coll=$work/ansible_collections/pkcshsm/hsm
mkdir -p "$(dirname "$coll")"
cp -r "$here/ansible" "$coll"
find "$coll" -name __pycache__ -prune -exec rm -rf {} +
export ANSIBLE_COLLECTIONS_PATH=$work ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=false

echo "==> unit tests"
(cd "$work" && PYTHONPATH=$work $py -W error::ResourceWarning "$coll/tests/unit/plugins/modules/test_modules.py")

echo "==> validate-modules"
vm=$($py -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_util/controller/sanity/validate-modules"))')
version=$(sed -n 's/^version: *//p' "$coll/galaxy.yml")
out=$(cd "$coll" && PYTHONPATH=$work:$vm $py "$vm/validate.py" --format json --arg-spec \
	--collection ansible_collections/pkcshsm/hsm --collection-version "$version" plugins/modules/*.py)
if [ "$out" != "{}" ]; then
	echo "$out" >&2
	echo "error: validate-modules found problems in the modules" >&2
	exit 1
fi
echo "validate-modules: $(ls "$coll"/plugins/modules/*.py | wc -l) modules, no problem"

echo "==> syntax check and ansible-lint"
for p in "$coll"/playbooks/*.yml; do
	ansible-playbook --syntax-check -i localhost, "$p" >/dev/null
done
# The "Unable to load module ... for options validation" warnings: in
# offline mode ansible-lint 6 does not load a collection's own modules; the
# options are checked by validate-modules above and at run time.
set +e
(cd "$coll" && ansible-lint --offline --nocolor playbooks/) >"$work/lint.out" 2>&1
lrc=$?
set -e
grep -v '^WARNING  Unable to \(load\|resolve\)' "$work/lint.out" || true
[ $lrc = 0 ] || { echo "error: ansible-lint failed (exit $lrc)" >&2; exit 1; }
echo "ansible checks passed"
