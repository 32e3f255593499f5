"""The README's Python example runs as written."""

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_own_loop_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "example.py"
    script.write_text(python_blocks()[0])
    runpy.run_path(str(script), run_name="__main__")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("level")]
    assert len(lines) == 4
    assert lines[0].startswith("level 0: 100.0% of weights left")
    # 0.8^3 of the 64x128 hidden weights, 0.9^3 of the 128x10 output weights
    kept = round(round(round(8192 * 0.8) * 0.8) * 0.8) + round(round(round(1280 * 0.9) * 0.9) * 0.9)
    assert lines[3].startswith(f"level 3: {100 * kept / 9472:.1f}% of weights left")
    accuracy = float(lines[3].split("test accuracy ")[1].rstrip("%"))
    assert accuracy > 80
    assert (tmp_path / "ticket_mask.safetensors").is_file()


def test_engine_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(_write(tmp_path, python_blocks()[1])))
    records = namespace["summary"]["records"]
    assert {(r["seed"], r["level"]) for r in records if r["variant"] == "ticket"} == {
        (s, lv) for s in (0, 1) for lv in (0, 1, 2)}


def _write(tmp_path: Path, code: str) -> Path:
    path = tmp_path / "engine_example.py"
    path.write_text(code)
    return path


def test_readme_test_commands_are_the_ones_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    bash = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = [ln for block in bash for ln in block.splitlines() if "-m pytest" in ln]
    assert commands == [ln for ln in ci if "-m pytest" in ln and not ln.startswith("#")]
    assert {c.split()[0] for c in commands} == {"OMP_NUM_THREADS=1", "OMP_NUM_THREADS=2"}
