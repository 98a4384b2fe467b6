# SPDX-License-Identifier: Apache-2.0
"""The reload protocol: where a new policy comes from, and what the caller
is told. A request on the control socket (text, or the file passed open), a
SIGHUP, or a change of the policy file (a ConfigMap update swaps a symlink:
the inode changes, not just mtime) each become one reload: read (a large
list's networks written ahead while the rest is read, Maps.prestage),
compile, switch (Agent.reload), answer; the model's bookkeeping comes after
the answer. A policy that does not validate or install leaves the set in
force whole, and the answer says why.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from guard.control.client import is_regular_file, read_file
from guard.kernel import libbpf
from guard.kernel.maps import MapCapacityError
from guard.policy.fast import gc_paused
from guard.policy.load import default_policy, load_policies, parse_policies, policy_text
from guard.policy.model import PolicyError
from guard.report.events import policy_event


class ReloadProtocol:
    def __init__(self, agent):
        self._agent = agent
        self.requested = False                  # SIGHUP: on the next tick
        self.after_answer: list[Callable[[], None]] = []   # see Agent.reload(answer_first)
        self._file_state = file_state(agent.policy_path)

    def finish_pending(self) -> None:
        """Bookkeeping of reloads that answered first (see reload)."""
        while self.after_answer:
            try:
                with gc_paused():
                    self.after_answer.pop(0)()
            except OSError as exc:  # the names file: never worth the agent
                self._agent.error(f"cannot record the reload: {exc}")
                self._agent.writer.flush()

    def from_request(self, request: dict[str, Any] | None,
                     files: Sequence[int] = ()) -> dict[str, Any]:
        """A reload request (control socket, SIGHUP or a changed file) -> answer."""
        started = time.monotonic_ns()
        # A large policy is tens of thousands of new objects without a cycle
        # among them; each would-be collection on the way would walk the
        # agent's whole heap (the generation in force included) for nothing.
        with gc_paused():
            body = request.get("policy") if request else None
            if isinstance(body, dict) and "fd" in body:
                # the caller passed the file open: say whether it was read, so
                # a caller that also speaks the older protocol knows to send text
                # (an answer that could not read it says read_fd False itself)
                return {"read_fd": True, **self._request(request, started, files)}
            return self._request(request, started, files)

    def _request(self, request: dict[str, Any] | None, started: int,
                 files: Sequence[int] = ()) -> dict[str, Any]:
        try:
            return self._read_and_switch(request, started, files)
        finally:
            try:
                self._agent.maps.drop_prestaged()   # written ahead for a policy not installed
            except libbpf.LibbpfError as exc:
                self._agent.error(f"cannot remove prefixes written ahead: {exc}")

    def _prestage(self, values: Sequence[int], prefixlens: Sequence[int]) -> None:
        """The fast reader has the networks of a large list: write them for
        the next generation's first slot while it reads and compiles the
        rest (Maps.prestage; the install takes them only if they are exactly
        that policy's)."""
        self._agent.maps.prestage(self._agent.generations.next_slot_base(), values, prefixlens)

    def _read_and_switch(self, request: dict[str, Any] | None, started: int,
                         files: Sequence[int]) -> dict[str, Any]:
        try:
            if request and isinstance(request.get("policy"), dict):
                body = request["policy"]
                source = str(body.get("source", "<reload>"))
                if "fd" in body:
                    try:
                        text = policy_text(passed_file(body["fd"], files), source)
                    except (OSError, ValueError) as exc:
                        return {"ok": False, "read_fd": False,
                                "error": f"{source}: the agent cannot read the file passed "
                                         f"to it: {exc}; the policy in force is unchanged"}
                else:
                    text = str(body.get("text", ""))
                policy = parse_policies(text, source, early=self._prestage, columns=True)
            elif self._agent.policy_path:
                # one reload per change, whether SIGHUP or the file watch saw it first
                self._file_state = file_state(self._agent.policy_path)
                policy = load_policies(self._agent.policy_path, early=self._prestage, columns=True)
            else:
                policy = default_policy()
            return {"ok": True, **self._agent.reload(policy, started, answer_first=request is not None)}
        except (MapCapacityError, libbpf.LibbpfError) as exc:
            # nothing switched: the set in force is whole (see _switch_to)
            self._agent.error(f"reload failed: {exc}")
            self._agent.writer.flush()
            return {"ok": False, "error": f"cannot install the policy: {exc}; "
                                         "the policy in force is unchanged"}
        except PolicyError as exc:
            problems = [str(p) for p in exc.problems]
            self._agent.writer.write(policy_event(
                self._agent.clock, "rejected", problems=problems,
                policy={"name": self._agent.policies[0].name, "generation": self._agent.generations.active}))
            self._agent.writer.flush()
            return {"ok": False, "error": "invalid policy: the policy in force is unchanged",
                    "problems": problems}

    def if_asked(self) -> None:
        if self.requested:
            self.requested = False
            self.from_request(None)
        state = file_state(self._agent.policy_path)
        if state != self._file_state:
            # a ConfigMap update swaps a symlink: the inode changes, not just mtime
            self._file_state = state
            if state is not None:
                self.from_request(None)



def passed_file(index: object, files: Sequence[int]) -> bytes:
    """The contents of the index-th file passed with a request: a regular
    file (a pipe or a device could keep the agent waiting)."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(files):
        raise ValueError("no file came with the request")
    if not is_regular_file(files[index]):
        raise ValueError("not a regular file")
    return read_file(files[index])


def file_state(path: str | None) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
