"""The operator docs stay true: the variable table matches ``Settings``, the commands parse, the
deploy command names every required template parameter, and links and anchors resolve."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from transcoder.ops import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OPERATIONS = DOCS / "operations.md"
TEMPLATE = ROOT / "deploy" / "template.yaml"
CONFIGURATION = DOCS / "configuration.md"


def load_template() -> dict[str, Any]:
    from cfnlint.decode.cfn_yaml import load  # understands !Ref, !Sub, ...

    template: dict[str, Any] = load(str(TEMPLATE))
    return template


def test_configuration_table_matches_settings() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "config_doc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_lambda_variable_the_template_sets_is_documented() -> None:
    template = load_template()
    doc = CONFIGURATION.read_text(encoding="utf-8")
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for variable in resource["Properties"]["Environment"]["Variables"]:
            assert f"`{variable}`" in doc, f"{name}: {variable} is not in configuration.md"


def shell_lines(markdown: str) -> list[str]:
    """Commands in ```sh blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()]
    return lines


def transcoder_invocations(markdown: str) -> list[list[str]]:
    """Arguments of every documented ``transcoder ...`` (in sh blocks and inline code) and
    ``docker compose run ... worker ...``."""
    found = []
    inline = re.findall(r"`(transcoder [^`]+)`", markdown)
    for line in shell_lines(markdown) + inline:
        command = line.split("|")[0]
        words = shlex.split(command.replace("$(", "").replace(")", ""))
        if words[:1] == ["transcoder"]:
            found.append(words[1:])
        elif words[:3] == ["docker", "compose", "run"] and "worker" in words:
            found.append(words[words.index("worker") + 1 :])
    return found


def test_documented_transcoder_commands_parse() -> None:
    invocations = transcoder_invocations(OPERATIONS.read_text(encoding="utf-8"))
    assert len(invocations) >= 10
    parser = cli.parser()
    for arguments in invocations:
        try:
            parser.parse_args(arguments)
        except SystemExit as exc:  # argparse exits on an unknown command or flag
            pytest.fail(f"`transcoder {' '.join(arguments)}` does not parse ({exc})")


def test_deploy_command_names_the_template_and_every_required_parameter() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    template = load_template()
    required = {name for name, spec in template["Parameters"].items() if "Default" not in spec}
    (params,) = re.findall(r'^PARAMS="([^"]+)"', text, flags=re.MULTILINE)
    given = {pair.split("=")[0] for pair in params.split()} | {"ImageTag"}
    assert required <= given, f"the documented deploy misses {required - given}"
    assert given <= set(template["Parameters"])
    deploys = [line for line in shell_lines(text) if line.startswith("sam deploy")]
    assert deploys
    for line in deploys:
        assert "--template-file deploy/template.yaml" in line
        assert "CAPABILITY_IAM" in line and "ImageTag=$TAG" in line


def slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")


@pytest.mark.parametrize("doc", ["operations.md", "configuration.md"])
def test_links_and_anchors_resolve(doc: str) -> None:
    text = (DOCS / doc).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (DOCS / path) if path else DOCS / doc
        assert linked.exists(), f"{doc}: broken link {target}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.MULTILINE)
            assert anchor in {slug(h) for h in headings}, f"{doc}: no heading for #{anchor}"
