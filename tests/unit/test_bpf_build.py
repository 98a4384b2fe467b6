# SPDX-License-Identifier: Apache-2.0
"""bpf/ builds for every architecture it has kernel types for (the host's and
arm64 at least), and every build declares the same maps.

The objects are built into temporary directories with `make -C bpf OUT=...
ARCH=...`, never into guard/objects (the kernel tests load those). No root
and no BPF-capable kernel needed: only make, clang and bpftool, without which
this module skips (fails under GUARD_REQUIRE_KERNEL=1).

What the loader relies on and this checks: a map shared between objects by
name (bpf_map__reuse_fd) has one definition everywhere, on every
architecture; and each object declares exactly the maps its programs use
(bpf/lib/*.h: a header owns its maps, so an object carries no stranger's).
"""
from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from guard.kernel.libbpf import LibbpfError
from guard.kernel.objects import GuardObjects, object_path, objects_dir

from ..conftest import REQUIRE_KERNEL, ROOT

BPF_DIR = ROOT / "bpf"
SOURCES = sorted(p.name[: -len(".bpf.c")] for p in BPF_DIR.glob("*.bpf.c"))
# every architecture with committed kernel types: bpf/include/<arch>/vmlinux.h
ARCHES = sorted(p.parent.name for p in (BPF_DIR / "include").glob("*/vmlinux.h"))
HOST_ARCH = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
# probes.bpf.o is loaded program by program by guard/cli/doctor.py
PROBES = "probes"

EM_BPF = 247
SHT_SYMTAB, SHT_REL = 2, 9
SHF_EXECINSTR = 0x4
STT_OBJECT = 1


