"""The documentation: ``mkdocs build --strict`` passes, and the generated references cover the code.

The site is built once into a temporary folder. Its configuration reference must list every key of every config
model, its CLI reference every subcommand and option, and the fault-kinds page may only name tests that exist.
The docs tools come with the ``test`` extra (``pip install -e ".[test]"``); without them this test fails and says so.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers.python") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[test]' (or '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def _text(page: Path) -> str:
    return html.unescape(page.read_text())


def _nested_models(annotation: typing.Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def test_the_site_builds_strict_with_every_page(site: Path) -> None:
    for page in ("index.html", "getting-started.html", "guide/own-data.html", "reference/config.html",
                 "reference/cli.html", "reference/api.html", "results.html", "faults.html", "architecture.html",
                 "paper.html"):
        assert (site / page).is_file(), page
    api = _text(site / "reference/api.html")
    assert 'id="camoe.pipeline.CTRPipeline"' in api and 'id="camoe.scoring.scorer.Scorer"' in api
    assert "Imports run one way" in _text(site / "architecture.html")  # ARCHITECTURE.md itself, included


def test_config_reference_lists_every_key_of_every_config_model(site: Path) -> None:
    from camoe import config

    page = _text(site / "reference/config.html")
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], path: str) -> None:
        seen.add(model)
        for name, field in model.model_fields.items():
            key = field.alias or name
            full = f"{path}.{key}" if path else key
            assert f"<code>{full}</code>" in page, f"{model.__name__}.{name}: '{full}' missing in reference/config"
            for sub in _nested_models(field.annotation):
                walk(sub, full + ("[]" if typing.get_origin(field.annotation) is list else ""))

    walk(config.RunConfig, "")
    exported = {getattr(config, n) for n in config.__all__}
    models = {m for m in exported if isinstance(m, type) and issubclass(m, BaseModel)}
    assert models <= seen, f"config models not reachable from RunConfig: {sorted(m.__name__ for m in models - seen)}"


def test_cli_reference_lists_every_subcommand_and_option(site: Path) -> None:
    from camoe.cli import build_parser

    page = _text(site / "reference/cli.html")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices
    for name, parser in sub.choices.items():
        assert f'id="camoe-{name}"' in page, f"camoe {name} missing in reference/cli"
        section = page.split(f'id="camoe-{name}"', 1)[1].split('<h2 id="camoe-', 1)[0]
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in section, f"camoe {name} {option} missing in reference/cli"


def test_fault_kinds_name_only_tests_that_exist() -> None:
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+\*?)`", (ROOT / "docs" / "faults.md").read_text())
    assert len(named) > 50
    for path, test in named:
        source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
        pattern = re.escape(test.rstrip("*")) + (r"\w*" if test.endswith("*") else r"\b")
        assert re.search(rf"^def {pattern}\(", source, re.M), f"docs/faults.md names {path}::{test}, which does not exist"


def test_readme_is_short_opens_with_the_two_commands_and_generated_pages_are_not_committed() -> None:
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 200
    assert lines[3].startswith("./run demo     # ") and lines[4].startswith("./run test     # ")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):  # relative links, as GitHub resolves them
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
    for generated in ("docs/reference/config.md", "docs/reference/cli.md"):
        assert not (ROOT / generated).exists(), f"{generated} is generated at build time; delete the stale copy"
