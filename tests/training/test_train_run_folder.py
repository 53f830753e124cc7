"""A run folder is used once: a second fresh start there is refused, a resume keeps one metrics line
per step, and a damaged newest checkpoint is passed over for the newest intact one."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from tests.training_world import tiny_args, tiny_backbone, world  # noqa: F401  (fixtures)
from training import checkpoint
from training.train import main

ROOT = Path(__file__).resolve().parents[2]
FAST = ("data.val_split=", "run.log_every=1", "run.save_every=1")


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_second_fresh_start_is_refused_in_one_line(world, tiny_backbone, tmp_path, capsys):
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST)) == 0
    before = (tmp_path / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "run.overwrite=true" in err[0] and "Traceback" not in err[0]
    assert (tmp_path / "metrics.jsonl").read_text() == before  # nothing appended, nothing overwritten
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "run.overwrite=true")) == 0
    assert steps(tmp_path) == [1, 2]  # the old run's lines are gone, not doubled


def test_resume_keeps_one_line_per_step(world, tiny_backbone, tmp_path):
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "schedule.steps=3", "run.stop_at_step=2")) == 0
    # as if killed after logging step 2 but before its checkpoint was written
    checkpoint._discard(checkpoint.checkpoint_dir(tmp_path, 2))
    assert steps(tmp_path) == [1, 2]
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "schedule.steps=3", "--resume")) == 0
    assert steps(tmp_path) == [1, 2, 3]


def test_resume_passes_over_a_truncated_trainer_state(world, tiny_backbone, tmp_path, caplog):
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "schedule.steps=3", "run.stop_at_step=2")) == 0
    state = checkpoint.checkpoint_dir(tmp_path, 2) / checkpoint.TRAINER_STATE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert checkpoint.damage(state.parent) and not checkpoint.damage(checkpoint.checkpoint_dir(tmp_path, 1))
    caplog.set_level("INFO")
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "schedule.steps=3", "--resume")) == 0
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and "step-00000001" in warned[0]
    assert any("resumed from" in r.getMessage() and "step-00000001" in r.getMessage() for r in caplog.records)
    assert steps(tmp_path) == [1, 2, 3]


def test_resume_from_a_named_damaged_checkpoint_is_one_line(world, tiny_backbone, tmp_path, capsys):
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "schedule.steps=1")) == 0
    target = checkpoint.checkpoint_dir(tmp_path, 1)
    (target / checkpoint.TRAINER_STATE).write_bytes(b"PK\x03\x04 cut")
    capsys.readouterr()
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "schedule.steps=2", "--resume", str(target))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not load" in err[0]
    capsys.readouterr()
    assert main(tiny_args(world, tiny_backbone, tmp_path, *FAST, "schedule.steps=2", "--resume")) == 2  # all damaged
    err = capsys.readouterr().err.strip().splitlines()
    assert "no intact checkpoint" in err[-1]


def function_level_imports(path: Path, package: str) -> list[str]:
    """`import` statements inside functions of `path` that name a module of `package`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").split(".")[0] == package:
                    found.append(f"{path.name}:{inner.lineno} {inner.module}")
    return found


def test_run_types_are_a_leaf_and_no_import_hides_in_a_function():
    import training.run_state
    import training.train

    assert not hasattr(training.train, "Session")  # the chat has the Session; training has runs
    assert training.train.TrainingRun is training.run_state.TrainingRun
    for name in ("train.py", "setup.py", "run_state.py"):
        assert function_level_imports(ROOT / "training" / name, "training") == []


def test_tiny_recipe_settings_are_their_own_module():
    from training.recipes import tiny, tiny_config

    assert tiny.TinyRecipe is tiny_config.TinyRecipe and tiny.read_recipe is tiny_config.read_recipe
    assert function_level_imports(ROOT / "training" / "recipes" / "tiny_config.py", "training") == []
    source = (ROOT / "training" / "recipes" / "tiny.py").read_text()
    assert "class TinyRecipe" not in source


def test_the_tiny_recipe_modules_import_at_the_top_with_no_loop():
    """tiny -> tiny_preset -> tiny_results read the recipe's settings from the tiny_config leaf, not
    from the driver, so no import of theirs has to hide in a function to break a circle."""
    recipes = ROOT / "training" / "recipes"
    modules = [recipes / "tiny.py", recipes / "tiny_preset.py", *sorted((recipes / "tiny_results").glob("*.py"))]
    found = [hit for path in modules[1:] for hit in function_level_imports(path, "training")]
    assert found == []
    recipe_imports = [hit for hit in function_level_imports(modules[0], "training") if ".recipes." in hit]
    assert recipe_imports == []  # the driver's own lazy imports (training.train, ...) are for start-up time
    for path in modules[1:]:
        imported = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "training.recipes.tiny" not in imported, path.name
