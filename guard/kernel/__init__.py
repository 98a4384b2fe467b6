# SPDX-License-Identifier: Apache-2.0
"""The kernel side as userspace sees it: the libbpf binding, the CO-RE objects
(load, attach, pin), the ABI mirror and its BTF check, record decoding, and
the only writer of BPF maps."""
