"""The one writer: byte comparison, dry run, stale files, edited files, path safety, atomicity
(including real crashes of a writing process, before and after the commit point)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.codegen.filetree import FileTree, UnsafePathError
from mlstack.diagnostics.errors import WriteConflictError
from mlstack.workspace.manifest import MANIFEST_NAME, ManifestError, read_manifest, sha256
from mlstack.workspace.plan import plan
from mlstack.workspace.writer import COMMIT_DIR, STAGING_PREFIX, pending_commit, write_tree
from tests.conftest import REPO

OLD = {"pkg/__init__.py": "", "pkg/settings.py": "A = 1\n", "pkg/sub/stale.py": "X = 0\n",
       "service/service.py": "print('v1')\n"}
NEW = {"pkg/__init__.py": "", "pkg/settings.py": "A = 2\n", "pkg/new.py": "B = 1\n",
       "service/service.py": "print('v2')\n"}


def tree_of(files: dict[str, str]) -> FileTree:
    tree = FileTree()
    for path, content in files.items():
        tree.add(path, content)
    return tree


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (the manifest included), as {relative path: bytes}."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expected(files: dict[str, str]) -> dict[str, bytes]:
    return {p: c.encode() for p, c in files.items()}


def test_writes_tree_and_manifest_then_nothing_when_unchanged(tmp_path):
    out = tmp_path / "out"
    result = write_tree(tree_of(OLD), out)
    assert result.written and sorted(result.paths("create")) == sorted([*OLD, MANIFEST_NAME])
    disk = snapshot(out)
    manifest = read_manifest(out)
    assert disk.pop(MANIFEST_NAME) == manifest.to_bytes()
    assert disk == expected(OLD)
    assert manifest.files == {p: sha256(c.encode()) for p, c in OLD.items()}
    mtimes = {p: (out / p).stat().st_mtime_ns for p in OLD}
    again = write_tree(tree_of(OLD), out)
    assert not again.written and again.changed == []
    assert {p: (out / p).stat().st_mtime_ns for p in OLD} == mtimes
    assert not list(out.glob(".mlstack-*"))


def test_updates_and_deletes_stale_generated_files_but_keeps_user_files(tmp_path):
    out = tmp_path / "out"
    write_tree(tree_of(OLD), out)
    (out / ".state").mkdir()
    (out / ".state" / "registry.db").write_bytes(b"state")
    (out / "service" / "notes.txt").write_text("mine\n")
    result = write_tree(tree_of(NEW), out)
    assert result.paths("create") == ["pkg/new.py"]
    assert result.paths("update") == ["pkg/settings.py", "service/service.py", MANIFEST_NAME]
    assert result.paths("delete") == ["pkg/sub/stale.py"]
    assert result.paths("unchanged") == ["pkg/__init__.py"]
    disk = snapshot(out)
    disk.pop(MANIFEST_NAME)
    assert disk == {**expected(NEW), ".state/registry.db": b"state",
                    "service/notes.txt": b"mine\n"}
    assert not (out / "pkg" / "sub").exists()  # emptied by the delete, so pruned
    assert set(read_manifest(out).files) == set(NEW)


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = write_tree(tree_of(OLD), out, dry_run=True)
    assert not result.written and not out.exists()
    assert sorted(result.paths("create")) == sorted([*OLD, MANIFEST_NAME])
    write_tree(tree_of(OLD), out)
    before = snapshot(out)
    result = write_tree(tree_of(NEW), out, dry_run=True)
    assert result.paths("delete") == ["pkg/sub/stale.py"] and not result.written
    assert snapshot(out) == before


def test_edited_file_is_not_overwritten_unless_forced(tmp_path):
    out = tmp_path / "out"
    write_tree(tree_of(OLD), out)
    (out / "pkg" / "settings.py").write_text("A = 'my edit'\n")
    (out / "pkg" / "sub" / "stale.py").write_text("X = 'my edit'\n")
    before = snapshot(out)
    with pytest.raises(WriteConflictError) as err:
        write_tree(tree_of(NEW), out)
    assert "pkg/settings.py" in err.value.message and "pkg/sub/stale.py" in err.value.message
    assert "service/service.py" not in err.value.message  # not edited: would just be updated
    assert "--force" in err.value.hint
    assert snapshot(out) == before
    # the same answer from a dry run and from plan's file diff
    with pytest.raises(WriteConflictError):
        write_tree(tree_of(NEW), out, dry_run=True)
    # even recompiling the SAME tree does not silently revert the user's edit
    with pytest.raises(WriteConflictError):
        write_tree(tree_of(OLD), out)
    write_tree(tree_of(NEW), out, force=True)
    disk = snapshot(out)
    disk.pop(MANIFEST_NAME)
    assert disk == expected(NEW)


def test_file_it_did_not_generate_is_not_overwritten(tmp_path):
    out = tmp_path / "out"
    (out / "pkg").mkdir(parents=True)
    (out / "pkg" / "settings.py").write_text("hand written\n")
    (out / "pkg" / "__init__.py").write_text("")  # same bytes as generated: adopted
    with pytest.raises(WriteConflictError, match="not generated by mlstack"):
        write_tree(tree_of(OLD), out)
    assert (out / "pkg" / "settings.py").read_text() == "hand written\n"
    write_tree(tree_of(OLD), out, force=True)
    assert (out / "pkg" / "settings.py").read_text() == OLD["pkg/settings.py"]


def test_paths_outside_the_output_folder_are_refused(tmp_path):
    tree = FileTree()
    for bad in ("../escape.py", "/etc/passwd", "a/../../b", "a\\b", "", "a//b", "./a"):
        with pytest.raises(UnsafePathError):
            tree.add(bad, "x")


def test_symlinks_leading_outside_are_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.py").write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "pkg").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the output folder"):
        write_tree(tree_of({"pkg/settings.py": "A = 1\n"}), out)
    (out / "pkg").unlink()
    (out / "pkg").mkdir()
    (out / "pkg" / "settings.py").symlink_to(outside / "victim.py")
    with pytest.raises(UnsafePathError):
        write_tree(tree_of({"pkg/settings.py": "A = 1\n"}), out, force=True)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.py"]
    assert (outside / "victim.py").read_text() == "precious\n"


def test_a_tampered_manifest_cannot_delete_outside(tmp_path):
    out = tmp_path / "out"
    write_tree(tree_of(OLD), out)
    (tmp_path / "victim.py").write_text("precious\n")
    data = json.loads((out / MANIFEST_NAME).read_text())
    data["files"]["../victim.py"] = sha256(b"precious\n")
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(UnsafePathError):
        write_tree(tree_of(NEW), out)
    (out / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError):
        write_tree(tree_of(NEW), out)
    assert (tmp_path / "victim.py").read_text() == "precious\n"


def test_failure_while_staging_leaves_the_old_tree(tmp_path, monkeypatch):
    from mlstack.workspace import writer

    out = tmp_path / "out"
    write_tree(tree_of(OLD), out)
    before = snapshot(out)
    calls = []
    real = writer._write_synced

    def failing(path, content):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, content)

    monkeypatch.setattr(writer, "_write_synced", failing)
    with pytest.raises(OSError, match="No space left"):
        write_tree(tree_of(NEW), out)
    assert snapshot(out) == before
    assert not list(out.glob(".mlstack-*"))


CRASHING_WRITER = """
import json, os, sys
from mlstack.workspace import writer
from mlstack.codegen.filetree import FileTree

