# SPDX-License-Identifier: Apache-2.0
"""Batched map writes: a generation read back from the kernel is the
compiled policy, whether the kernel batched the writes or the writer fell
back to one update per entry; removal leaves nothing behind."""
from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from ipaddress import IPv4Network, IPv6Network

import pytest

from guard.kernel import abi
from guard.kernel import libbpf
from guard.kernel.objects import GuardObjects, PinLayout, remove_pins
from guard.policy.compile import PortRule, compile_policy
from guard.kernel.maps import PORT_RULE_SLOTS, Maps
from guard.policy.load import parse_policies

RULES = 600


def policy_text() -> str:
    lines = ["apiVersion: egress-guard/v1", "kind: EgressPolicy", "metadata:", "  name: batch",
             "spec:", "  egress:",
             "    - name: wide", "      action: log", "      to:", "        - cidr: 10.0.0.0/8",
             "        - cidr: \"2001:db8::/32\"", "          ports: [53]"]
    for i in range(RULES):
        lines += [f"    - name: h{i}", "      action: block", "      to:",
                  f"        - cidr: 10.{i // 256}.{i % 256}.1/32", "          ports: [443, 80]"]
    lines += ["  exec:", "    - name: x", "      action: kill", "      match: {names: [nc]}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def objects():
    objs = GuardObjects()
    yield objs
    objs.close()


PREFIX_MAPS = (("eg_cidr4", abi.Lpm4Key, IPv4Network), ("eg_cidr6", abi.Lpm6Key, IPv6Network),
               ("eg_host4", abi.Host4Key, IPv4Network))


def read_back(fds: dict[str, int], policy_id: int):
    """network -> port rules of one generation, from the kernel's maps."""
    tables = {}
    for name, key_type, network in PREFIX_MAPS:
        for key in libbpf.map_keys(fds[name], key_type):
            if key.policy_id != policy_id:
                continue
            span = abi.RuleSpan()
            assert libbpf.map_lookup(fds[name], key, span)
            rules = []
            for slot in range(span.first, span.first + span.count):
                rule = abi.PortRule()
                libbpf.map_lookup(fds["eg_port_rules"], ctypes.c_uint32(slot), rule)
                rules.append(PortRule(rule.port_lo, rule.port_hi, abi.Proto(rule.proto),
                                      abi.Action(rule.action), rule.rule_id))
            address = int.from_bytes(bytes(key.addr), "big")
            prefixlen = key.prefixlen - 32 if name != "eg_host4" else 32
            tables[network((address, prefixlen))] = tuple(rules)
    return tables


def entries_by_map(fds: dict[str, int], policy_id: int) -> dict[str, int]:
    """map -> entries of one generation, for the prefix and exec maps."""
    return {name: sum(key.policy_id == policy_id for key in libbpf.map_keys(fds[name], key_type))
            for name, key_type in [(name, key_type) for name, key_type, _ in PREFIX_MAPS]
            + [("eg_exec_rules", abi.ExecKey)]}


def entries_of(fds: dict[str, int], policy_id: int) -> int:
    return sum(entries_by_map(fds, policy_id).values())


@pytest.mark.parametrize("mapped", [True, False], ids=["rules copied in", "rules via bpf()"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one by one"])
def test_a_generation_reads_back_as_compiled(objects, monkeypatch, batched, mapped):
    if not batched:
        def refuse(*_args):
            raise libbpf.BatchError(errno.EINVAL, "bpf_map_update_batch", 0)
        monkeypatch.setattr(libbpf, "map_update_batch", refuse)
        monkeypatch.setattr(libbpf, "map_delete_batch", refuse)
    [policy] = parse_policies(policy_text(), "batch.yaml")
    compiled = compile_policy(policy)
    maps = Maps(objects.map_fds)
    # eg_port_rules is mappable (BPF_F_MMAPABLE); without the mapping (a map
    # pinned by an older agent) its rules go through bpf() like the rest
    assert maps._port_rules is not None
    if not mapped:
        maps.close()
    policy_id = 0x0700 + batched * 2 + mapped
    maps.install_policy(policy_id, compiled)
    try:
        assert read_back(objects.map_fds, policy_id) == {**compiled.v4, **compiled.v6}
        # the hosts in the hash map, 10.0.0.0/8 and 2001:db8::/32 in the tries
        assert entries_by_map(objects.map_fds, policy_id) == {
            "eg_host4": RULES, "eg_cidr4": 1, "eg_cidr6": 1, "eg_exec_rules": 1}
    finally:
        maps.remove_policy(policy_id)
    assert entries_of(objects.map_fds, policy_id) == 0
    assert maps.installed == []


def test_removal_steps_over_entries_already_gone(objects):
    [policy] = parse_policies(policy_text(), "batch.yaml")
    maps = Maps(objects.map_fds)
    maps.install_policy(0x0800, compile_policy(policy))
    key = abi.Host4Key(policy_id=0x0800)
    key.addr[:] = bytes([10, 0, 7, 1])
    assert libbpf.map_delete(objects.map_fds["eg_host4"], key)  # someone else took one
    maps.remove_policy(0x0800)
    assert entries_of(objects.map_fds, 0x0800) == 0


# --- IPv4 prefixes written ahead (Maps.prestage) --------------------------------------

HOSTS = 1500


def hosts_policy(first_octet: int = 10, prefixlen: int = 32):
    """A program's policy: HOSTS host rules of one shape, read by the fast
    reader (or as many /24 networks)."""
    lines = ["apiVersion: egress-guard/v1", "kind: EgressPolicy", "metadata:", "  name: hosts",
             "spec:", "  egress:"]
    for i in range(HOSTS):
        lines += [f"    - name: h{i}", "      action: block", "      to:",
                  f"        - cidr: {first_octet}.{i // 256}.{i % 256}.{int(prefixlen == 32)}/{prefixlen}",
                  "          ports: [443]"]
    seen = []
    [policy] = parse_policies("\n".join(lines) + "\n", "hosts.yaml",
                              early=lambda values, prefixlens: seen.append((values, prefixlens)))
    return compile_policy(policy), seen


def free_slots(maps: Maps) -> bool:
    """Every eg_port_rules slot is free again."""
    first = maps._slots.take(PORT_RULE_SLOTS)
    maps._slots.give(first, PORT_RULE_SLOTS)
    return True


@pytest.mark.parametrize("prefixlen, map_name", [(32, "eg_host4"), (24, "eg_cidr4")])
def test_prestaged_prefixes_are_what_the_install_writes(objects, prefixlen, map_name):
    compiled, [(values, prefixlens)] = hosts_policy(prefixlen=prefixlen)
    maps = Maps(objects.map_fds)
    maps.prestage(0x0900, values, prefixlens)
    assert maps._prestaged.map_name == map_name
    maps.install_policy(0x0900, compiled)
    try:
        assert maps._prestaged is None   # taken, not written again
        assert read_back(objects.map_fds, 0x0900) == {**compiled.v4, **compiled.v6}
        assert entries_by_map(objects.map_fds, 0x0900)[map_name] == HOSTS
        assert entries_of(objects.map_fds, 0x0900) == HOSTS
    finally:
        maps.remove_policy(0x0900)
    assert entries_of(objects.map_fds, 0x0900) == 0 and free_slots(maps)


def test_prestaged_prefixes_another_policy_turns_out_to_have_are_removed(objects):
    compiled, _seen = hosts_policy()
    _other, [(values, prefixlens)] = hosts_policy(first_octet=11)
    maps = Maps(objects.map_fds)
    maps.prestage(0x0a00, values, prefixlens)
    maps.install_policy(0x0a00, compiled)
    try:
        assert read_back(objects.map_fds, 0x0a00) == {**compiled.v4, **compiled.v6}
        assert entries_of(objects.map_fds, 0x0a00) == HOSTS   # none of 11.x left
    finally:
        maps.remove_policy(0x0a00)
    assert entries_of(objects.map_fds, 0x0a00) == 0 and free_slots(maps)


def test_prestaged_prefixes_no_install_takes_are_dropped(objects):
    _compiled, [(values, prefixlens)] = hosts_policy()
    maps = Maps(objects.map_fds)
    maps.prestage(0x0b00, values, prefixlens)
    maps.drop_prestaged()
    assert entries_of(objects.map_fds, 0x0b00) == 0 and free_slots(maps)
    maps.prestage(0x0b00, values[:100], prefixlens[:100])   # small lists: not worth a thread
    assert maps._prestaged is None


# --- eg_port_rules pinned by an agent from before it was mappable --------------------

def _array_map_without_mmap(name: str, value_size: int, max_entries: int) -> int:
    """A map as an older agent pinned it: eg_port_rules without BPF_F_MMAPABLE
    (libbpf's bpf_map_create, its public low-level API)."""
    create = libbpf.lib().bpf_map_create
    create.restype = ctypes.c_int
    create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                       ctypes.c_uint32, ctypes.c_void_p]
    fd = create(2, name.encode(), 4, value_size, max_entries, None)   # BPF_MAP_TYPE_ARRAY
    if fd < 0:
        raise libbpf.LibbpfError(-fd, f"create {name}")
    return fd


@pytest.fixture
def private_bpffs(tmp_path):
    """A bpf file system of this test's own, unmounted after."""
    mount_point = tmp_path / "bpffs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        remove_pins(mount_point / "egress-guard")
        subprocess.run(["umount", str(mount_point)], check=True)


def test_port_rules_pinned_unmappable_are_written_through_bpf(private_bpffs):
    """An agent adopting an older installation's eg_port_rules (made without
    BPF_F_MMAPABLE) cannot map it, and writes its rules through bpf()."""
    pin_dir = private_bpffs / "egress-guard"
    PinLayout(pin_dir).make()
    fd = _array_map_without_mmap("eg_port_rules", abi.PORT_RULE.size, PORT_RULE_SLOTS)
    try:
        assert libbpf.lib().bpf_obj_pin(fd, str(pin_dir / "maps" / "eg_port_rules").encode()) == 0
    finally:
        os.close(fd)
    adopted = GuardObjects(pin_dir=pin_dir)
    try:
        assert adopted.adopted
        maps = Maps(adopted.map_fds)
        assert maps._port_rules is None
        [policy] = parse_policies(policy_text(), "batch.yaml")
        compiled = compile_policy(policy)
        maps.install_policy(0x0c00, compiled)
        try:
            assert read_back(adopted.map_fds, 0x0c00) == {**compiled.v4, **compiled.v6}
        finally:
            maps.remove_policy(0x0c00)
        assert entries_of(adopted.map_fds, 0x0c00) == 0
    finally:
        adopted.close()


# --- generations written before eg_host4 --------------------------------------------

def test_hosts_an_older_agent_wrote_into_the_trie_are_still_enforced(objects, monkeypatch):
    """An agent from before eg_host4 put hosts (/32) in eg_cidr4. Adopted, such
    a generation stays in force until the next switch; the programs try
    eg_host4 first and then the trie, so its hosts are still judged."""
    from guard.demo.sandbox import TempCgroup

    from .conftest import try_connect

    def into_the_trie(policy_id, table, spans):
        keys = Maps._lpm_keys(policy_id, table.version, table.addresses, table.prefixlens)
        return [(f"eg_cidr{table.version}", keys, spans, len(table))]
    monkeypatch.setattr(Maps, "_prefix_writes", staticmethod(into_the_trie))
    [policy] = parse_policies(
        "apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata: {name: older}\n"
        "spec:\n  defaultAction: allow\n  egress:\n"
        "    - {name: host, action: block, to: [{cidr: 127.0.0.7/32, ports: [29071]}]}\n"
        "    - {name: net, action: block, to: [{cidr: 127.0.0.0/8, ports: [29072]}]}\n",
        "older.yaml")
    maps = Maps(objects.map_fds)
    policy_id = 0x0d00
    maps.install_policy(policy_id, compile_policy(policy))
    slot = 3
    try:
        assert entries_by_map(objects.map_fds, policy_id) == {
            "eg_cidr4": 2, "eg_cidr6": 0, "eg_host4": 0, "eg_exec_rules": 0}
        maps.set_slot(slot, policy_id)
        with TempCgroup("egress-guard-test") as cg:
            objects.attach_cgroup(str(cg.path), cg.id)
            try:
                maps.guard(cg.id, cg.cgroup.level, slot)
                # the host's own rule, and the /8's rule through the host's entry
                assert try_connect(cg, "127.0.0.7", 29071) == "EPERM"
                assert try_connect(cg, "127.0.0.7", 29072) == "EPERM"
                assert try_connect(cg, "127.0.0.8", 29071) != "EPERM"
            finally:
                maps.unguard(cg.id)
                objects.detach_cgroup(cg.id)
    finally:
        maps.set_slot(slot, 0)
        maps.remove_policy(policy_id)
    assert entries_of(objects.map_fds, policy_id) == 0


# --- what lets a connect skip lookups (bpf/sock_addr.bpf.c, issue 16) --------------------

@pytest.mark.parametrize("targets,families", [
    (["10.0.0.0/8"], abi.EgressFamilies.IPV4),
    (["\"2001:db8::/32\""], abi.EgressFamilies.IPV6),
    (["10.0.0.1/32", "\"2001:db8::1/128\""], abi.EgressFamilies.IPV4 | abi.EgressFamilies.IPV6),
    ([], 0),
], ids=["ipv4", "ipv6", "both", "no rules"])
def test_a_policy_says_which_families_have_rules(objects, targets, families):
    """A connect of a family the policy has no rules for looks none up."""
    egress = "".join(f"    - name: r{i}\n      action: block\n      to:\n"
                     f"        - cidr: {target}\n" for i, target in enumerate(targets))
    text = ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: fam\n"
            "spec:\n  defaultAction: log\n" + (f"  egress:\n{egress}" if egress
                                                 else "  egress: []\n"))
    [policy] = parse_policies(text, "families.yaml")
    maps = Maps(objects.map_fds)
    maps.install_policy(0x0900, compile_policy(policy))
    try:
        config = abi.PolicyConfig()
        assert libbpf.map_lookup(objects.map_fds["eg_policies"], ctypes.c_uint32(0x0900), config)
        assert config.egress_families == families
    finally:
        maps.remove_policy(0x0900)


def test_connects_look_up_process_verdicts_once_one_exists(objects, monkeypatch):
    """Until a detection refuses a process, no connect or fork looks its
    verdict up; the flag is in the config before the first entry is."""
    maps = Maps(objects.map_fds)
    fds = objects.map_fds
    config = abi.Config()
    maps._write_config()
    assert libbpf.map_lookup(fds["eg_config"], ctypes.c_uint32(0), config)
    assert not config.flags & abi.ConfigFlags.PROC_VERDICTS
    written = []
    real_update = libbpf.map_update

    def update(fd, key, value):
        if fd == fds["eg_proc_verdicts"]:
            seen = abi.Config()
            libbpf.map_lookup(fds["eg_config"], ctypes.c_uint32(0), seen)
            written.append(bool(seen.flags & abi.ConfigFlags.PROC_VERDICTS))
        return real_update(fd, key, value)
    monkeypatch.setattr(libbpf, "map_update", update)
    try:
        maps.block_process(os.getpid(), 12345)
        maps.block_process(os.getpid() + 1, 12345)
    finally:
        monkeypatch.undo()
        for tgid in (os.getpid(), os.getpid() + 1):
            libbpf.map_delete(fds["eg_proc_verdicts"], ctypes.c_uint32(tgid))
    assert written == [True, True]
    assert libbpf.map_lookup(fds["eg_config"], ctypes.c_uint32(0), config)
    assert config.flags & abi.ConfigFlags.PROC_VERDICTS
    # an agent that adopts these maps keeps the flag with the rest of the config
    adopter = Maps(fds)
    adopter.adopt()
    adopter._write_config()
    assert libbpf.map_lookup(fds["eg_config"], ctypes.c_uint32(0), config)
    assert config.flags & abi.ConfigFlags.PROC_VERDICTS
