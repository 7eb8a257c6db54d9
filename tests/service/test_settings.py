"""Operator settings from PRUNEPILOT_* variables and the generated local token."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunepilot.service import Settings


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