def _missing_tools() -> list[str]:
    # the Makefile takes the newest clang-NN, else plain clang
    clang = any(shutil.which(f"clang-{v}") for v in (19, 18, 17, 16, 15)) or shutil.which("clang")
    missing = [] if clang else ["clang"]
    return missing + [tool for tool in ("make", "bpftool") if not shutil.which(tool)]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    missing = _missing_tools()
    if missing:
        message = "building and inspecting the BPF objects needs " + ", ".join(missing)
        if REQUIRE_KERNEL:
            pytest.fail(message)
        pytest.skip(message)
    out = {}
    for arch in ARCHES:
        directory = tmp_path_factory.mktemp(f"bpf-{arch}")
        proc = subprocess.run(["make", "-s", "-C", str(BPF_DIR), f"OUT={directory}", f"ARCH={arch}"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"make ARCH={arch} failed:\n{proc.stdout}{proc.stderr}"
        out[arch] = directory
    return out


class Elf:
    """Just enough of an ELF64 little-endian relocatable file: its machine,
    section names, and which symbols the program sections' relocations name."""

    def __init__(self, path: Path):
        self.data = data = path.read_bytes()
        assert data[:4] == b"\x7fELF", f"{path.name} is not ELF"
        self.elf_class, self.endian = data[4], data[5]
        self.machine = struct.unpack_from("<H", data, 18)[0]
        shoff, = struct.unpack_from("<Q", data, 40)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
        self.sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                         for i in range(shnum)]
        names_off = self.sections[shstrndx][4]
        self.names = [self._str(names_off, s[0]) for s in self.sections]

    def _str(self, table_off: int, off: int) -> str:
        end = self.data.index(b"\0", table_off + off)
        return self.data[table_off + off:end].decode()

    def _symbols(self) -> list[tuple[str, int, int]]:
        """(name, type, section index) of every symbol."""
        for sh_name, sh_type, _f, _a, off, size, link, _i, _al, entsize in self.sections:
            if sh_type == SHT_SYMTAB:
                strtab = self.sections[link][4]
                syms = []
                for i in range(size // entsize):
                    st_name, st_info, _other, st_shndx = struct.unpack_from("<IBBH", self.data,
                                                                            off + i * entsize)
                    syms.append((self._str(strtab, st_name), st_info & 0xF, st_shndx))
                return syms
        return []

    def declared_maps(self) -> set[str]:
        maps = self.names.index(".maps") if ".maps" in self.names else -1
        return {name for name, kind, shndx in self._symbols() if shndx == maps and kind == STT_OBJECT}

    def used_maps(self) -> set[str]:
        """Maps some program instruction refers to (its relocations)."""
        syms = self._symbols()
        maps = self.names.index(".maps") if ".maps" in self.names else -1
        used = set()
        for _n, sh_type, _f, _a, off, size, _link, info, _al, entsize in self.sections:
            if sh_type != SHT_REL or not self.sections[info][2] & SHF_EXECINSTR:
                continue
            for i in range(size // entsize):
                _offset, r_info = struct.unpack_from("<QQ", self.data, off + i * entsize)
                name, _kind, shndx = syms[r_info >> 32]
                if shndx == maps:
                    used.add(name)
        return used


def map_definitions(obj: Path) -> dict[str, dict]:
    """name -> {type, max_entries, map_flags, key, value} from the object's BTF
    (.maps DATASEC), key and value as (type name, size)."""
    dump = json.loads(subprocess.check_output(["bpftool", "-j", "btf", "dump", "file", str(obj)],
                                              timeout=30))
    types = {t["id"]: t for t in dump["types"]}

    def resolve(type_id: int) -> dict:
        while types[type_id]["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            type_id = types[type_id]["type_id"]
        return types[type_id]

    def size(type_id: int) -> int:
        t = resolve(type_id)
        if t["kind"] == "ARRAY":
            return t["nr_elems"] * size(t["type_id"])
        return 8 if t["kind"] == "PTR" else t["size"]

    maps = {}
    for sec in dump["types"]:
        if sec["kind"] != "DATASEC" or sec["name"] != ".maps":
            continue
        for var in sec["vars"]:
            var_type = types[var["type_id"]]
            definition = {}
            for member in types[var_type["type_id"]]["members"]:
                target = types[member["type_id"]]["type_id"]  # every field is a pointer
                if member["name"] == "values":  # __array(values, struct inner): map in map
                    inner = resolve(types[target]["type_id"])
                    definition["values"] = inner["name"]
                elif member["name"] in ("key", "value"):
                    definition[member["name"]] = (resolve(target)["name"], size(target))
                else:  # __uint(field, N) is a pointer to int[N]
                    definition[member["name"]] = types[target]["nr_elems"]
            maps[var_type["name"]] = definition
    return maps


def test_the_host_and_arm64_have_kernel_types():
    assert HOST_ARCH in ARCHES and "arm64" in ARCHES, ARCHES


def test_the_loader_loads_every_object_built():
    """Every object at start, but the sentinel: loaded when a container
    parent is first given (GuardObjects.attach_sentinel)."""
    assert sorted({*GuardObjects.NAMES, GuardObjects.SENTINEL, PROBES}) == SOURCES


@pytest.mark.parametrize("arch", ARCHES)
def test_every_source_becomes_a_bpf_object_with_btf(builds, arch):
    built = sorted(p.name[: -len(".bpf.o")] for p in builds[arch].glob("*.bpf.o"))
    assert built == SOURCES
    for name in SOURCES:
        elf = Elf(builds[arch] / f"{name}.bpf.o")
        assert (elf.machine, elf.elf_class, elf.endian) == (EM_BPF, 2, 1), name  # 64-bit LE BPF
        assert ".BTF" in elf.names and ".maps" in elf.names, name


@pytest.mark.parametrize("arch", ARCHES)
def test_each_object_declares_exactly_the_maps_its_programs_use(builds, arch):
    for name in SOURCES:
        elf = Elf(builds[arch] / f"{name}.bpf.o")
        assert elf.declared_maps() == elf.used_maps(), name


def test_map_definitions_are_the_same_on_every_arch(builds):
    first, *others = ARCHES
    for name in SOURCES:
        expected = map_definitions(builds[first] / f"{name}.bpf.o")
        for arch in others:
            assert map_definitions(builds[arch] / f"{name}.bpf.o") == expected, f"{name} on {arch}"


def _by_map(directory: Path) -> dict[str, dict[str, dict]]:
    """map name -> {object name -> definition}, over every object."""
    by_map: dict[str, dict[str, dict]] = {}
    for obj in sorted(directory.glob("*.bpf.o")):
        for map_name, definition in map_definitions(obj).items():
            by_map.setdefault(map_name, {})[obj.name] = definition
    return by_map


def test_a_map_shared_by_objects_has_one_definition(builds):
    # bpf_map__reuse_fd refuses a definition that differs from the map's
    for map_name, defs in _by_map(builds[HOST_ARCH]).items():
        assert len({json.dumps(d, sort_keys=True) for d in defs.values()}) == 1, (map_name, defs)


def test_guard_objects_declare_the_maps_this_source_does(builds):
    """guard/objects (what the kernel tests and the package load) against a
    fresh build: the same maps, defined alike. Per map, not per object: which
    object carries a map is the build's business, the kernel sees one map."""
    if not (objects_dir() / "exec.bpf.o").is_file():
        pytest.skip("guard/objects is not built (make -C bpf)")
    fresh = {name: next(iter(defs.values())) for name, defs in _by_map(builds[HOST_ARCH]).items()}
    shipped = {name: next(iter(defs.values())) for name, defs in _by_map(objects_dir()).items()}
    assert shipped == fresh, "guard/objects is stale: make -C bpf"


#: What each architecture's register layout is called in the objects' BTF
#: (bpf_tracing.h's PT_REGS_*_CORE_SYSCALL under __TARGET_ARCH_<arch>), with
#: a member only that layout has
PT_REGS = {"x86": ("pt_regs", "di"), "arm64": ("user_pt_regs", "regs")}


@pytest.mark.parametrize("arch", ARCHES)
def test_a_build_names_its_architecture_and_reads_that_machines_registers(builds, arch):
    """ARCH reaches the compiler: objects/arch says it (the loader checks it),
    and socket_syscall reads the syscall arguments out of that
    architecture's pt_regs, not the host's."""
    assert (builds[arch] / "arch").read_text().strip() == arch
    dump = json.loads(subprocess.check_output(
        ["bpftool", "-j", "btf", "dump", "file", str(builds[arch] / "socket_syscall.bpf.o")],
        timeout=30))
    structs = {t["name"]: {m["name"] for m in t["members"]}
               for t in dump["types"] if t["kind"] == "STRUCT"}
    name, member = PT_REGS[arch]
    assert member in structs.get(name, set()), sorted(structs)
    for other in set(PT_REGS) - {arch}:
        other_name, other_member = PT_REGS[other]
        assert other_member not in structs.get(other_name, set()), (other, sorted(structs))


def test_another_architecture_is_built_beside_never_into_guard_objects(builds):
    """`make ARCH=<not this host>` without OUT writes build/<arch>/objects:
    the host's objects in guard/objects, which the kernel tests and the
    package load, stay the host's. (builds: the tools are there.)"""
    for arch in ARCHES:
        dry = subprocess.run(["make", "-n", "-B", "-C", str(BPF_DIR), f"ARCH={arch}"],
                             capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        outputs = {line.rsplit(" -o ", 1)[1].split()[0] for line in dry.stdout.splitlines()
                   if " -target bpf " in line}
        expected = "../guard/objects" if arch == HOST_ARCH else f"../build/{arch}/objects"
        assert outputs == {f"{expected}/{name}.bpf.o" for name in SOURCES}, outputs


def test_the_loader_takes_only_objects_built_for_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARD_OBJECTS_DIR", str(tmp_path))
    (tmp_path / "exec.bpf.o").write_bytes(b"\x7fELF")
    assert object_path("exec") == tmp_path / "exec.bpf.o"      # no arch file: an old tree's
    (tmp_path / "arch").write_text(HOST_ARCH + "\n")
    assert object_path("exec") == tmp_path / "exec.bpf.o"
    other = "arm64" if HOST_ARCH != "arm64" else "x86"
    (tmp_path / "arch").write_text(other + "\n")
    with pytest.raises(LibbpfError) as refused:
        object_path("exec")
    assert f"built for {other}" in str(refused.value)
    assert refused.value.errno == errno.ENOEXEC


def _wheel_of(tree: Path, out: Path, **env: str) -> zipfile.ZipFile:
    """pip wheel of a copy of the source tree (the real one's build/ is shared)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                           str(tree)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheel, = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def test_a_package_carries_the_objects_of_the_architecture_asked_for(builds, tmp_path):
    """setup.py: GUARD_BPF_ARCH compiles for that architecture; GUARD_BPF_OBJECTS
    ships objects built beforehand (deploy/Containerfile's TARGETARCH)."""
    other = "arm64" if HOST_ARCH != "arm64" else "x86"
    tree = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "objects", "__pycache__",
                                  ".hypothesis", ".pytest_cache", "*.egg-info", "out")
    shutil.copytree(ROOT, tree, ignore=skip)
    for name, env in (("compiled", {"GUARD_BPF_ARCH": other}),
                      ("prebuilt", {"GUARD_BPF_OBJECTS": str(builds[other])})):
        with _wheel_of(tree, tmp_path / name, **env) as wheel:
            assert wheel.read("guard/objects/arch").decode().strip() == other, name
            shipped = sorted(n[len("guard/objects/"):-len(".bpf.o")] for n in wheel.namelist()
                             if n.startswith("guard/objects/") and n.endswith(".bpf.o"))
            assert shipped == SOURCES, name
            if name == "prebuilt":
                for source in SOURCES:
                    assert wheel.read(f"guard/objects/{source}.bpf.o") == \
                        (builds[other] / f"{source}.bpf.o").read_bytes(), source
