"""The container engine of the `containers` backend: the Docker Engine API that DOCKER_HOST names, or a
podman API service enilab starts for one run under that run's state folder; and the default image,
`enilab/busybox`, built from the local busybox-static with no registry.

podman 4.3 here (see the README): runc (crun cannot set rlimits in this sandbox), cgroupfs, the vfs
storage driver in a private --root/--runroot, events to a file. Its API service answers docker-py as API
1.41. After the service stops, exec sessions may leave `conmon` processes behind: `stop` reaps every
process whose command line names the run's state folder, by pid, and unmounts what is mounted under it.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eni_core import userns
from eni_core.private import open_private, private_dir, write_atomic
from testbed.errors import UserError

__all__ = ["DEFAULT_IMAGE", "Engine", "EngineError", "busybox_rootfs", "check_image_name", "containers_conf",
           "open_engine", "purge"]

DEFAULT_IMAGE = "enilab/busybox:latest"
API_VERSION = "1.41"  # what podman 4.3's service speaks
BUSYBOX_TOOLS = ("sh", "sleep", "ping", "ip", "wget", "httpd", "echo", "cat", "mkdir", "hostname", "ls", "kill",
                 "ps", "nc", "true", "false", "timeout")
# a Docker image reference (distribution/reference): [registry/]path[:tag]; a first part is a registry only
# with a dot or a port, or as localhost; path components are lower case
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?|[a-zA-Z0-9-]+:[0-9]+)/"
IMAGE_RE = re.compile(rf"^(?:{_REGISTRY})?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?$")
SERVICE_START_S = 30.0
MNT_DETACH = 2


class EngineError(UserError):
    """No engine can be had, or it refused: the message says what to install or set."""


def check_image_name(name: Any) -> str:
    """A Docker image reference (`enilab/busybox`, `registry:5000/team/app:1.2`), with `:latest` added."""
    if not isinstance(name, str) or len(name) > 255 or not IMAGE_RE.fullmatch(name):
        raise ValueError(f"{str(name)[:80]!r} is not an image name (like enilab/busybox or team/app:1.2)")
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _busybox() -> Path:
    found = shutil.which("busybox")
    if found is None:
        raise EngineError("the default image needs busybox-static (`apt-get install busybox-static`)")
    return Path(found)


def busybox_rootfs(folder: Path) -> Path:
    """A busybox root file system in `folder` (bin/busybox and its applets as links); returns `folder`."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(_busybox(), bin_dir / "busybox")
    for tool in BUSYBOX_TOOLS:
        (bin_dir / tool).symlink_to("busybox")
    return folder


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """An image's file belongs to its root, whoever owns the host's copy as this process sees it (in a user
    namespace that maps one user, root's files show as the overflow uid 65534, which podman cannot map)."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def busybox_tar() -> bytes:
    """The default image's root file system as a tar archive (for `import_image_from_data`)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "www"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(_busybox()), "bin/busybox", filter=_owned_by_root)
        for tool in BUSYBOX_TOOLS:
            info = tarfile.TarInfo(f"bin/{tool}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return out.getvalue()


def _docker():
    try:
        import docker
    except ImportError:
        raise EngineError("the containers backend needs the docker package: pip install 'enilab[containers]'") from None
    return docker


def containers_conf(network_config_dir: Path, cni_plugin_dirs: Path | None = None) -> str:
    """A podman containers.conf that works on this kind of machine: runc and cgroupfs (crun and systemd
    cgroups fail here), rlimits runc may set, file events, the CNI network backend; locks are files under
    the run's own --tmpdir, not in /dev/shm, where every podman of one uid (root, and root of any user
    namespace) shares one by name and a normal user cannot open root's."""
    plugins = f'cni_plugin_dirs = ["{cni_plugin_dirs}"]\n' if cni_plugin_dirs else ""
    return ('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nlock_type = "file"\n'
            f'[network]\nnetwork_backend = "cni"\n{plugins}network_config_dir = "{network_config_dir}"\n')


@dataclass
class PodmanService:
    """`podman system service` on a unix socket, with everything it keeps under `state`."""

    state: Path
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.state / "api.sock"

    def podman(self) -> list[str]:
        s = self.state
        return ["podman", "--root", str(s / "root"), "--runroot", str(s / "runroot"), "--tmpdir", str(s / "tmp"),
                "--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs",
                "--runtime", "runc"]

    def env(self) -> dict[str, str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.state / "containers.conf")}
        if userns.inside():  # rootless: podman in a user namespace that maps one user asks no group it lacks (gid 5)
            env["_CONTAINERS_USERNS_CONFIGURED"] = "done"
        return env

    def start(self) -> None:
        missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
        if missing:
            raise EngineError(f"no container engine: DOCKER_HOST is not set and {' and '.join(missing)} "
                              "is missing; `apt-get install podman runc`, or point DOCKER_HOST at an engine")
        for d in ("root", "runroot", "tmp", "net.d"):  # private like the run's record, whatever the umask
            private_dir(self.state / d)
        write_atomic(self.state / "containers.conf", containers_conf(self.state / "net.d"))
        with open(open_private(self.state / "service.log"), "ab") as log:
            self.proc = subprocess.Popen([*self.podman(), "system", "service", "--time", "0", f"unix://{self.socket}"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env(),
                                         start_new_session=True)
        deadline = time.monotonic() + SERVICE_START_S
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.state / "service.log").read_text(errors="replace")[-400:] if self.state.exists() else ""
                raise EngineError(f"podman's API service did not start: {tail.strip() or 'no output'}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the service, reap what it left (conmon, containers' processes), unmount, remove the state."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        purge_state(self.state)


def _processes_naming(folder: Path) -> list[int]:
    """Pids of the processes of the folder's owner with an argument that is `folder` or a path inside it
    (`--root DIR/root`, or `--root=DIR/root`): ours alone, the folder being the run's. A path that only
    begins with the same characters (`DIR.names`, `DIR-other`) is another file, and its reader is left
    alone; so is another user's process, whatever it names (anyone may put any path in their arguments)."""
    try:
        owner = folder.stat().st_uid
    except OSError:  # gone: nothing of it runs
        return []
    mark = str(folder).encode()
    inside = mark + b"/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid != owner:
                continue
            for arg in (entry / "cmdline").read_bytes().split(b"\0"):
                value = arg.split(b"=", 1)[-1] if arg.startswith(b"-") else arg
                if value == mark or value.startswith(inside):
                    pids.append(int(entry.name))
                    break
    return pids


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder) + "/"
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)  # innermost first


