"""Files a config names (``dialplan``, ``simulator.scenarios``): from the working directory
first, as always, else relative to the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """``site/conf/gateway.yaml`` naming ``plans/main.yaml`` and ``book.yaml`` beside it."""
    conf = tmp_path / "site" / "conf"
    (conf / "plans").mkdir(parents=True)
    (conf / "plans" / "main.yaml").write_text("routes: []\n")
    (conf / "book.yaml").write_text("scenarios: []\n")
    (conf / "gateway.yaml").write_text(
        "dialplan: plans/main.yaml\nsimulator: {scenarios: book.yaml}\n")
    return tmp_path


def test_relative_names_fall_back_to_the_config_files_directory(
        layout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(layout)
    settings = load_settings("site/conf/gateway.yaml", {})
    assert settings.dialplan == "site/conf/plans/main.yaml"
    assert settings.simulator.scenarios == "site/conf/book.yaml"
    assert Path(settings.dialplan).is_file()


def test_a_name_found_from_the_working_directory_keeps_meaning_that(
        layout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (layout / "plans").mkdir()
    (layout / "plans" / "main.yaml").write_text("routes: []\n")
    monkeypatch.chdir(layout)
    settings = load_settings("site/conf/gateway.yaml", {})
    assert settings.dialplan == "plans/main.yaml"
    assert settings.simulator.scenarios == "site/conf/book.yaml"


def test_absolute_missing_and_environment_names_are_left_as_given(
        layout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(layout)
    conf = layout / "site" / "conf" / "gateway.yaml"
    conf.write_text(f"dialplan: {layout}/x.yaml\nsimulator: {{scenarios: nowhere.yaml}}\n")
    settings = load_settings(conf, {})
    assert settings.dialplan == f"{layout}/x.yaml"
    assert settings.simulator.scenarios == "nowhere.yaml"  # the error names it as written
    env = load_settings(conf, {"GATEWAY_DIALPLAN": "plans/main.yaml"})
    assert env.dialplan == "plans/main.yaml"  # the environment is not in the file


@pytest.mark.parametrize("example", ["concierge", "voice_assistant"])
def test_the_shipped_examples_name_their_files_from_any_directory(
        example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for cwd in (ROOT, tmp_path):
        monkeypatch.chdir(cwd)
        settings = load_settings(ROOT / "examples" / example / "gateway.yaml", {})
        assert Path(settings.dialplan).resolve() == ROOT / "dialplans" / f"{example}.yaml"
        assert settings.simulator.scenarios is not None
        assert Path(settings.simulator.scenarios).resolve() == \
            ROOT / "gateway" / "sim" / "scenarios" / f"{example}.yaml"
