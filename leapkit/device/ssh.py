"""The SSH link to a device: ``[user@]host[:port]``, the user's ssh options, and ssh/scp that never prompt.

The system ``ssh`` and ``scp`` run with the user's ssh config, keys and agent, in BatchMode (a missing key
fails at once instead of asking for a password). Every failure between here and the device becomes one
:class:`HostError` line that says what to try, with an ssh command line that keeps the port and options given.
Used by ``leapkit bench --host`` (:mod:`leapkit.device.round_trip`) and ``leapkit calibrate --host``
(:mod:`leapkit.planning.device_timing`).
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from leapkit.errors import ConfigError, LeapkitError

log = logging.getLogger(__name__)

# Options that suit a tool: fail instead of asking (BatchMode), give up on a dead address or a device that hangs.
SSH_DEFAULTS = ("-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4")
# Options that take a value in the next argument and mean the same to ssh and scp.
_VALUE_OPTIONS = ("-o", "-i", "-F", "-J")


class HostError(LeapkitError):
    """The device cannot be reached, refuses the key, or lacks what the bundle needs (exit 2)."""



@dataclass(frozen=True)
class Host:
    """``[user@]host[:port]``; an IPv6 address goes in brackets (``[::1]:2222``)."""

    name: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Host:
        """Read ``--host``; a name from ~/.ssh/config works too, with the user and port it sets there.

        Raises:
            ConfigError: the text is not ``[user@]host[:port]``.
        """
        m = re.fullmatch(r"(?:([A-Za-z0-9_][A-Za-z0-9._-]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*)"
                         r"(?::(\d{1,5}))?", text.strip())
        port = int(m.group(3)) if m and m.group(3) else None
        if m is None or (port is not None and not 1 <= port <= 65535):
            raise ConfigError(f"--host '{text}' is not [user@]host[:port]; e.g. --host nvidia@192.168.1.42 or "
                              f"--host jetson:2222 (an IPv6 address in brackets: [fe80::1]:22)")
        return cls(name=m.group(2).strip("[]"), user=m.group(1), port=port)

    @property
    def destination(self) -> str:
        """What ssh connects to: ``user@host``."""
        return f"{self.user}@{self.name}" if self.user else self.name

    def remote(self, path: str) -> str:
        """An scp operand for ``path`` on this host."""
        name = f"[{self.name}]" if ":" in self.name else self.name
        return f"{self.user}@{name}:{path}" if self.user else f"{name}:{path}"

    def __str__(self) -> str:
        name = f"[{self.name}]" if ":" in self.name else self.name
        user = f"{self.user}@" if self.user else ""
        return f"{user}{name}:{self.port}" if self.port else f"{user}{name}"


def ssh_arguments(options: Sequence[str]) -> tuple[str, ...]:
    """The user's extra ssh/scp arguments, checked: ``Key=Value`` (an ssh_config line) becomes ``-o Key=Value``.

    Raw arguments that mean the same to ssh and scp pass as they are: ``-o OPT``, ``-i KEY``, ``-F CONFIG``,
    ``-J JUMP`` and flags such as ``-4``.

    Raises:
        ConfigError: a port flag (it differs between ssh and scp), an option without its value, or a bare word.
    """
    out: list[str] = []
    items = iter(options)
    for item in items:
        if item in _VALUE_OPTIONS:
            value = next(items, None)
            if value is None:
                raise ConfigError(f"ssh option {item} needs a value, e.g. {item} VALUE")
            out += [item, value]
        elif item.startswith(("-p", "-P")):
            raise ConfigError(f"ssh option '{item}': give the port in --host, as user@host:PORT")
        elif item.startswith("-"):
            out.append(item)
        elif re.fullmatch(r"[A-Za-z][A-Za-z0-9]*[= ].+", item):
            out += ["-o", item]
        else:
            raise ConfigError(f"ssh option '{item}' is not an ssh_config setting; pass Key=Value, e.g. "
                              f"IdentityFile=~/.ssh/jetson or UserKnownHostsFile=/tmp/known_hosts")
    return tuple(out)


def last_line(text: str) -> str:
    """The last line worth showing: ssh's own warnings (a host key added) are not the problem."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    return lines[-1] if lines else "no message"


