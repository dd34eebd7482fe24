"""The package installs and imports as ``mlpulse``, beside a service's own ``app`` package.

The source lives in ``app/``; a wheel that installed a top-level ``app`` would clash with
the most common package name of Python services (FastAPI's layout).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], check=False, cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_wheel_imports_as_mlpulse_beside_a_services_own_app_package(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", tmp_path / "dist", ROOT, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("mlpulse-*.whl"))
    # a fresh venv that sees the dependencies of this one, but not its editable mlpulse
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    target = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                 cwd=tmp_path).strip()
    Path(target, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        wheel, cwd=tmp_path)
    # a service laid out as FastAPI suggests: its own top-level package called app
    service = tmp_path / "service"
    (service / "app").mkdir(parents=True)
    (service / "app" / "__init__.py").write_text("")
    (service / "app" / "main.py").write_text(textwrap.dedent("""
        from mlpulse.sdk import Telemetry, monitor_prediction
        import app, mlpulse
        print(Telemetry.__module__, monitor_prediction.__name__, app.__file__, mlpulse.__file__)
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = run(python, "-m", "app.main", cwd=service, env=env)
    module, name, own, installed = out.split()
    assert module.startswith("mlpulse.sdk") and name == "monitor_prediction"
    assert Path(own) == service / "app" / "__init__.py"
    assert Path(installed).is_relative_to(venv)   # the wheel's, not this checkout's
    assert "mlpulse" in run(python, "-m", "mlpulse", "--help", cwd=service, env=env)
