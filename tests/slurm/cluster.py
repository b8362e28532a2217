"""A real single-node Slurm cluster in one folder, for tests: munged, slurmctld and slurmd.

Everything lives under one directory (config, munge key and socket, state, spool, logs, pid
files); nothing under /etc or /run is touched. Commands reach this cluster through the
`SLURM_CONF` environment variable (`MiniSlurm.env()`), which also travels into the jobs
(`sbatch --export=ALL`), so `srun` inside a job finds it too.

Needs root (slurmd starts jobs as their user; munged runs as the `munge` user) and the Debian
packages `munge slurmctld slurmd slurm-client`. No systemd: the daemons run in the foreground as
children of this process and are stopped by the pid in their pid files.

    python tests/slurm/cluster.py start DIR   # prints `export SLURM_CONF=... PATH=...`
    python tests/slurm/cluster.py stop DIR    # cancels jobs, stops the daemons

Job accounting without a database: `jobcomp/filetxt` appends one line per finished job to
DIR/jobcomp.txt (JobId, JobName, JobState, ...), and `MinJobAge` keeps finished jobs visible to
`squeue --states=all` for 5 minutes (the Snakemake Slurm plugin then uses squeue for status
checks: `sacct` needs slurmdbd).
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
DAEMONS = ("munged", "slurmctld", "slurmd")


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def missing_requirements():
    """Why this machine cannot run the mini cluster (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (slurmd starts jobs as their user, munged runs as `munge`)"
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        return (
            f"Slurm/munge binaries missing: {', '.join(missing)} (apt-get install munge slurmctld slurmd slurm-client)"
        )
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no `munge` user (install the munge package)"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line(name, mem_mb):
    """NodeName line from `slurmd -C` (the real topology), with our memory limit."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    keep = [
        kv
        for kv in first.split()
        if kv.split("=")[0] in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    ]
    return f"NodeName={name} NodeAddr=127.0.0.1 {' '.join(keep)} RealMemory={mem_mb} State=UNKNOWN"


def _available_mb():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 4096


class MiniSlurm:
    def __init__(self, root, mem_mb=None, min_job_age=300):
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.txt"
        self.munge_dir = self.root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.mem_mb = mem_mb or max(2048, min(16384, _available_mb() * 2 // 3))
        self.min_job_age = min_job_age
        self.procs = {}

    # ------------------------------------------------------------------ set-up
    def pidfile(self, daemon):
        return self.root / f"{daemon}.pid"

    def env(self, base=None):
        """Environment for commands on this cluster: SLURM_CONF, and our `srun` first in PATH."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def write_config(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged (user munge) must reach its folder below
        for sub in ("state", "spool", "logs"):
            (self.root / sub).mkdir(exist_ok=True)
        munge = pwd.getpwnam("munge")
        self.munge_dir.mkdir(exist_ok=True)
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        self.munge_dir.chmod(0o755)  # munged wants the socket folder reachable by all
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chown(key, munge.pw_uid, munge.pw_gid)
            key.chmod(0o600)
        host = socket.gethostname().split(".")[0]
        self.node = host
        self.ports = (_free_port(), _free_port())
        conf = f"""\
# Single-node test cluster written by tests/slurm/cluster.py
ClusterName=ferstudy-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.ports[0]}
SlurmdPort={self.ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.pidfile("slurmctld")}
SlurmdPidFile={self.pidfile("slurmd")}
SlurmctldLogFile={self.root}/logs/slurmctld.log
SlurmdLogFile={self.root}/logs/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge={self.min_job_age}
ReturnToService=2
InactiveLimit=0
KillWait=5
SlurmdTimeout=300
MpiDefault=none
{_node_line(host, self.mem_mb)}
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
        self.conf.write_text(conf)
        # The plugin's job step removes SLURM_* variables (SLURM_CONF too) before it calls `srun`
        # inside the job; a real cluster has /etc/slurm/slurm.conf, we have this wrapper instead.
        (self.root / "bin").mkdir(exist_ok=True)
        wrapper = self.root / "bin" / "srun"
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_which("srun")} "$@"\n')
        wrapper.chmod(0o755)

    # ------------------------------------------------------------------ daemons
    def _start(self, daemon, argv, user=None):
        log = open(self.root / "logs" / f"{daemon}.out", "ab")
        kwargs = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            kwargs = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
            **kwargs,
        )
        log.close()
        self.procs[daemon] = proc
        return proc

    def _wait(self, what, check, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for daemon, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{daemon} exited with {proc.returncode} while waiting for {what}:\n" + self.logs_tail()
                    )
            if check():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}:\n" + self.logs_tail())

    def start(self, timeout=60):
        self.write_config()
        m = self.munge_dir
        self._start(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={self.socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
            user="munge",
        )
        self._wait("munged's socket", self.socket.exists, timeout)
        self._start("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: self._ok(["scontrol", "ping"], "UP"), timeout)
        self._start("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait("the node to be idle", lambda: self._ok(["sinfo", "-h", "-N", "-o", "%T"], "idle"), timeout)
        return self

    def _ok(self, argv, needle):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=10).stdout
        except subprocess.TimeoutExpired:
            return False
        return needle in out

    def squeue(self):
        out = subprocess.run(
            ["squeue", "-h", "--states=all", "-o", "%i|%j|%T"],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=30,
        ).stdout
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def jobcomp_records(self):
        """Finished jobs as dicts (JobId, JobName, JobState, ...) from the jobcomp/filetxt log."""
        if not self.jobcomp.exists():
            return []
        records = []
        for line in self.jobcomp.read_text().splitlines():
            records.append(dict(kv.split("=", 1) for kv in re.findall(r"\S+=\S*", line)))
        return records

    def logs_tail(self, lines=30):
        out = []
        for path in sorted((self.root / "logs").glob("*")) + [self.munge_dir / "munged.log"]:
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # ------------------------------------------------------------------ tear-down
    def stop(self):
        """Cancel our jobs, wait for them to end, stop the daemons (by pid file), never raises."""
        if self.conf.exists() and any(self._alive(d) for d in ("slurmctld",)):
            try:
                active = [
                    j
                    for j, _, state in self.squeue()
                    if state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")
                ]
                if active:
                    subprocess.run(["scancel", *active], env=self.env(), timeout=30, capture_output=True)
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and any(
                        s in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for _, _, s in self.squeue()
                    ):
                        time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for daemon in ("slurmd", "slurmctld", "munged"):
            self._kill(daemon)

    def _pid(self, daemon):
        path = self.munge_dir / "munged.pid" if daemon == "munged" else self.pidfile(daemon)
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            proc = self.procs.get(daemon)
            return proc.pid if proc is not None else None

    def _alive(self, daemon):
        pid = self._pid(daemon)
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            return False
        return os.path.basename(cmdline.decode(errors="replace")) == daemon  # not a recycled pid

    def _kill(self, daemon, timeout=15):
        pid = self._pid(daemon)
        proc = self.procs.get(daemon)
        if pid is not None and self._alive(daemon):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(daemon):
                if proc is not None:
                    proc.poll()  # reap our child so it does not linger as a zombie
                time.sleep(0.1)
            if self._alive(daemon):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__)
        return 2
    cluster = MiniSlurm(argv[1])
    if argv[0] == "start":
        why = missing_requirements()
        if why:
            print(why, file=sys.stderr)
            return 1
        cluster.start()
        # Detach: the daemons keep running after this process exits; `stop` ends them by pid file.
        cluster.procs.clear()
        print(f"export SLURM_CONF={cluster.conf} PATH={cluster.root / 'bin'}:$PATH")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
