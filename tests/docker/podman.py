"""The image under test, built for real with Debian's podman, and containers run from it.

No registry is involved. The base image ``debian:bookworm-slim`` is made here: ``mmdebstrap
--variant=minbase bookworm`` into a tarball (with the ``path-exclude`` rules that make Debian's
slim images slim), kept in a cache directory outside the checkout (``$GATEWAY_DOCKER_CACHE``,
default ``~/.cache/gateway-docker``) and made again only when its recipe changes or it is
older than :data:`BASE_MAX_AGE_S`. ``podman import`` turns it into an image, and one more layer
adds the host's extra CA certificates (``/usr/local/share/ca-certificates``), so that the
build's pip reaches PyPI through a TLS-inspecting proxy; that layer's label records the tarball
and certificates it was made from, and an unchanged base is reused as is, which keeps podman's
layer cache (and the build's pjsua2 cache mount) valid between runs. The gateway image is then
built by ``docker/build.sh`` with ``--pull=never``.

podman here needs ``runc`` (no crun) and resource limits within the host's hard limits: its
default ``nofile`` of 1048576 is refused where the hard limit is lower. Both go in a
``containers.conf`` of the cache directory, named by ``$CONTAINERS_CONF`` for every podman
command this module runs.

Every command is bounded by a timeout; :class:`Container` stops and removes its container on
exit, whatever happened, after saving its log.

``python -m tests.docker.podman`` only builds the image (filling every cache). CI runs it beside
the rest of the suite at low priority, so that the tier itself, run afterwards, finds the image
built and its timing-sensitive call is not squeezed by the suite.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.conftest import scaled

REPO = Path(__file__).resolve().parents[2]
#: The base image the Dockerfile starts from (what ``podman import`` names it).
BASE_IMAGE = "localhost/debian:bookworm-slim"
#: The image the tests build and run.
IMAGE = "localhost/gateway:test"
#: Label on the base image: which tarball and CA certificates it was made from.
BASE_LABEL = "org.gateway.test-base"
#: A base tarball older than this is made again (Debian's security updates).
BASE_MAX_AGE_S = 14 * 24 * 3600
_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What debian:bookworm-slim leaves out (its /etc/dpkg/dpkg.cfg.d/docker), and merged /usr
# without the usrmerge package (which would pull in perl).
_MMDEBSTRAP_OPTIONS = (
    "--variant=minbase", "--mode=root", "--format=tar",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/lintian/*",
    '--aptopt=Acquire::Languages "none"',
)
_EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


class PodmanError(RuntimeError):
    """A podman, mmdebstrap or build command failed or timed out; the message has its log."""


def cache_dir() -> Path:
    """``$GATEWAY_DOCKER_CACHE`` or ``~/.cache/gateway-docker``, created; never in the repo.

    Raises:
        PodmanError: The directory would be inside the checkout.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gateway-docker"
    path = Path(os.environ.get("GATEWAY_DOCKER_CACHE") or default).resolve()
    if path == REPO or REPO in path.parents:
        raise PodmanError(f"GATEWAY_DOCKER_CACHE ({path}) is inside the repository")
    path.mkdir(parents=True, exist_ok=True)
    return path


def containers_conf(cache: Path) -> Path:
    """A ``containers.conf`` with runc and ulimits no higher than this host allows."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = hard if hard != resource.RLIM_INFINITY else 1048576
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = min(nproc_hard if nproc_hard != resource.RLIM_INFINITY else 1 << 22, 32768)
    path = cache / "containers.conf"
    text = ("# Written by tests/docker/podman.py: podman on this host.\n"
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n')
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def podman_env(cache: Path) -> dict[str, str]:
    """The environment for podman commands: this module's ``containers.conf``."""
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf(cache))}


