"""Issue 11, "Why" 1 and 3-8: outputs never destroy anything, checks come before work, files
are readable by others under umask 022, exit codes mean one thing, the zoo does not depend on
the current directory. Each test reproduces one finding with the real CLI on a real ONNX file
verified against onnxruntime."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from porter.cli.main import main


@pytest.fixture()
def conv_onnx(tmp_path):
    """A 1-Conv model whose input ``x`` has open spatial sizes."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(2, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "h", "w"])], [w])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=8), path)
    return path


def test_foreign_folder_is_not_replaced_without_force(error_line, capsys, tmp_path, conv_onnx):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("x")
    assert main(["convert", str(conv_onnx), "--out", str(precious), "-q"]) == 2
    assert "porter did not write" in error_line()
    assert (precious / "thesis.txt").read_text() == "x"
    assert sorted(p.name for p in precious.iterdir()) == ["thesis.txt"]
    assert main(["convert", str(conv_onnx), "--out", str(precious), "-q", "--force"]) == 0
    assert (precious / "model.safetensors").is_file() and not (precious / "thesis.txt").exists()


def test_a_file_in_the_way_is_refused_even_with_force(error_line, capsys, tmp_path, conv_onnx):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for extra in ([], ["--force"]):
        assert main(["convert", str(conv_onnx), "--out", str(afile), "-q", *extra]) == 2
        assert "is a file" in error_line()
        assert afile.read_text() == "keep me"


def test_porters_own_output_is_replaced(tmp_path, conv_onnx):
    out = tmp_path / "o"
    assert main(["convert", str(conv_onnx), "--out", str(out), "-q"]) == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    assert main(["convert", str(conv_onnx), "--out", str(out), "-q"]) == 0
    assert json.loads((out / "manifest.json").read_text())["created"] >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx", "o"]  # nothing staged


