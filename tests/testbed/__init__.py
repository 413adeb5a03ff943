"""The hpcfed testbed: four real HPC centers on loopback, for integration tests.

- ``centera``: Slurm, CPU partitions ``debug`` (default) and ``long``;
- ``centerb``: Slurm with four (fake) ``a100`` GPUs as GRES;
- ``centerc``: the PBS dialect, i.e. a Slurm cluster driven through Slurm's
  Torque-compatible ``qsub``/``qstat``/``qdel``;
- ``centerd``: Slurm with accounting (slurmdbd on its own MariaDB) and enforced
  associations, limits and QoS; the login ``dora`` has no association there;
- a PostgreSQL server on 127.0.0.1:25432 for the gateway's shared state
  (``tests.testbed.postgres``); and, for tests that start it, HAProxy in front of
  gateway replicas (``tests.testbed.haproxy``).

Each center is its own slurmctld + slurmd (own ClusterName, ports, state) and its own
sshd on 127.0.0.1 with a pinned host key; ``SetEnv SLURM_CONF=...`` in that sshd makes every
command run through it reach that center's cluster. One munged serves all four. Job users
``alice`` and ``bob`` log in with keys from ``<base>/keys``.

Run by hand from the repository root::

    python -m tests.testbed up|down|status

or from Python::

    from tests.testbed import Testbed
    tb = Testbed()   # base dir from HPCFED_TESTBED_DIR, default /tmp/hpcfed-testbed
    tb.up()

Listening addresses: every sshd listens on 127.0.0.1 only. slurmctld and slurmd have no
listen-address setting; ``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`` makes them
bind to the address the machine's hostname resolves to instead of 0.0.0.0, and the testbed
makes sure that is a loopback address (see ``tests.testbed.slurm``).
"""

from tests.testbed.centers import CenterInfo
from tests.testbed.procs import TestbedError, TestbedUnavailable
from tests.testbed.testbed import DEFAULT_BASE, Testbed

__all__ = ["DEFAULT_BASE", "CenterInfo", "Testbed", "TestbedError", "TestbedUnavailable"]
