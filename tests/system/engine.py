"""podman for the image and topology tests: private storage, no registry.

Everything lives in MAPSYNCD_BUILD_ROOT/podman (image store, run state,
networks, containers.conf), never in the host's podman storage, so that the
tests neither see nor touch other users' images and containers.

No registry is reachable, so the base image is a root file system made by
mmdebstrap (debroot.get("minbase")) and imported with `podman import`. It
is tagged docker.io/library/debian:12 and :12-slim in the private store
only, and the build runs with --pull=never: contrib/container/Containerfile
stays exactly the file a user with access to Docker Hub builds.

What this machine needs (found by running podman 4.3.1 here; see
contrib/container/README.md):
- runtime runc, not crun: crun 1.8.1 stops every container with
  "crun: cgroups in hybrid mode not supported, drop all controllers from
  cgroupv2" on a host whose cgroup v2 hierarchy (mounted next to the v1
  controllers) has a controller enabled;
- explicit ulimits: without CAP_SYS_RESOURCE podman's defaults (NOFILE
  1048576) fail with "setrlimit `RLIMIT_NOFILE`: Operation not permitted",
  and podman lowers its own RLIMIT_NPROC to 32768 before starting the
  runtime, so the container's may not be higher.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import debroot  # noqa: E402

BASE_TAGS = ("localhost/debian:12", "docker.io/library/debian:12",
             "docker.io/library/debian:12-slim")
IMAGE = "localhost/mapsyncd:test"


def log(msg):
    print(f"[podman] {msg}", file=sys.stderr, flush=True)


def _ulimits():
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


class Podman:
    def __init__(self):
        if shutil.which("podman") is None:
            raise RuntimeError("podman is not installed (tools/install-deps test)")
        if shutil.which("runc") is None:
            raise RuntimeError("runc is not installed (tools/install-deps test)")
        top = os.path.join(os.environ["MAPSYNCD_BUILD_ROOT"], "podman")
        self.top = top
        for d in ("storage", "run", "tmp", "cni"):
            os.makedirs(os.path.join(top, d), exist_ok=True)
        conf = os.path.join(top, "containers.conf")
        with open(conf, "w") as f:
            f.write("# Written by tests/system/engine.py\n"
                    "[containers]\n"
                    f"default_ulimits = {json.dumps(_ulimits())}\n"
                    "[engine]\n"
                    'runtime = "runc"\n'
                    'events_logger = "file"\n'
                    'cgroup_manager = "cgroupfs"\n'
                    "[network]\n"
                    f'network_config_dir = "{top}/cni"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        self.global_args = ["podman", "--root", f"{top}/storage", "--runroot", f"{top}/run",
                            "--tmpdir", f"{top}/tmp", "--runtime", "runc",
                            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"]

    def __call__(self, *args, check=True, timeout=120, input=None, capture=True):
        argv = self.global_args + list(args)
        r = subprocess.run(argv, env=self.env, timeout=timeout, input=input,
                           capture_output=capture, text=True,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: exit {r.returncode}\n"
                               f"{r.stdout or ''}{r.stderr or ''}")
        return r

    def exists(self, image):
        return self("image", "exists", image, check=False).returncode == 0

    def base_image(self):
        """Imports the mmdebstrap root as debian:12 unless the store has this
        very root already (the root's stamp is the image's label)."""
        root = debroot.get("minbase")
        made = str(json.load(open(root + ".json"))["made"])
        if self.exists(BASE_TAGS[0]):
            label = self("image", "inspect", "--format",
                         '{{index .Labels "mapsyncd.debroot"}}', BASE_TAGS[0]).stdout.strip()
            if label == made:
                return BASE_TAGS[0]
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.top) as tmp:
            tar = os.path.join(tmp, "root.tar")
            subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", tar, "."], check=True)
            self("import", "--change", f"LABEL mapsyncd.debroot={made}",
                 "--change", 'CMD ["bash"]', tar, BASE_TAGS[0], timeout=300)
        for tag in BASE_TAGS[1:]:
            self("tag", BASE_TAGS[0], tag)
        log(f"imported {root} as {', '.join(BASE_TAGS)} in {time.monotonic() - t0:.0f} s")
        return BASE_TAGS[0]

    def build_image(self, tag=IMAGE):
        """Builds contrib/container/Containerfile from a clean copy of the
        source tree (tracked and new files, as tools/build-deb copies it)."""
        self.base_image()
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.top) as ctx:
            files = subprocess.run(
                ["git", "-C", SRC, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True, check=True).stdout.split(b"\0")
            with tarfile.open(os.path.join(ctx, "src.tar"), "w") as t:
                for f in files:
                    p = os.path.join(SRC.encode(), f)
                    if f and os.path.lexists(p):
                        t.add(p.decode(), arcname=f.decode(), recursive=False)
            tree = os.path.join(ctx, "src")
            os.mkdir(tree)
            with tarfile.open(os.path.join(ctx, "src.tar")) as t:
                t.extractall(tree)
            r = self("build", "--pull=never", "--network=host", "--layers",
                     "-f", os.path.join(tree, "contrib", "container", "Containerfile"),
                     "-t", tag, tree, timeout=1200, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"podman build failed ({r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-4000:]}")
        log(f"built {tag} in {time.monotonic() - t0:.0f} s")
        return tag

    def remove_containers(self, *names):
        for n in names:
            self("rm", "--force", "--time", "5", n, check=False, timeout=60)
