# SPDX-License-Identifier: Apache-2.0
import sys

from guard.cli.reload import main as reload_main


def run(**click_options) -> None:
    # `policy reload` first: it answers without importing click (cli_reload.py)
    code = reload_main(sys.argv[1:])
    if code is None:
        from guard.cli.commands import main
        main(**click_options)
    sys.exit(int(code))


def entry() -> None:  # console_scripts entry point
    run(prog_name="egress-guard")


if __name__ == "__main__":
    run()