@pytest.mark.parametrize("bad", [".", "sub/..", "/", ""])
def test_dot_and_root_outputs_are_one_line_errors(error_line, capsys, tmp_path, conv_onnx, bad, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert main(["convert", str(conv_onnx), "--out", bad, "-q"]) == 2
    assert "name a folder of its own" in error_line()


def test_outputs_are_readable_by_others_under_umask_022(tmp_path, conv_onnx, monkeypatch):
    old = os.umask(0o022)
    try:
        assert main(["convert", str(conv_onnx), "--out", str(tmp_path / "o"), "-q", "--publish",
                     "--zoo", str(tmp_path / "zoo"), "--name", "conv"]) == 0
    finally:
        os.umask(old)
    from porter.zoo.pull import pull

    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))
    pulled = pull("conv", tmp_path / "zoo")
    for root in (tmp_path / "o", tmp_path / "zoo", pulled):
        assert stat.S_IMODE(root.stat().st_mode) == 0o755
        for p in root.rglob("*"):
            assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_umask_077_is_honoured(tmp_path, conv_onnx):
    old = os.umask(0o077)
    try:
        assert main(["convert", str(conv_onnx), "--out", str(tmp_path / "o"), "-q"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o" / "model.safetensors").stat().st_mode) == 0o600


def test_default_output_is_out_name(tmp_path, conv_onnx, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(conv_onnx), "-q"]) == 0
    assert (tmp_path / "out" / "conv" / "model.safetensors").is_file()


def test_read_only_out_fails_before_any_work(capsys, tmp_path, conv_onnx):
    from pathlib import Path

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root writes anywhere chmod allows; not into /proc/sys though
        ro = Path("/proc/sys")
        assert ro.is_dir() and not os.access(ro, os.W_OK)
    try:
        assert main(["convert", str(conv_onnx), "--out", str(ro / "o")]) == 2
    finally:
        if ro.is_relative_to(tmp_path):
            ro.chmod(0o755)
    err = capsys.readouterr().err
    assert "not writable" in err and "import" not in err  # refused before the import stage


def test_bad_name_with_publish_writes_nothing(error_line, capsys, tmp_path, conv_onnx):
    assert main(["convert", str(conv_onnx), "--name", "../evil", "--publish", "--zoo",
                 str(tmp_path / "zz"), "--out", str(tmp_path / "o")]) == 2
    assert "invalid zoo entry name" in error_line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx"]


def test_zoo_that_is_a_file_is_refused_before_work(error_line, capsys, tmp_path, conv_onnx):
    (tmp_path / "zz").write_text("")
    assert main(["convert", str(conv_onnx), "--publish", "--zoo", str(tmp_path / "zz"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "is a file" in error_line()
    assert not (tmp_path / "o").exists()


def test_bad_cross_check_fails_before_parity(capsys, tmp_path, conv_onnx):
    junk = tmp_path / "random.onnx"
    junk.write_bytes(os.urandom(256))
    assert main(["convert", str(conv_onnx), "--cross-check", str(junk),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "porter: error:" in err and "verify" not in err and "import   " not in err
    assert not (tmp_path / "o").exists()


def test_shape_for_an_unknown_input_is_refused(error_line, capsys, tmp_path, conv_onnx):
    assert main(["convert", str(conv_onnx), "--shape", "y=1x3x64x64", "-q",
                 "--out", str(tmp_path / "o")]) == 2
    assert "inputs are 'x'" in error_line()
    assert main(["convert", str(conv_onnx), "--shape", "x=1x4x64x64", "-q",
                 "--out", str(tmp_path / "o")]) == 2
    assert "contradicts the model's fixed sizes" in error_line()
    assert main(["convert", str(conv_onnx), "--shape", "x=1x3x20x24", "-q",
                 "--out", str(tmp_path / "o")]) == 0
    cases = json.loads((tmp_path / "o" / "manifest.json").read_text())["parity"]["cases"]
    assert cases[0]["shapes"]["x"] == [1, 3, 20, 24]


@pytest.fixture()
def deep_onnx(tmp_path):
    """Two wide 5x5 convolutions and a sigmoid: long accumulations, so torch and onnxruntime
    round differently and parity has a small non-zero error."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.normal(size=(32, 3, 5, 5)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 32, 5, 5)).astype(np.float32) * 0.1, "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[2, 2, 2, 2]),
         helper.make_node("Conv", ["h", "w2"], ["z"], pads=[2, 2, 2, 2]),
         helper.make_node("Sigmoid", ["z"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])], [w1, w2])
    path = tmp_path / "deep.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=8), path)
    return path


def test_tol_means_max_abs_everywhere(error_line, capsys, tmp_path, deep_onnx):
    conv_onnx = deep_onnx
    # the conversion's real error vs onnxruntime is tiny but not zero; a bound below it fails
    assert main(["convert", str(conv_onnx), "--out", str(tmp_path / "a"), "--json"]) == 0
    worst = json.loads(capsys.readouterr().out)["parity"]["worst_max_abs"]
    assert worst > 0
    tol = worst / 2
    assert main(["convert", str(conv_onnx), "--tol", f"{tol:g}", "--out",
                 str(tmp_path / "b")]) == 1
    assert "parity failed" in error_line() and not (tmp_path / "b").exists()
    assert main(["verify", str(conv_onnx), "--tol", f"{tol:g}"]) == 1
    assert "parity failed" in error_line()
    assert main(["verify", str(conv_onnx), "--locate", "--tol", f"{tol:g}"]) == 1
    assert "first divergence" in capsys.readouterr().out
    assert main(["verify", str(conv_onnx), "--locate"]) == 0
    assert main(["verify", str(conv_onnx), "--tol", "-1"]) == 2


def test_zoo_list_from_another_directory_and_zoo_after_action(capsys, tmp_path, conv_onnx,
                                                              monkeypatch):
    zoo = tmp_path / "zoo"
    monkeypatch.setenv("PORTER_ZOO", str(zoo))
    assert main(["convert", str(conv_onnx), "--publish", "--name", "conv", "-q",
                 "--out", str(tmp_path / "o")]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["zoo", "list"]) == 0
    assert capsys.readouterr().out.startswith("conv@1 ")
    monkeypatch.delenv("PORTER_ZOO")
    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))
    assert main(["zoo", "list", "--zoo", str(zoo), "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["conv"]
    assert main(["zoo", "--zoo", str(zoo), "verify", "conv"]) == 0
    assert main(["zoo", "list"]) == 0  # the per-user default, empty here
    assert "no published models in " + str(tmp_path / "cache" / "zoo") in capsys.readouterr().out


def test_manifest_holds_no_machine_paths(tmp_path, conv_onnx):
    assert main(["convert", str(conv_onnx), "--out", str(tmp_path / "o"), "-q"]) == 0
    text = (tmp_path / "o" / "manifest.json").read_text()
    assert str(tmp_path) not in text
    m = json.loads(text)
    assert m["source"]["path"] == "conv.onnx" and m["source"]["files"] == ["conv.onnx"]


def test_os_errors_are_one_line_exit_2(error_line, capsys, tmp_path):
    from porter.cli import main as cli_main

    def boom(_args):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    parser = cli_main.build_parser()
    args = parser.parse_args(["zoo", "gc"])
    args.run = boom
    orig = cli_main.build_parser

    class P:
        def parse_args(self, _argv):
            return args

    cli_main.build_parser = lambda: P()
    try:
        assert cli_main.main([]) == 2
    finally:
        cli_main.build_parser = orig
    assert "No space left on device" in error_line()


def test_read_only_zoo_fails_before_any_work(capsys, tmp_path, conv_onnx):
    from pathlib import Path

    ro = tmp_path / "rozoo"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # running as root: a folder even root cannot write
        ro = Path("/proc/sys")
    try:
        assert main(["convert", str(conv_onnx), "--publish", "--zoo", str(ro),
                     "--out", str(tmp_path / "o")]) == 2
    finally:
        if ro.is_relative_to(tmp_path):
            ro.chmod(0o755)
    err = capsys.readouterr().err
    assert "not writable" in err and "import   " not in err
    assert not (tmp_path / "o").exists()


def test_report_inside_out_is_refused_before_work(error_line, capsys, tmp_path, conv_onnx):
    out = tmp_path / "o"
    assert main(["convert", str(conv_onnx), "--out", str(out), "--report", str(out / "rep")]) == 2
    assert "must not contain each other" in error_line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx"]


def test_progress_names_stages_with_time_and_an_estimate_on_stderr_under_json(capsys, tmp_path,
                                                                             conv_onnx):
    from PIL import Image

    picture = tmp_path / "pic.png"  # a second parity case, so there is time left to estimate
    Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)).save(picture)
    assert main(["convert", str(conv_onnx), "--shape", "x=1x3x16x16", "--json", "--input",
                 str(picture), "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout is the manifest alone
    err = captured.err.splitlines()
    stages = [line.split("] ", 1)[1].split()[0] for line in err if line.startswith("porter: [")]
    assert {"import", "convert", "verify", "write"} <= set(stages)
    assert any("case 1/2" in line and "left" in line for line in err)
