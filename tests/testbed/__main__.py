"""Command line: ``python -m tests.testbed up|down|status`` (run from the repository root)."""

from __future__ import annotations

import argparse
import sys
import time

from tests.testbed import Testbed, TestbedError, TestbedUnavailable, postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__)
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    testbed = Testbed()
    try:
        if args.action == "up":
            started = time.monotonic()
            testbed.up()
            print(f"testbed up in {time.monotonic() - started:.1f}s at {testbed.base}")
            print(f"gateway config: {testbed.gateway_config}")
            return 0
        if args.action == "down":
            testbed.down()
            print(f"testbed down ({testbed.base}: keys and state kept)")
            return 0
    except TestbedUnavailable as exc:
        print(f"testbed unavailable: {exc}", file=sys.stderr)
        return 2
    except TestbedError as exc:
        print(f"testbed {args.action} failed: {exc}", file=sys.stderr)
        return 1
    return print_status(testbed)


def print_status(testbed: Testbed) -> int:
    states = testbed.status()
    for cid, daemons in states.items():
        center = testbed.center(cid)
        cells = "  ".join(
            f"{name} {'running' if up else 'stopped'}" for name, up in daemons.items()
        )
        print(f"{cid} ({center.kind}, ssh 127.0.0.1:{center.ssh_port}): {cells}")
    munge = testbed.munge_ok()
    print(f"munged: {'running' if munge else 'stopped'}")
    services = testbed.services()
    pg_port = postgres.port(testbed.base)
    print(
        f"postgres (127.0.0.1:{pg_port}, pgpass {postgres.pgpass_file(testbed.base)}): "
        f"{'running' if services['postgres'] else 'stopped'}"
    )
    all_up = munge and all(services.values())
    all_up = all_up and all(all(daemons.values()) for daemons in states.values())
    return 0 if all_up else 1


if __name__ == "__main__":
    sys.exit(main())