def run(argv: Sequence[str], *, env: Mapping[str, str], timeout_s: float,
        log: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to completion within ``timeout_s`` (scaled), output captured or logged.

    Raises:
        PodmanError: It timed out, or (with ``check``) exited non-zero.
    """
    limit = scaled(timeout_s)
    try:
        if log is None:
            done = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True,
                                  timeout=limit, stdin=subprocess.DEVNULL, check=False)
        else:
            with log.open("a") as out:
                done = subprocess.run(list(argv), env=dict(env), stdout=out,
                                      stderr=subprocess.STDOUT, text=True, timeout=limit,
                                      stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PodmanError(f"{argv[0]} {' '.join(argv[1:3])}... did not finish in {limit:.0f} s"
                          f"{_tail(log)}") from exc
    if check and done.returncode != 0:
        detail = _tail(log) if log is not None else f"\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        raise PodmanError(f"{' '.join(argv[:4])}... exited with {done.returncode}{detail}")
    return done


def _tail(log: Path | None, lines: int = 60) -> str:
    if log is None or not log.exists():
        return ""
    return "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def locked(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (another test run making the same base waits).

    Raises:
        PodmanError: Not acquired within ``timeout_s``.
    """
    with path.open("a") as handle:
        deadline = time.monotonic() + scaled(timeout_s)
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PodmanError(f"{path} still locked after {timeout_s} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _base_recipe() -> tuple[list[str], str]:
    """mmdebstrap's arguments (output path left out) and a key naming them."""
    version = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout.strip()
    options = [*_MMDEBSTRAP_OPTIONS, "bookworm"]
    key = hashlib.sha256("\n".join([version, *options, *_MIRRORS]).encode()).hexdigest()[:16]
    return options, key


def base_tarball(cache: Path, log: Path) -> Path:
    """The cached minbase bookworm rootfs tarball, made (about 75 s) when missing or stale."""
    options, key = _base_recipe()
    tarball = cache / f"debian-bookworm-minbase-{key}.tar"
    with locked(cache / ".base.lock", timeout_s=900):
        fresh = tarball.exists() and time.time() - tarball.stat().st_mtime < BASE_MAX_AGE_S
        if not fresh:
            part = tarball.with_suffix(".tar.part")
            part.unlink(missing_ok=True)
            run(["mmdebstrap", *options, str(part), *_MIRRORS], env=os.environ,
                timeout_s=900, log=log)
            part.rename(tarball)
            for old in cache.glob("debian-bookworm-minbase-*.tar"):
                if old != tarball:
                    old.unlink()
    return tarball


def extra_ca_files() -> list[Path]:
    """The host's extra CA certificates (what update-ca-certificates adds from /usr/local)."""
    if not _EXTRA_CA_DIR.is_dir():
        return []
    return sorted(p for p in _EXTRA_CA_DIR.rglob("*.crt") if p.is_file())


def _label_of(image: str, env: Mapping[str, str]) -> str | None:
    done = run(["podman", "image", "inspect", image, "--format",
                f'{{{{ index .Config.Labels "{BASE_LABEL}" }}}}'],
               env=env, timeout_s=60, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def base_image(cache: Path, log: Path) -> str:
    """``debian:bookworm-slim`` in podman's storage, from the tarball plus the host's CAs.

    Reused when its label matches the tarball and certificates, so that the layer cache holds.
    """
    env = podman_env(cache)
    tarball = base_tarball(cache, log)
    cas = extra_ca_files()
    digest = hashlib.sha256()
    for ca in cas:
        digest.update(ca.name.encode() + b"\0" + ca.read_bytes())
    label = f"{tarball.name}:{digest.hexdigest()[:16]}"
    with locked(cache / ".base.lock", timeout_s=900):
        if _label_of(BASE_IMAGE, env) == label:
            return BASE_IMAGE
        rootfs = f"localhost/gateway-test-rootfs:{tarball.stem.rsplit('-', 1)[-1]}"
        run(["podman", "import", str(tarball), rootfs], env=env, timeout_s=300, log=log)
        context = cache / "base-context"
        shutil.rmtree(context, ignore_errors=True)
        (context / "ca").mkdir(parents=True)
        for ca in cas:
            shutil.copy2(ca, context / "ca" / ca.name)
        (context / "Containerfile").write_text(
            f"FROM {rootfs}\n"
            "# The host's extra CAs: update-ca-certificates (ca-certificates' postinst) adds\n"
            "# them to the system bundle when a build stage installs the package.\n"
            "COPY ca/ /usr/local/share/ca-certificates/\n"
            f'LABEL {BASE_LABEL}="{label}"\n')
        run(["podman", "build", "--pull=never", "--format", "docker", "-t", BASE_IMAGE,
             str(context)], env=env, timeout_s=300, log=log)
    return BASE_IMAGE


@dataclass(frozen=True)
class BuiltImage:
    """The gateway image the tests run."""

    name: str
    image_id: str
    size_bytes: int
    build_seconds: float
    #: ``Config`` of ``podman image inspect`` (User, Env, Entrypoint, Cmd, Labels, ...).
    config: Mapping[str, object]
    #: The HEALTHCHECK (kept in docker format only), ``None`` if the image has none.
    healthcheck: Mapping[str, object] | None


def build_image(cache: Path, log: Path) -> BuiltImage:
    """Build :data:`IMAGE` with ``docker/build.sh`` on the local base; a cold build is ~10 min.

    Raises:
        PodmanError: The build failed (the message ends with its log).
    """
    env = podman_env(cache)
    # The Dockerfile's FROM debian:bookworm-slim finds this image (short-name lookup in
    # local storage; --pull=never keeps it from asking a registry).
    base_image(cache, log)
    previous = _image_id(IMAGE, env)
    start = time.monotonic()
    with locked(cache / ".build.lock", timeout_s=2400):
        run(["bash", str(REPO / "docker" / "build.sh"), "--engine", "podman", "--tag", IMAGE,
             "--", "--pull=never"],
            env=env, timeout_s=2400, log=log)
    seconds = time.monotonic() - start
    image_id = _image_id(IMAGE, env)
    assert image_id is not None, f"{IMAGE} missing after its build"
    if previous is not None and previous != image_id:
        run(["podman", "rmi", previous], env=env, timeout_s=120, check=False)
    # Old, unused intermediate layers of these builds (the recent ones stay as the cache).
    run(["podman", "image", "prune", "-f", "--filter", f"label={BASE_LABEL}",
         "--filter", "until=168h"], env=env, timeout_s=300, check=False)
    inspected = json.loads(run(["podman", "image", "inspect", IMAGE], env=env,
                               timeout_s=60).stdout)[0]
    return BuiltImage(name=IMAGE, image_id=image_id, size_bytes=int(inspected["Size"]),
                      build_seconds=seconds, config=inspected["Config"],
                      healthcheck=inspected.get("Healthcheck"))


def _image_id(image: str, env: Mapping[str, str]) -> str | None:
    done = run(["podman", "image", "inspect", image, "--format", "{{.Id}}"], env=env,
               timeout_s=60, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def run_image(cache: Path, *args: str, entrypoint: str | None = None,
              timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``podman run --rm`` of :data:`IMAGE` without a network: ``ARGS`` after the entry point
    (or after ``entrypoint``); not checked."""
    argv = ["podman", "run", "--rm", "--pull=never", "--network", "none"]
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    return run([*argv, IMAGE, *args], env=podman_env(cache), timeout_s=timeout_s, check=False)


class Container:
    """One container of :data:`IMAGE` on the host network, removed on exit.

    Args:
        cache: The cache directory (for ``containers.conf``).
        log_dir: Where ``container.log`` (its output) is saved when it is removed.
        volumes: ``(host path, container path)`` pairs, mounted read-only.
        env: Environment variables for the container.
        args: The command after the entry point (default: the image's ``run``).
    """

    def __init__(self, cache: Path, log_dir: Path, *, volumes: Sequence[tuple[Path, str]] = (),
                 env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.name = f"gateway-test-{uuid.uuid4().hex[:12]}"
        self.log_path = log_dir / "container.log"
        self._env = podman_env(cache)
        argv = ["podman", "run", "-d", "--name", self.name, "--network", "host",
                "--pull=never", "--health-interval", "disable"]
        for host, inside in volumes:
            argv += ["-v", f"{host}:{inside}:ro"]
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        self._argv = [*argv, IMAGE, *args]
        self._started = False

    def __enter__(self) -> Self:
        self._started = True
        run(self._argv, env=self._env, timeout_s=120)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    def podman(self, *args: str, timeout_s: float = 60,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        """``podman ARGS`` with this module's environment."""
        return run(["podman", *args], env=self._env, timeout_s=timeout_s, check=check)

    def state(self) -> dict[str, object]:
        """``.State`` of ``podman inspect`` (Running, ExitCode, ...); empty once removed."""
        done = self.podman("inspect", self.name, "--format", "{{json .State}}")
        if done.returncode != 0:
            return {}
        state: dict[str, object] = json.loads(done.stdout)
        return state

    def logs(self) -> str:
        """Everything the container wrote so far."""
        done = self.podman("logs", self.name)
        return done.stdout + done.stderr

    def stop(self, timeout_s: int = 20) -> int:
        """``podman stop`` (SIGTERM, then SIGKILL after ``timeout_s``); the exit code."""
        self.podman("stop", "-t", str(timeout_s), self.name, timeout_s=timeout_s + 30)
        code = self.state().get("ExitCode")
        return int(code) if isinstance(code, int) else -1

    def remove(self) -> None:
        """Save the log, then remove the container (killing it if it still runs)."""
        if not self._started:
            return
        with contextlib.suppress(PodmanError):
            self.log_path.write_text(self.logs())
        self.podman("rm", "-f", "-t", "5", self.name, timeout_s=60)
        self._started = False


def main() -> int:
    """Build the image (``python -m tests.docker.podman``); 0 on success."""
    cache = cache_dir()
    log = cache / "prebuild.log"
    log.write_text("")
    try:
        image = build_image(cache, log)
    except PodmanError as exc:
        print(f"[docker] prebuild failed (the docker tier builds again): {exc}")
        return 1
    print(f"[docker] prebuilt {image.name} in {image.build_seconds:.0f} s, "
          f"{image.size_bytes / 1e6:.0f} MB (log: {log})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