where, out = sys.argv[1], sys.argv[2]
tree = FileTree()
for path, content in json.load(sys.stdin).items():
    tree.add(path, content)
calls = []
if where == "staging":   # die while staging the second file
    real_write = writer._write_synced
    def write(path, content):
        calls.append(path)
        if len(calls) == 2:
            os._exit(9)
        real_write(path, content)
    writer._write_synced = write
else:                    # die after the commit point, having moved one file into place
    real_replace = os.replace
    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            os._exit(9)
        real_replace(src, dst)
    writer.os.replace = replace
writer.write_tree(tree, out)
"""


def crash_writing(files: dict[str, str], out: Path, where: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, where, str(out)],
                          input=json.dumps(files), text=True, capture_output=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 9, proc.stderr


def test_crash_while_staging_leaves_the_old_tree(tmp_path):
    out = tmp_path / "out"
    write_tree(tree_of(OLD), out)
    before = snapshot(out)
    crash_writing(NEW, out, "staging")
    leftovers = list(out.glob(STAGING_PREFIX + "*"))
    assert leftovers, "the crash should have left its staging folder behind"
    assert {p: c for p, c in snapshot(out).items()
            if not p.startswith(STAGING_PREFIX)} == before
    assert not pending_commit(out)
    write_tree(tree_of(NEW), out)  # the next write cleans up and succeeds
    disk = snapshot(out)
    disk.pop(MANIFEST_NAME)
    assert disk == expected(NEW)


def test_crash_after_commit_is_finished_by_the_next_write(tmp_path):
    out = tmp_path / "out"
    write_tree(tree_of(OLD), out)
    crash_writing(NEW, out, "commit")
    assert pending_commit(out)
    assert read_manifest(out).files == {p: sha256(c.encode()) for p, c in OLD.items()}
    result = write_tree(tree_of(NEW), out)
    assert not (out / COMMIT_DIR).exists()
    assert result.changed == []  # rolled forward to exactly the tree that was committed
    disk = snapshot(out)
    assert disk.pop(MANIFEST_NAME) == read_manifest(out).to_bytes()
    assert disk == expected(NEW)
    assert set(read_manifest(out).files) == set(NEW)


def test_plan_reports_an_interrupted_write(tmp_path):
    from mlstack.workspace.build import compile_tree

    out = tmp_path / "out"
    compiled = compile_tree(REPO / "blueprints" / "churn" / "mlstack.yaml", out)
    write_tree(compiled.tree, out, system=compiled.system)
    files = {p: c.decode() for p, c in compiled.tree.items()}
    files[next(iter(files))] += "# changed\n"
    crash_writing(files, out, "commit")
    assert plan(compiled.system, compiled.tree, out).interrupted_write


def test_one_writer_at_a_time_per_output_folder(tmp_path):
    import threading

    from mlstack.workspace.writer import _exclusive

    out = tmp_path / "out"
    write_tree(tree_of(OLD), out)
    results = []
    with _exclusive(out.resolve()):
        worker = threading.Thread(target=lambda: results.append(write_tree(tree_of(NEW), out)))
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive() and results == []  # waits for the folder's lock
        assert (out / "pkg" / "settings.py").read_text() == OLD["pkg/settings.py"]
    worker.join(timeout=30)
    assert results and results[0].written
    assert (out / "pkg" / "settings.py").read_text() == NEW["pkg/settings.py"]


def test_a_generated_file_can_become_a_folder_and_back(tmp_path):
    out = tmp_path / "out"
    write_tree(tree_of({"pkg": "file\n"}), out)
    write_tree(tree_of({"pkg/mod.py": "A = 1\n"}), out)  # the stale file makes way
    assert snapshot(out).keys() == {"pkg/mod.py", MANIFEST_NAME}
    write_tree(tree_of({"pkg": "file again\n"}), out)  # the emptied folder is pruned
    assert (out / "pkg").read_text() == "file again\n"
    (out / "mine").write_text("user file\n")
    with pytest.raises(WriteConflictError, match="where a folder must go"):
        write_tree(tree_of({"mine/mod.py": "A = 1\n"}), out, force=True)
    assert (out / "mine").read_text() == "user file\n"
