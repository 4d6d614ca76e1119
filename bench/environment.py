"""The emulated Lambda python environment: runtime site dir, SharedLayer, function env.

On Lambda the handler sees three import roots, in this order: the function code
(/var/task), the layer (/opt/python) and the runtime's own site-packages, which provides
boto3 and its dependencies. The benchmark rebuilds the same three roots locally:

* function dir: ``functions/<name>`` as checked in (CodeUri of the function);
* layer: built by ``make layer`` (the same recipe ``sam build`` runs) into ``.bench/layer``;
* runtime: ``pip install --target .bench/runtime boto3==<pinned>`` with its dependencies.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BENCH_DIR, CONSTRAINTS_PATH, FUNCTION_DIR, REPO_ROOT, TEMPLATE_PATH

RUNTIME_DIR = BENCH_DIR / "runtime"
LAYER_DIR = BENCH_DIR / "layer"
LAYER_PYC_DIR = BENCH_DIR / "layer-pyc"
WORK_DIR = BENCH_DIR / "work"
_STAMP = ".bench-stamp"

# What Lambda sets for every python3.13 function (values that matter to botocore/powertools).
LAMBDA_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "ASIABENCHFAKEKEY0000",
    "AWS_SECRET_ACCESS_KEY": "bench-fake-secret-access-key",
    "AWS_SESSION_TOKEN": "bench-fake-session-token",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_LOG_FORMAT": "JSON",
    "LANG": "en_US.UTF-8",
    "TZ": ":UTC",
    # No shared config / credentials files and no instance metadata on Lambda.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# The local stand-in for the Secrets Manager webhook secret the template configures.
WEBHOOK_SECRET = "whsec_bench"
_SECRET_SOURCES = ("WEBHOOK_SECRET_ID", "WEBHOOK_SECRET_PARAMETER")


class BenchError(RuntimeError):
    """The benchmark could not set something up; the message says what."""


def _run(command: list[str], what: str, **kwargs: Any) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False, **kwargs)
    if result.returncode != 0:
        raise BenchError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{result.stdout}{result.stderr}"
        )
    return result.stdout


# ------------------------------------------------------------------------ function


@dataclass(frozen=True)
class FunctionConfig:
    logical_id: str
    code_dir: Path
    handler_module: str
    handler_name: str
    environment: dict[str, str]  # resolved from template.yaml, secret source replaced by a local one


def function_config(
    function_dir: Path = FUNCTION_DIR, table_names: dict[str, str] | None = None
) -> FunctionConfig:
    """The function whose CodeUri is ``function_dir`` as template.yaml deploys it (Globals merged,
    refs resolved; a webhook secret source replaced by the local secret)."""
    from devtools.template import (
        FUNCTION_TYPE,
        dynamodb_tables,
        function_environment,
        function_properties,
        load_template,
        resources_of_type,
    )

    template = load_template(TEMPLATE_PATH)
    logical_id = next(
        (
            name
            for name, resource in resources_of_type(template, FUNCTION_TYPE).items()
            if str((resource.get("Properties") or {}).get("CodeUri", ""))
            .rstrip("/")
            .endswith(function_dir.name)
        ),
        None,
    )
    if logical_id is None:
        raise BenchError(f"no {FUNCTION_TYPE} with CodeUri {function_dir.name}/ in {TEMPLATE_PATH.name}")
    props = function_properties(template, logical_id)
    module, _, name = str(props.get("Handler", "app.lambda_handler")).rpartition(".")
    refs = table_names or {table: f"bench-{table}" for table in dynamodb_tables(template)}
    declared = function_environment(template, logical_id, resource_refs=refs)
    env = {key: value for key, value in declared.items() if value is not None and key not in _SECRET_SOURCES}
    if any(source in declared for source in _SECRET_SOURCES):  # the webhook function's secret
        env["STRIPE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    env["AWS_LAMBDA_FUNCTION_NAME"] = logical_id
    return FunctionConfig(logical_id, REPO_ROOT / str(props["CodeUri"]), module, name, env)


def lambda_child_env(function: FunctionConfig, pythonpath: list[Path]) -> dict[str, str]:
    """A clean environment (nothing inherited but PATH) for a child emulating the Lambda runtime."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(WORK_DIR)}
    env.update(LAMBDA_ENV)
    env.update(function.environment)
    env["LAMBDA_TASK_ROOT"] = str(function.code_dir)
    env["PYTHONPATH"] = os.pathsep.join(str(path) for path in pythonpath)
    # /var/task and /opt are read-only on Lambda: nothing can cache bytecode between cold starts.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# ------------------------------------------------------------------------ runtime + layer


def pinned_version(package: str) -> str:
    pattern = re.compile(rf"^{re.escape(package)}==([^\s;#]+)", re.IGNORECASE)
    for line in CONSTRAINTS_PATH.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line.strip())
        if match:
            return match.group(1)
    raise BenchError(f"{package} is not pinned in {CONSTRAINTS_PATH.relative_to(REPO_ROOT)}")


def python_tag(python: str) -> str:
    out = _run([python, "-S", "-c", "import sys; print(sys.implementation.cache_tag)"], "probing python")
    return out.strip()


