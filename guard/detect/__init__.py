# SPDX-License-Identifier: Apache-2.0
"""Records and process facts -> findings -> what the policy does about them.
classify/ holds the pure recognisers; detector.py runs them, isolated from
each other; files are read inside the process's own root."""
