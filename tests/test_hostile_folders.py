"""Forged and damaged DCP folders: nothing in a checkpoint folder is trusted.

Each class of attack a review found has a test here: code run through the ``.metadata``
unpickler, paths and sizes taken from ``.metadata`` on trust, raw errors from DCP, the
``latest`` pointer, ``prune`` and ``to_single_file``'s target, and files that cost far more
than their size. ``test_fuzz_dcp.py`` looks for more. Whatever could crash or hang the test
process on a regression runs in a subprocess with a time limit.
"""

import copyreg
import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter

from conftest import REPO, assert_identical
from saveload_lessons import distributed_checkpoints, launching
from saveload_lessons.checkpoint_io import CheckpointError

STATE = {"model": {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(4)},
         "progress": {"epoch": 2, "lr": 0.1}}


def saved(folder, state=STATE, files=1):
    """``state`` saved as a DCP folder in this one process, in ``files`` shard files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=FileSystemWriter(folder, thread_count=files), no_dist=True)
    return folder


def forge(folder, change):
    """Rewrite ``folder/.metadata`` after ``change(metadata)``: a clean pickle that lies."""
    path = folder / ".metadata"
    metadata = pickle.loads(path.read_bytes())
    change(metadata)
    path.write_bytes(pickle.dumps(metadata))


def storage_of(metadata, fqn):
    return next(info for index, info in metadata.storage_data.items() if index.fqn == fqn)


def target():
    return {"model": {"w": torch.zeros(3, 4), "b": torch.zeros(4)},
            "progress": {"epoch": 0, "lr": 0.0}}


def every_reader(folder, tmp_path, metadata_only_too=True):
    """Call each way of reading a folder (``check_metadata`` too, unless the damage is in the
    shards' bytes alone); return the errors, each of which must be a CheckpointError."""
    readers = [lambda: distributed_checkpoints.load(target(), folder),
               lambda: distributed_checkpoints.to_single_file(folder, tmp_path / "single.pt")]
    if metadata_only_too:
        readers.insert(0, lambda: distributed_checkpoints.check_metadata(folder))
    errors = []
    for read in readers:
        with pytest.raises(CheckpointError) as info:
            read()
        assert str(folder) in str(info.value) and len(str(info.value)) < 2000
        errors.append(str(info.value))
    assert not (tmp_path / "single.pt").exists()
    return errors


# --------------------------------------------------------------------------- code in .metadata

def _text(value):
    data = value.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _stack_global(module, name, argument):
    """Protocol 4: push module and name, STACK_GLOBAL, call it with one string argument."""
    return b"\x80\x04" + _text(module) + _text(name) + b"\x93" + _text(argument) + b"\x85R."


def _global(module, name, argument):
    """The GLOBAL opcode ("c module\\n name\\n"), after PROTO 4 (which allows dotted names)."""
    return b"\x80\x04c" + f"{module}\n{name}\n".encode() + _text(argument) + b"\x85R."


def _inst(module, name, argument):
    """INST: MARK, the arguments, then "i module\\n name\\n" calls the global with them."""
    return b"\x80\x04(" + _text(argument) + b"i" + f"{module}\n{name}\n".encode() + b"."


def _obj(module, name, argument):
    """OBJ: MARK, the global, the arguments, OBJ."""
    return b"\x80\x04(c" + f"{module}\n{name}\n".encode() + _text(argument) + b"o."


DCP_METADATA = "torch.distributed.checkpoint.metadata"
ROUTES = {
    "dotted name, STACK_GLOBAL": lambda marker: _stack_global(DCP_METADATA, "os.mkdir", marker),
    "dotted name, GLOBAL": lambda marker: _global(DCP_METADATA, "os.mkdir", marker),
    "dotted name, INST": lambda marker: _inst(DCP_METADATA, "os.mkdir", marker),
    "dotted name, OBJ": lambda marker: _obj(DCP_METADATA, "os.mkdir", marker),
    "an allowed module's attribute": lambda marker: _stack_global("pathlib", "os.mkdir", marker),
    "torch.load reached through torch": lambda marker: _stack_global("torch", "load", marker),
    "collections' sys": lambda marker: _stack_global("collections", "_sys.exit", marker),
    "copyreg": lambda marker: _stack_global("copyreg", "_reconstructor", marker),
    "builtins": lambda marker: _stack_global("builtins", "exec", f"import os; os.mkdir({marker!r})"),
}


@pytest.mark.parametrize("route", ROUTES)
def test_no_route_through_the_unpickler_runs_code(tmp_path, route):
    marker = str(tmp_path / "payload-ran")
    payload = ROUTES[route](marker)
    folder = saved(tmp_path / "hostile")
    (folder / ".metadata").write_bytes(payload)
    errors = every_reader(folder, tmp_path)
    assert all("refused" in error or "damaged" in error for error in errors)
    assert not os.path.exists(marker)


def test_the_dotted_payload_does_run_under_plain_pickle(tmp_path):
    """The payloads above are real: plain ``pickle`` (what DCP uses) runs them."""
    marker = tmp_path / "payload-ran"
    pickle.loads(ROUTES["dotted name, STACK_GLOBAL"](str(marker)))
    assert marker.is_dir()


def test_the_extension_registry_is_no_way_around(tmp_path):
    """EXT1 names a global through copyreg's extension registry; it goes through find_class too."""
    marker = tmp_path / "payload-ran"
    copyreg.add_extension("os", "mkdir", 0xF0)
    try:
        folder = saved(tmp_path / "hostile")
        (folder / ".metadata").write_bytes(b"\x80\x04\x82\xf0" + _text(str(marker)) + b"\x85R.")
        every_reader(folder, tmp_path)
    finally:
        copyreg.remove_extension("os", "mkdir", 0xF0)
    assert not marker.exists()


def _in_subprocess(code, timeout=60):
    """Run ``code`` in a fresh interpreter (the repository importable); return its output."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout


def test_deep_nesting_in_metadata_is_refused_not_a_crash(tmp_path):
    """A dict key nested 10**6 deep crashed the interpreter (C recursion while hashing it)."""
    folder = saved(tmp_path / "deep")
    depth = 10**6
    (folder / ".metadata").write_bytes(b"\x80\x04}" + b")" + b"\x85" * depth + b"K\x01s.")
    output = _in_subprocess(f"""
        from saveload_lessons import distributed_checkpoints
        try:
            distributed_checkpoints.check_metadata({str(folder)!r})
        except distributed_checkpoints.CheckpointError as error:
            print(error)
    """)
    assert "levels deep" in output


def test_a_huge_global_name_is_refused_with_a_short_message(tmp_path):
    folder = saved(tmp_path / "long")
    name = "x" * 100_000
    data = (b"\x80\x04" + _text("torch") + b"X" + len(name).to_bytes(4, "little") + name.encode()
            + b"\x93.")
    (folder / ".metadata").write_bytes(data)
    errors = every_reader(folder, tmp_path)
    assert all("100,005 characters" in error for error in errors)


# --------------------------------------------------------------------------- paths and sizes

def test_a_piece_stored_outside_the_folder_is_not_read(tmp_path):
    secret = tmp_path / "secret.distcp"
    folder = saved(tmp_path / "forged")
    (folder / "__0_0.distcp").rename(secret)                         # the real bytes, elsewhere
    (folder / "__0_0.distcp").write_bytes(secret.read_bytes())

    def outside(metadata):
        storage_of(metadata, "model.w").relative_path = "../secret.distcp"

    forge(folder, outside)
    errors = every_reader(folder, tmp_path)
    assert "not a file name inside the folder" in errors[0]


@pytest.mark.parametrize("link_to", ["/dev/zero", "outside"])
def test_a_shard_that_is_a_link_is_not_read(tmp_path, link_to):
    folder = saved(tmp_path / "linked")
    real = tmp_path / "outside"
    (folder / "__0_0.distcp").rename(real)
    (folder / "__0_0.distcp").symlink_to(real if link_to == "outside" else link_to)
    errors = every_reader(folder, tmp_path)
    assert "a link or not a regular file" in errors[0]


def _grown(size):
    def change(metadata):
        storage_of(metadata, "model.w").length = size
    return change


def _chunks(chunks):
    def change(metadata):
        metadata.state_dict_metadata["model.w"].chunks = chunks(metadata.state_dict_metadata["model.w"])
    return change


def _half(entry, start):
    return type(entry.chunks[0])(offsets=torch.Size([start, 0]), sizes=torch.Size([2, 4]))


def _transformed(metadata):
    storage_of(metadata, "model.w").transform_descriptors = ["zstd"]


def _shared_bytes(metadata):
    storage_of(metadata, "model.b").offset = storage_of(metadata, "model.w").offset


def _huge_tensor(metadata):
    entry = metadata.state_dict_metadata["model.w"]
    entry.size = torch.Size([10**5, 10**4])                 # 4 GB, from a file of a few KB
    entry.chunks[0].sizes = entry.size


@pytest.mark.parametrize("change, message", [
    (_grown(10**10), "which has"),
    (_chunks(lambda entry: []), "hold 0 of its 12 elements"),
    (_chunks(lambda entry: [_half(entry, 0), _half(entry, 1)]), "overlap|stored nowhere"),
    (_chunks(lambda entry: [_half(entry, 2)]), "lies outside its size"),
    (_transformed, "DCP extensions"),
    (_shared_bytes, "shares bytes"),
    (_huge_tensor, "holds 4,000,000,000 bytes of data in"),
], ids=["length-beyond-file", "no-pieces", "overlapping", "outside", "transforms", "shared-bytes",
        "huge"])
def test_metadata_that_lies_about_sizes_is_refused_before_reading(tmp_path, change, message):
    folder = saved(tmp_path / "forged")
    forge(folder, change)
    every_reader(folder, tmp_path)
    with pytest.raises(CheckpointError, match=message):
        distributed_checkpoints.check_metadata(folder)


def test_overlapping_pieces_that_cover_the_right_count_are_refused(tmp_path):
    """Two pieces of 6 elements each in a 12-element tensor, overlapping: the count is right."""
    state = {"w": torch.arange(12.0).reshape(3, 4), "v": torch.arange(12.0).reshape(3, 4)}
    folder = saved(tmp_path / "forged", state)

    def overlap(metadata):
        entry = metadata.state_dict_metadata["w"]
        chunk = type(entry.chunks[0])
        entry.chunks = [chunk(offsets=torch.Size([0, 0]), sizes=torch.Size([3, 2])),
                        chunk(offsets=torch.Size([0, 1]), sizes=torch.Size([3, 2]))]

    forge(folder, overlap)
    with pytest.raises(CheckpointError, match="stored nowhere|overlap"):
        distributed_checkpoints.check_metadata(folder)


# --------------------------------------------------------------------------- damaged shards

def _truncate(folder):
    shard = folder / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-100])


def _remove(folder):
    (folder / "__0_0.distcp").unlink()


def _swap(folder):
    first, second = folder / "__0_0.distcp", folder / "__0_1.distcp"
    data = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(data)


def _foreign_tensor(folder):
    shard = folder / "__0_0.distcp"
    shard.write_bytes(bytes(len(shard.read_bytes())))


@pytest.mark.parametrize("damage, message", [
    (_truncate, "which has|ends early"),
    (_remove, "missing"),
    (_swap, "__0_"),
    (_foreign_tensor, "__0_0.distcp"),
], ids=["truncated", "missing", "swapped", "zeroed"])
def test_damaged_shards_are_a_checkpoint_error_naming_the_folder(tmp_path, damage, message):
    folder = saved(tmp_path / "damaged", files=2)
    damage(folder)
    errors = every_reader(folder, tmp_path, metadata_only_too=False)
    assert all(re.search(message, error) for error in errors)


def test_a_failed_load_leaves_the_state_dict_as_it_was(tmp_path):
    """The first tensor's piece is fine, a later one is damaged: nothing may be copied."""
    folder = saved(tmp_path / "damaged", files=2)
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    damaged = storage_of(metadata, "model.b")
    shard = folder / damaged.relative_path
    data = bytearray(shard.read_bytes())
    data[damaged.offset:damaged.offset + damaged.length] = bytes(damaged.length)
    shard.write_bytes(bytes(data))

    state = target()
    before = {"model": {k: v.clone() for k, v in state["model"].items()}, "progress": dict(state["progress"])}
    with pytest.raises(CheckpointError, match="model.b"):
        distributed_checkpoints.load(state, folder)
    assert_identical(state, before)


def test_a_failed_run_quotes_the_cause_not_torchruns_report(tmp_path):
    (tmp_path / "failing_rank.py").write_text(
        "import os\nraise RuntimeError('the distinctive cause on rank ' + os.environ['RANK'])\n")
    with pytest.raises(launching.LaunchError) as info:
        launching.torchrun("failing_rank", nproc=2, env={"PYTHONPATH": str(tmp_path)})
    message = str(info.value)
    assert "the distinctive cause on rank 0" in message and "the distinctive cause on rank 1" in message
    assert "ChildFailedError" not in message and "Root Cause" not in message
    assert "rank 0 exit code 1" in message


# --------------------------------------------------------------------------- latest, prune, targets

def _pointer_outcome(root):
    """What latest_checkpoint(root) does, in a subprocess that may use 1 GB more memory than
    it holds after its imports, for 30 seconds."""
    return _in_subprocess(f"""
        import re, resource
        from saveload_lessons import distributed_checkpoints
        status = open("/proc/self/status").read()
        size = int(re.search(r"VmSize:\\s+(\\d+) kB", status).group(1)) * 1024 + 2**30
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
        try:
            print(distributed_checkpoints.latest_checkpoint({str(root)!r}))
        except distributed_checkpoints.CheckpointError as error:
            print("CheckpointError:", error)
    """, timeout=30)


@pytest.mark.parametrize("pointer", ["fifo", "dev-zero", "long"])
def test_the_latest_pointer_is_read_as_a_small_regular_file(tmp_path, pointer):
    latest = tmp_path / "latest"
    if pointer == "fifo":
        os.mkfifo(latest)
    elif pointer == "dev-zero":
        latest.symlink_to("/dev/zero")
    else:
        latest.write_text("step-" + "0" * 10_000_000)
    output = _pointer_outcome(tmp_path)
    assert output.startswith("CheckpointError:") and len(output) < 1000


def test_prune_never_deletes_the_folder_latest_names(tmp_path):
    canonical = saved(tmp_path / "step-000040")
    other_spelling = saved(tmp_path / "step-0000040")
    distributed_checkpoints.mark_latest(tmp_path, canonical)
    assert distributed_checkpoints.prune(tmp_path, keep=1) == []
    assert canonical.is_dir() and other_spelling.is_dir()
    assert distributed_checkpoints.latest_checkpoint(tmp_path) == canonical


def test_prune_removes_a_linked_folder_without_following_it(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    elsewhere = saved(tmp_path / "elsewhere")
    (root / "step-000010").symlink_to(elsewhere, target_is_directory=True)
    latest = saved(root / "step-000020")
    distributed_checkpoints.mark_latest(root, latest)
    deleted = distributed_checkpoints.prune(root, keep=1)
    assert [p.name for p in deleted] == ["step-000010"]
    assert not os.path.lexists(root / "step-000010") and (elsewhere / ".metadata").is_file()


def test_prune_tries_every_folder_and_then_says_which_it_could_not_delete(tmp_path, monkeypatch):
    folders = [saved(distributed_checkpoints.step_folder(tmp_path, step)) for step in (1, 2, 3, 4)]
    distributed_checkpoints.mark_latest(tmp_path, folders[-1])
    real_rmtree = distributed_checkpoints.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if path.name == "step-000001":
            raise PermissionError(13, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(distributed_checkpoints.shutil, "rmtree", rmtree)
    with pytest.raises(CheckpointError, match=r"could not delete step-000001 \(Permission denied\)"):
        distributed_checkpoints.prune(tmp_path, keep=1)
    assert sorted(p.name for p in distributed_checkpoints.step_folders(tmp_path)) == [
        "step-000001", "step-000004"]


@pytest.mark.parametrize("inside", [".metadata", "", "sub/one.pt"])
def test_to_single_file_refuses_a_target_inside_the_checkpoint(tmp_path, inside):
    folder = saved(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(CheckpointError, match="inside the checkpoint"):
        distributed_checkpoints.to_single_file(folder, folder / inside)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_from_single_file_refuses_a_tensor_larger_than_its_bytes(tmp_path):
    """An 800-byte file whose tensor has stride 0 would become a 64 MB folder."""
    path = tmp_path / "stride0.pt"
    torch.save({"w": torch.zeros(1).expand(4096, 4096)}, path)
    assert path.stat().st_size < 2000
    with pytest.raises(CheckpointError, match=str(path)):
        distributed_checkpoints.from_single_file(path, tmp_path / "folder")
    assert not (tmp_path / "folder").exists()


def test_a_real_folder_still_round_trips(tmp_path):
    folder = saved(tmp_path / "ckpt", files=2)
    loaded = target()
    distributed_checkpoints.load(loaded, folder)
    assert_identical(loaded, STATE)
    assert_identical(distributed_checkpoints.to_single_file(folder, tmp_path / "one.pt"), STATE)


# --------------------------------------------------------------------------- found by a red team

ENUM_BUILD = bytes.fromhex(
    "80048c25746f7263682e64697374726962757465642e636865636b706f696e742e6d657461646174618c14"
    "5f4d454d5f464f524d41545f454e434f44494e47934b0085814e7d288c075f76616c75655f4b638c065f6e61"
    "6d655f8c064841434b45447586622e")


def test_metadata_cannot_change_an_enum_member_of_the_process(tmp_path):
    """NEWOBJ on an Enum class hands back the process-wide member; BUILD then gave it other
    attributes, and every later DCP save of the process wrote a broken .metadata."""
    folder = saved(tmp_path / "enum")
    (folder / ".metadata").write_bytes(ENUM_BUILD)
    output = _in_subprocess(f"""
        from saveload_lessons import distributed_checkpoints
        from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING
        try:
            distributed_checkpoints.check_metadata({str(folder)!r})
        except distributed_checkpoints.CheckpointError as error:
            print("refused")
        print(_MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT.value)
    """)
    assert output.split() == ["refused", "0"]


def _big_offset(metadata):
    storage_of(metadata, "model.w").offset = 10**5000


def _unhashable_dtype(metadata):
    metadata.state_dict_metadata["model.w"].properties.dtype = []


def _too_many_dimensions(metadata):
    entry = metadata.state_dict_metadata["model.w"]
    entry.size = entry.chunks[0].sizes = torch.Size([1] * 31 + [3, 4])
    entry.chunks[0].offsets = torch.Size([0] * 33)


@pytest.mark.parametrize("change, message", [
    (_big_offset, "integers of 2\\*\\*61 or more"),
    (_unhashable_dtype, "described with"),
    (_too_many_dimensions, "described with"),
], ids=["5000-digit-offset", "unhashable-dtype", "33-dimensions"])
def test_absurd_fields_are_a_checkpoint_error(tmp_path, change, message):
    folder = saved(tmp_path / "forged")
    forge(folder, change)
    with pytest.raises(CheckpointError, match=message):
        distributed_checkpoints.check_metadata(folder)


def test_many_pieces_in_many_dimensions_are_checked_quickly(tmp_path):
    """1,414 one-element pieces that differ only in their last offset: swept along the
    first dimension they all meet (a million comparisons, 18 s per tensor)."""
    count, dims = 1414, 30
    state = {"w": torch.zeros([1] * (dims - 1) + [count], dtype=torch.uint8)}
    folder = saved(tmp_path / "pieces", state)

    def one_piece_per_element(metadata):
        entry, index = metadata.state_dict_metadata["w"], next(iter(metadata.storage_data))
        info = metadata.storage_data.pop(index)
        chunk = type(entry.chunks[0])
        entry.chunks = [chunk(offsets=torch.Size([0] * (dims - 1) + [i]),
                              sizes=torch.Size([1] * dims)) for i in range(count)]
        for i, piece in enumerate(entry.chunks):  # every piece in one byte of its own
            metadata.storage_data[type(index)("w", piece.offsets)] = type(info)(
                relative_path=info.relative_path, offset=i, length=1)

    forge(folder, one_piece_per_element)
    shard = folder / "__0_0.distcp"
    shard.write_bytes(bytes(count))
    # consistent, and checked within MAX_CHUNK_COMPARISONS: swept along the last dimension,
    # each piece meets no other (along the first, each would meet all the others before it)
    distributed_checkpoints.check_metadata(folder)


def test_a_step_folder_whose_metadata_is_a_link_is_not_complete(tmp_path):
    first = saved(distributed_checkpoints.step_folder(tmp_path, 1))
    second = distributed_checkpoints.step_folder(tmp_path, 2)
    second.mkdir()
    (second / ".metadata").symlink_to(first / ".metadata")
    assert not distributed_checkpoints.is_complete(second)
    with pytest.raises(CheckpointError, match="incomplete"):
        distributed_checkpoints.mark_latest(tmp_path, second)