def purge_state(state: Path) -> None:
    """Kill what still runs from a podman state folder, unmount under it and remove it."""
    if not state.exists():
        return
    if shutil.which("podman") and (state / "containers.conf").exists():
        service = PodmanService(state)
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # stops the containers through runc
            subprocess.run([*service.podman(), "rm", "--all", "--force", "--time", "0"], env=service.env(),
                           capture_output=True, timeout=60)
    for _ in range(3):
        pids = _processes_naming(state)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            break
        time.sleep(0.1)
    libc = ctypes.CDLL(None, use_errno=True)
    for point in _mounts_under(state):
        libc.umount2(point.encode(), MNT_DETACH)
    shutil.rmtree(state, ignore_errors=True)


@dataclass
class Engine:
    """A Docker Engine API client, and the podman service behind it when enilab started one."""

    client: Any
    service: PodmanService | None = None
    endpoint: str = ""
    images: set[str] = field(default_factory=set)

    def record(self) -> dict[str, Any]:
        """What `enilab clean` needs to undo this engine's work after a crash."""
        if self.service is not None:
            return {"kind": "podman", "state": str(self.service.state),
                    "pid": self.service.proc.pid if self.service.proc else None}
        return {"kind": "docker-host", "endpoint": self.endpoint}

    def ensure_default_image(self) -> str:
        """Import the busybox rootfs as `enilab/busybox:latest` unless the engine has it."""
        try:
            self.client.images.get(DEFAULT_IMAGE)
        except _docker().errors.ImageNotFound:
            answer = self.client.api.import_image_from_data(busybox_tar(), repository="enilab/busybox", tag="latest")
            image_id = _imported_id(answer)
            self.client.api.tag(image_id, "enilab/busybox", "latest")  # podman ignores import's tag
        return DEFAULT_IMAGE

    def has_image(self, name: str) -> bool:
        docker = _docker()
        if name in self.images:
            return True
        try:
            self.client.images.get(name)
        except docker.errors.ImageNotFound:
            return False
        self.images.add(name)
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.service is not None:
            self.service.stop()


