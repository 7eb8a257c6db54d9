"""Operator settings from PRUNEPILOT_* variables and the generated local token."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from prunepilot.service import Settings, add_server_arguments, settings_from_args
from prunepilot.service._settings import flag_values


def test_from_env_parses_every_kind_of_field(tmp_path: Path) -> None:
    env = {
        "PRUNEPILOT_DATA_DIR": str(tmp_path),
        "PRUNEPILOT_TOKENS": "tok-aaaaaaaa=alice, tok-bbbbbbbb=bob",
        "PRUNEPILOT_MODEL_ALLOWLIST": "mypkg.models:*,other:make",
        "PRUNEPILOT_ALLOW_UNTRUSTED_MODELS": "yes",
        "PRUNEPILOT_MAX_UPLOAD_BYTES": "1000",
        "PRUNEPILOT_RAY_ADDRESS": "",
    }
    s = Settings.from_env(env, concurrent_jobs=3)
    assert s.data_dir == tmp_path and s.concurrent_jobs == 3
    assert s.tokens == {"tok-aaaaaaaa": "alice", "tok-bbbbbbbb": "bob"}
    assert s.model_allowlist == ("mypkg.models:*", "other:make")
    assert s.allow_untrusted_models is True and s.max_upload_bytes == 1000
    assert s.ray_address is None
    assert s.db_url == f"sqlite:///{tmp_path.resolve() / 'prunepilot.db'}"
    assert s.artifacts_path == tmp_path / "artifacts"
    js = Settings.from_env({"PRUNEPILOT_TOKENS": '{"tok-cccccccc": "carol"}'})
    assert js.tokens == {"tok-cccccccc": "carol"}
    with pytest.raises(ValueError, match="PRUNEPILOT_AUTH"):
        Settings.from_env({"PRUNEPILOT_AUTH": "maybe"})


def test_local_token_is_created_once(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    token = s.local_token()
    assert len(token) >= 20 and s.local_token() == token
    assert s.token_owners() == {token: "local"}
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600


def test_flags_are_derived_from_the_fields(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    add_server_arguments(p, token_dest="serve_tokens")
    argv = ["--data-dir", str(tmp_path), "--token", "tok-aaaaaaaa=alice", "--no-auth"]
    argv += ["--allow", "a.b:*", "--allow", "c.d:make", "--allow-untrusted-models"]
    argv += ["--max-upload-bytes", "5", "--ray-auth-mode", "token", "--worker-device", "cpu"]
    args = p.parse_args(argv)
    assert args.port == 8000 and args.log_level == "info"  # the server's own flags
    env = {"PRUNEPILOT_CONCURRENT_JOBS": "3", "PRUNEPILOT_MAX_UPLOAD_BYTES": "9"}
    s = Settings.from_env(env, **flag_values(args, {"tokens": "serve_tokens"}))
    assert s.data_dir == tmp_path and s.tokens == {"tok-aaaaaaaa": "alice"}
    assert s.auth is False and s.allow_untrusted_models is True
    assert s.model_allowlist == ("a.b:*", "c.d:make")
    assert s.max_upload_bytes == 5 and s.concurrent_jobs == 3  # flags win over variables
    assert s.ray_auth_mode == "token" and s.worker_device == "cpu"
    # flags not given leave the defaults; typed flags and choices are checked by argparse
    bare = settings_from_args(p.parse_args([]), token_dest="serve_tokens")
    assert bare.auth is True and bare.model_allowlist == ("prunepilot.demo.models:*",)
    for bad in (["--max-upload-bytes", "many"], ["--worker-device", "tpu"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    with pytest.raises(ValueError, match="--token expects TOKEN=OWNER"):
        settings_from_args(p.parse_args(["--token", "no-owner"]), token_dest="serve_tokens")


def test_plain_construction_ignores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRUNEPILOT_CONCURRENT_JOBS", "4")
    monkeypatch.setenv("prunepilot_max_trials", "7")  # only the capitalised names count
    assert Settings(data_dir=tmp_path).concurrent_jobs == 1
    from_env = Settings.from_env(data_dir=tmp_path)
    assert from_env.concurrent_jobs == 4 and from_env.max_trials == 1000
    with pytest.raises(ValueError, match=r"max_trials \(PRUNEPILOT_MAX_TRIALS\): .*greater"):
        Settings.from_env({"PRUNEPILOT_MAX_TRIALS": "0"})
