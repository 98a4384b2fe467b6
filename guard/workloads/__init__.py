# SPDX-License-Identifier: Apache-2.0
"""Which cgroup is which workload: cgroup v2 paths and ids, containers and
their runtime's names, Kubernetes pods, and what is known of each process."""