def _imported_id(answer: Any) -> str:
    """The image id in an import's answer: podman sends `{"status": "sha256:..."}` lines, dockerd too."""
    import json

    text = answer if isinstance(answer, str) else answer.decode() if isinstance(answer, bytes) else str(answer)
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            status = json.loads(line).get("status", "")
            if isinstance(status, str) and status.strip():
                return status.strip().split()[-1]
    raise EngineError(f"the engine imported the default image but did not say its id: {text[:200]!r}")


def open_engine(state: Path) -> Engine:
    """The engine DOCKER_HOST names, or a podman API service started under `state` (which it owns)."""
    docker = _docker()
    host = os.environ.get("DOCKER_HOST")
    if host:
        try:
            client = docker.DockerClient(base_url=host, version="auto", timeout=120)
            client.ping()
        except docker.errors.DockerException as err:
            raise EngineError(f"DOCKER_HOST={host} does not answer as a Docker engine: {err}") from None
        return Engine(client, None, host)
    service = PodmanService(state)
    service.start()
    try:
        import requests

        client = docker.DockerClient(base_url=f"unix://{service.socket}", version=API_VERSION, timeout=120)
        deadline = time.monotonic() + SERVICE_START_S
        while time.monotonic() < deadline:  # the socket exists a moment before the service answers on it
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                client.ping()
                break
            time.sleep(0.05)
        else:
            raise EngineError(f"podman's API service at {service.socket} does not answer")
    except BaseException:
        service.stop()
        raise
    return Engine(client, service, f"unix://{service.socket}")


def own_state(prefix: str) -> Path:
    """Where a run keeps its podman state: its own folder among the run records (`RUN_DIR/runs/PREFIX`)."""
    from testbed.world.runs import RUN_DIR

    return RUN_DIR / "runs" / prefix


def purge(record: dict[str, Any], prefix: str) -> list[str]:
    """Undo a dead run's engine work from its run record: its containers (by id, and only if labelled with
    the run), and with a podman service of its own, the service, its processes, mounts and state.
    Returns the container ids removed."""
    engine = record.get("engine") or {}
    removed: list[str] = []
    if engine.get("kind") == "podman":
        state = Path(engine.get("state") or "")
        pid = engine.get("pid")
        if isinstance(pid, int) and state == own_state(prefix) and pid in _processes_naming(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        removed = [c for c in record.get("containers", []) if isinstance(c, str)]
        if state == own_state(prefix):  # only the folder a run of this prefix keeps, wherever a record points
            purge_state(state)
    elif engine.get("kind") == "docker-host" and isinstance(engine.get("endpoint"), str):
        docker = _docker()
        with contextlib.suppress(docker.errors.DockerException):
            client = docker.DockerClient(base_url=engine["endpoint"], version="auto", timeout=60)
            # by the run's label, not only the ids recorded: a run killed between making a container and
            # recording it left one no id names; and by a name the run gives (`<prefix>-p<n>`), as a label
            # alone is anyone's to set on a shared engine
            for container in client.containers.list(all=True, filters={"label": f"enilab.run={prefix}"}):
                if container.labels.get("enilab.run") == prefix and re.fullmatch(rf"{re.escape(prefix)}-p\d+",
                                                                                 container.name or ""):
                    with contextlib.suppress(docker.errors.NotFound):
                        container.remove(force=True)
                        removed.append(container.id)
    return removed
