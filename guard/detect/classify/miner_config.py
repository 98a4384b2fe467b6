# SPDX-License-Identifier: Apache-2.0
"""The config files a miner reads without being told, and reading them
within budgets, for miner.py.

Where, from the miners' own sources:

- XMRig (src/base/kernel/Base.cpp, Process.cpp; the same from 6.16.0 to
  6.26.0): the files named by -c/--config; else config.json in its data
  directory (--data-dir/-d, else the directory of its binary), else
  $HOME/.xmrig.json, else $HOME/.config/xmrig.json; $HOME as the process
  has it (libuv's uv_os_homedir: the environment first, then passwd).
  xmrig-proxy reads the same places under its own name (APP_ID
  "xmrig-proxy", src/version.h).
- xmr-stak (xmrstak/params.hpp): config.txt and pools.txt in its working
  directory: JSON members without the enclosing braces.

read_file(path) is the caller's (guard/detect/files.ProcessFiles.read_file:
inside the process's root, relative paths from its working directory, `~/`
below its $HOME).
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Callable

from guard.detect.classify import jsonc, was_cut
from guard.detect.classify.miner_indicators import Indicators

#: XMRig's and xmrig-proxy's home configs, in the order they look.
XMRIG_HOME_CONFIGS = ("~/.xmrig.json", "~/.config/xmrig.json",
                      "~/.xmrig-proxy.json", "~/.config/xmrig-proxy.json")
#: xmr-stak's configs, relative to its working directory.
XMR_STAK_CONFIGS = ("config.txt", "pools.txt")
#: Words that only mining configs carry, looked for (with the pool and
#: donation domains) in a default config that could not be read in full.
#: Substring searches: about 10 ms on 1 MiB.
CONFIG_HINTS = ("donate-level", "donate-over-proxy", "randomx", "rig-id", "nicehash",
                "cryptonight", "xmrig", "coinbase-addr", "kawpow", "ghostrider", "stratum+",
                "stratum1+", "stratum2+", "stratums:", "pool_address", "wallet_address")


@dataclass(frozen=True)
class ConfigPlace:
    """A config file to read: named on the command line (what cannot be read
    of it fails closed), or one the miner reads by default (only when what
    was read mentions mining: every exec reads these)."""
    path: str
    named: bool
    members: bool = False   # JSON members without braces (xmr-stak)


def config_places(argv: list[str], exe: str | None, named: list[str], *,
                  home: bool, data_dirs: list[str], xmr_stak: bool) -> list[ConfigPlace]:
    """The config files to read, in the order the miner would: those named
    on the command line, config.json in each data directory given and beside
    the binary, then (home) XMRig's home configs and (xmr_stak) xmr-stak's."""
    places = [ConfigPlace(path, True) for path in named]
    places += [ConfigPlace(posixpath.join(d, "config.json"), False) for d in data_dirs]
    binary = exe if isinstance(exe, str) and exe.startswith("/") else (
        argv[0] if argv and argv[0].startswith("/") else None)
    if binary:
        places.append(ConfigPlace(posixpath.join(posixpath.dirname(binary), "config.json"), False))
    if home:
        places += [ConfigPlace(path, False) for path in XMRIG_HOME_CONFIGS]
    if xmr_stak:
        places += [ConfigPlace(path, False, members=True) for path in XMR_STAK_CONFIGS]
    unique: dict[str, ConfigPlace] = {}
    for place in places:
        unique.setdefault(place.path, place)
    return list(unique.values())


@dataclass
class ConfigFile:
    """One config file as read: its document, why it was not read in full
    (None when it was), its text and the bytes it cost."""
    document: Any = None
    unread: str | None = None
    text: str = ""
    size: int = 0


def read_config(place: ConfigPlace, read_file: Callable[[str], bytes | None],
                limit: int) -> ConfigFile:
    path = place.path
    try:
        content = read_file(path)
    except Exception:                       # the agent's callback; its failure is no finding
        return ConfigFile()
    if not isinstance(content, (bytes, bytearray)) or not content:
        return ConfigFile()
    cut = was_cut(content, limit)
    raw = bytes(content[:limit])
    text = raw.decode("utf-8", "replace")
    unread = f"{path}: more than {limit} bytes; the rest was not read" if cut else None
    if place.members and text.lstrip().startswith(("\"", "/")):
        text = "{" + text + "\n}"           # xmr-stak: members without their braces
    if not text.lstrip().startswith(("{", "/")):
        if cut and not text.strip():
            return ConfigFile(None, unread, text, len(raw))     # too little read to judge
        # not JSON (nginx.conf, gunicorn.py...): no miner could read it either
        return ConfigFile(size=len(raw))
    try:
        document = jsonc.loads(text)        # a cut text mostly fails to parse: nothing lost
    except jsonc.OverBudget as error:
        return ConfigFile(None, unread or f"{path}: not parsed, {error}", text, len(raw))
    return ConfigFile(document, unread, text, len(raw))


def mining_hint(text: str, indicators: Indicators) -> str | None:
    """A word of CONFIG_HINTS or a pool or donation domain in text."""
    lowered = text.lower()
    for word in (*CONFIG_HINTS, *sorted(indicators.pool_domains | indicators.donation_domains)):
        if word in lowered:
            return word
    return None
