"""The run folder's W&B identity: which server counts as logged in, and what a W&B run carries."""

import pytest

from cnnrepro.lit.runs import RunFolder, wandb_mode


@pytest.fixture
def home(tmp_path, monkeypatch):
    for k in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_CONFIG_DIR", "NETRC"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_auto_without_credentials_is_offline(home):
    assert wandb_mode("auto") == "offline"


def test_auto_with_a_login_to_the_public_host_is_online(home):
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k" + "0" * 39 + "\n")
    assert wandb_mode("auto") == "online"


def test_auto_recognises_a_self_hosted_server_by_wandb_base_url(home, monkeypatch):
    (home / ".netrc").write_text("machine wandb.lab.example.org\n  login user\n  password local-abc\n")
    assert wandb_mode("auto") == "offline"  # a login elsewhere is not a login to the public host
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.lab.example.org:8443")
    assert wandb_mode("auto") == "online"


def test_auto_recognises_wandb_login_host(home):
    # `wandb login --host URL` writes base_url into wandb's settings and the key into ~/.netrc
    (home / ".netrc").write_text("machine wandb.lab.example.org\n  login user\n  password local-abc\n")
    (home / ".config" / "wandb").mkdir(parents=True)
    (home / ".config" / "wandb" / "settings").write_text("[default]\nbase_url = https://wandb.lab.example.org\n")
    assert wandb_mode("auto") == "online"


def test_a_wandb_run_carries_group_job_type_tags_and_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = RunFolder.open("validate", runs_dir=tmp_path / "runs", group="alexnet")
    assert run.path == tmp_path / "runs" / "alexnet" / "validate-000" and run.name == "alexnet/validate-000"
    logger = run.wandb_logger("offline", project="cnnrepro", entity=None, tags=["alexnet", "protocol:tencrop"],
                              config={"model": {"arch": "alexnet", "lr": 0.01}, "protocol": "tencrop"})
    exp = logger.experiment
    try:
        assert exp.group == "alexnet" and exp.job_type == "validate"
        assert set(exp.tags) == {"alexnet", "protocol:tencrop"}
        assert exp.config["model"]["lr"] == 0.01 and exp.config["protocol"] == "tencrop"
        assert exp.id == run.wandb_id and run.wandb_mode == "offline"
    finally:
        exp.finish()