@dataclass(frozen=True)
class Connection:
    """ssh and scp to one host, never prompting, with the user's config plus ``options``."""

    host: Host
    options: tuple[str, ...] = ()

    @classmethod
    def to(cls, host: str, options: Sequence[str] = ()) -> Connection:
        """The link ``--host`` and ``--ssh-option`` describe.

        Raises:
            ConfigError: ``host`` is not ``[user@]host[:port]``, or an option is not one ssh and scp share.
        """
        return cls(Host.parse(host), ssh_arguments(options))

    def _arguments(self) -> list[str]:
        port = ["-o", f"Port={self.host.port}"] if self.host.port else []
        return ["-o", "BatchMode=yes", *port, *self.options, *SSH_DEFAULTS]

    def _call(self, argv: list[str], shown: str) -> subprocess.CompletedProcess[str]:
        log.debug("%s %s", argv[0], shown)
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        except FileNotFoundError as e:
            raise HostError(f"'{argv[0]}' not found: --host needs the OpenSSH client (apt-get install "
                            f"openssh-client)") from e

    def transport_error(self, stderr: str) -> HostError:
        """One line for what went wrong between here and the host."""
        line = last_line(stderr)
        if "Permission denied" in stderr:
            return HostError(f"{self.host} refused the SSH key ({line}); install your public key there "
                             f"(ssh-copy-id {'-p ' + str(self.host.port) + ' ' if self.host.port else ''}"
                             f"{self.host.destination}) or name the key with --ssh-option "
                             f"IdentityFile=KEY")
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return HostError(f"{self.host}'s host key is unknown or changed ({line}); run {self.ssh_command()} "
                             f"once to check and accept it")
        return HostError(f"cannot reach {self.host} ({line}); check the address and port, that the device is on "
                         f"and that sshd runs on it (try: {self.ssh_command()})")

    def ssh_command(self) -> str:
        """The ssh command line a user would try by hand: the port and the user's options (``-i KEY``) kept."""
        port = ["-p", str(self.host.port)] if self.host.port else []
        return shlex.join(["ssh", *port, *self.options, self.host.destination])

    def reach(self) -> None:
        """Log in and out (BatchMode, ConnectTimeout as in SSH_DEFAULTS): seconds, before any slow work for the host.

        Raises:
            HostError: the host cannot be reached, refuses the key, or its host key is unknown.
        """
        log.info("checking that %s can be reached", self.host)
        self.run("exit 0")

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a POSIX sh ``script`` with ``args`` as $1.. on the host; ssh's own failures (exit 255) raise."""
        command = shlex.join(["sh", "-c", script, "leapkit", *args])
        proc = self._call(["ssh", *self._arguments(), "--", self.host.destination, command],
                          f"{self.host}: sh -c <{script.strip().splitlines()[0]} ...> {shlex.join(args)}")
        if proc.returncode == 255:
            raise self.transport_error(proc.stderr)
        return proc

    def copy(self, sources: Sequence[str], target: str, what: str) -> None:
        """scp ``sources`` to ``target`` (either side may be remote, by :meth:`Host.remote`)."""
        proc = self._call(["scp", "-q", "-r", *self._arguments(), "--", *sources, target],
                          f"{shlex.join(sources)} {target}")
        if proc.returncode != 0:
            if re.search(r"Permission denied \(|Host key|Connection|resolve|timed out|unreachable|route",
                         proc.stderr):
                raise self.transport_error(proc.stderr)
            raise HostError(f"copying {what} failed ({last_line(proc.stderr)})")