def build_runtime(pythons: list[str]) -> dict[str, Any]:
    """boto3 (+ deps) as the Lambda runtime ships it: installed and byte-compiled for each python."""
    version = pinned_version("boto3")
    tags = sorted({python_tag(python) for python in pythons})
    stamp = f"boto3=={version} {' '.join(tags)}"
    stamp_file = RUNTIME_DIR / _STAMP
    reused = stamp_file.exists() and stamp_file.read_text(encoding="utf-8") == stamp
    if not reused:
        shutil.rmtree(RUNTIME_DIR, ignore_errors=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--target",
                str(RUNTIME_DIR),
                f"boto3=={version}",
                "-c",
                str(CONSTRAINTS_PATH),
            ],
            "pip install of the emulated runtime",
        )
        for python in pythons:  # pip compiled for sys.executable; add the others' bytecode
            _run([python, "-S", "-m", "compileall", "-q", "-j", "0", str(RUNTIME_DIR)], "compileall")
        stamp_file.write_text(stamp, encoding="utf-8")
    return {"dir": str(RUNTIME_DIR), "boto3": version, "reused": reused, "bytecode_for": tags}


def build_layer() -> dict[str, Any]:
    """`make layer` into .bench/layer: the recipe sam build runs, without sam."""
    _run(
        ["make", "--no-print-directory", "layer", f"LAYER_DIR={LAYER_DIR}", f"PYTHON={sys.executable}"],
        "make layer",
        cwd=REPO_ROOT,
    )
    python_dir = LAYER_DIR / "python"
    if not (python_dir / "billwatch").is_dir():
        raise BenchError(f"make layer did not produce {python_dir}/billwatch")
    return {"dir": str(LAYER_DIR), "python_dir": str(python_dir), "purity": layer_purity(python_dir)}


def compiled_layer_copy(pythons: list[str]) -> Path:
    """A copy of the layer with bytecode, to show what shipping .pyc files would save."""
    shutil.rmtree(LAYER_PYC_DIR, ignore_errors=True)
    shutil.copytree(LAYER_DIR, LAYER_PYC_DIR)
    for python in pythons:
        _run([python, "-S", "-m", "compileall", "-q", "-j", "0", str(LAYER_PYC_DIR)], "compileall")
    return LAYER_PYC_DIR / "python"


def layer_purity(python_dir: Path) -> dict[str, Any]:
    """Wheel tags of every distribution in the layer and any compiled extension file."""
    distributions = []
    for dist_info in sorted(python_dir.glob("*.dist-info")):
        wheel = dist_info / "WHEEL"
        text = wheel.read_text(encoding="utf-8") if wheel.exists() else ""
        tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
        purelib = "Root-Is-Purelib: true" in text
        distributions.append(
            {
                "distribution": dist_info.name.removesuffix(".dist-info"),
                "tags": tags,
                "pure": purelib and all(tag.endswith("-none-any") for tag in tags),
            }
        )
    binaries = sorted(
        str(path.relative_to(python_dir))
        for path in python_dir.rglob("*")
        if path.is_file() and (path.suffix in (".so", ".pyd", ".dylib") or ".so." in path.name)
    )
    return {
        "distributions": distributions,
        "binary_files": binaries,
        "all_pure": not binaries and all(d["pure"] for d in distributions),
    }


# ------------------------------------------------------------------------ interpreters


def lambda_version_python(explicit: str | None) -> str | None:
    """A CPython 3.13 (the Lambda runtime's version) for an extra cold-start run, if one exists."""
    if explicit == "none":
        return None
    candidates = [explicit] if explicit else []
    if not explicit:
        candidates += [os.environ.get("BENCH_LAMBDA_PYTHON", ""), shutil.which("python3.13") or ""]
        pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
        candidates += sorted(glob.glob(str(pyenv_root / "versions" / "3.13*" / "bin" / "python3.13")))
    for candidate in filter(None, candidates):
        try:
            out = _run([candidate, "-S", "-c", "import sys; print(sys.version_info[:2])"], "probe")
        except (BenchError, OSError):
            continue
        if out.strip() == "(3, 13)":
            return candidate
    if explicit:
        raise BenchError(f"{explicit} is not a working CPython 3.13")
    return None


@contextmanager
def moto_on_loopback(repo_root: Path) -> Iterator[None]:
    """moto's server on 127.0.0.1 for what runs in this process, with the shared package importable."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(
        POWERTOOLS_LOG_LEVEL="WARNING",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    from devtools.moto_patches import install_item_rollback_transactions

    undo_transactions = install_item_rollback_transactions()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    sys.path[:0] = [str(repo_root / "layers" / "shared"), str(repo_root)]
    try:
        yield
    finally:
        server.stop()
        undo_transactions()
        os.environ.pop("AWS_ENDPOINT_URL", None)


def print_figures(
    measure: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], list[str]]
) -> None:
    """A benchmark run as a script: its report, or its figures as JSON with --json (for make bench)."""
    figures = measure()
    print(json.dumps(figures) if "--json" in sys.argv else "\n".join(render(figures)))
