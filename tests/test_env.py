"""Process set-up: quiet imports, one cache folder, CPU thread settings that users can override."""
import os
import subprocess
import sys


from ernie_qat.env import environment_defaults

SET_BY_US = {"ERNIE_QAT_HOME", "XDG_CACHE_HOME", *environment_defaults()}


def python(code: str, **env) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, as a user who has set none of the variables ernie_qat sets."""
    full_env = {k: v for k, v in os.environ.items() if k not in SET_BY_US}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_imports_are_quiet_and_cache_under_one_folder(tmp_path):
    result = python("import ernie_qat, paddlenlp, paddleslim; import ernie_qat.train.trainer", HOME=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    # Whatever the packages create at import lands in the project cache; the one exception:
    # paddle.dataset.common makes an empty ~/.cache/paddle/dataset, with no setting to move it.
    created = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}
    outside = created - {".cache", ".cache/paddle", ".cache/paddle/dataset"}
    assert all(p.startswith(".cache/ernie-qat") for p in outside), sorted(outside)
    homes = python("import ernie_qat, os; print(os.environ['PPNLP_HOME'], os.environ['HF_HOME'])", HOME=str(tmp_path))
    assert all(path.startswith(str(tmp_path / ".cache" / "ernie-qat")) for path in homes.stdout.split())


def test_cpu_settings_default_to_usable_cores_and_user_values_win():
    code = "import ernie_qat, os; from ernie_qat.env import cpu_settings; print(cpu_settings())"
    cores = len(os.sched_getaffinity(0))
    assert f"OMP_NUM_THREADS={cores} (ernie-qat)" in python(code).stdout
    assert "OMP_NUM_THREADS=1 (user)" in python(code, OMP_NUM_THREADS="1").stdout


def test_training_speed_settings_apply_unless_the_user_chose():
    code = ("import ernie_qat, paddle; from ernie_qat.env import cpu_settings; "
            "print(cpu_settings(), paddle.get_flags(['FLAGS_use_stride_kernel']))")
    default = python(code).stdout
    assert "FLAGS_use_stride_kernel=0 (ernie-qat)" in default and "'FLAGS_use_stride_kernel': False" in default
    assert "malloc: kept freed memory" in default
    user = python(code, FLAGS_use_stride_kernel="1", MALLOC_TOP_PAD_="65536").stdout
    assert "FLAGS_use_stride_kernel=1 (user)" in user and "'FLAGS_use_stride_kernel': True" in user
    assert "malloc: user settings" in user


def test_import_leaves_the_hosts_logging_alone_and_toolkit_warnings_are_one_line():
    code = ("import io, logging\n"
            "from ernie_qat.deploy import Predictor\n"
            "from ernie_qat.train.kernels import encoder_ops\n"
            "assert logging.root.handlers == [] and logging.root.level == logging.WARNING, logging.root.handlers\n"
            "handlers = [h for logger in [logging.root, *logging.Logger.manager.loggerDict.values()]\n"
            "            for h in getattr(logger, 'handlers', [])]\n"
            "assert not [h for h in handlers if isinstance(getattr(h, 'stream', None), io.StringIO)]\n"
            "assert encoder_ops() is None\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "logging.warning('x')")
    result = python(code, CXX="no-such-compiler")  # the compiler setuptools would build the kernels with
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("compiled CPU kernels unavailable (no C++ compiler found: no-such-compiler), "
                             "training uses Paddle's slower kernels\nWARNING:root:x\n")


def test_math_library_threads_take_effect_without_paddles_advisory():
    # OMP_NUM_THREADS is held back while paddle imports (it warns when > 1) and put back before OpenMP and MKL read it
    code = ("import ctypes, os, ernie_qat, paddle\n"
            "libs = os.path.join(os.path.dirname(paddle.__file__), 'libs')\n"
            "print(ctypes.CDLL(os.path.join(libs, 'libmklml_intel.so')).MKL_Get_Max_Threads(),\n"
            "      ctypes.CDLL(os.path.join(libs, 'libiomp5.so')).omp_get_max_threads(),\n"
            "      os.environ['OMP_NUM_THREADS'])")
    default, chosen = python(code), python(code, OMP_NUM_THREADS="3")
    for result in (default, chosen):
        assert result.returncode == 0 and result.stderr == "", result.stderr
    assert default.stdout.split() == [str(len(os.sched_getaffinity(0)))] * 3
    assert chosen.stdout.split()[1:] == ["3", "3"]  # MKL takes at most the physical cores
