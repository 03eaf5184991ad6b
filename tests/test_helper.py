"""helper: offline Fashion-MNIST and plots."""

import gzip
import os
import shutil

import numpy as np
import pytest
import torch
from torchvision import datasets

import helper

DEBIAN = helper.DEBIAN_FASHION_MNIST


# --------------------------------------------------------------------------- data

@pytest.fixture
def gz_copy(tmp_path):
    """A writable copy of Debian's four .gz files."""
    source = tmp_path / "source"
    shutil.copytree(DEBIAN, source)
    return source


def test_install_from_debian_copy_gives_torchvision_the_real_data(tmp_path):
    root = tmp_path / "data"
    raw = helper.install_fashion_mnist(DEBIAN, root)
    assert raw == root / "FashionMNIST" / "raw"
    assert helper.fashion_mnist_is_ready(root)
    train = datasets.FashionMNIST(root, train=True, download=True)  # files there: no download
    test = datasets.FashionMNIST(root, train=False, download=True)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.targets.bincount().tolist() == [6000] * 10
    oct_mode = oct((raw / "train-labels-idx1-ubyte").stat().st_mode & 0o777)
    assert oct_mode == "0o644"


def test_uncompressed_source_files_are_accepted(tmp_path, gz_copy):
    for gz in gz_copy.glob("*.gz"):
        with gzip.open(gz) as src, open(gz.with_suffix(""), "wb") as out:
            shutil.copyfileobj(src, out)
        gz.unlink()
    helper.install_fashion_mnist(gz_copy, tmp_path / "data")
    assert helper.fashion_mnist_is_ready(tmp_path / "data")


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif how == "short content":
        raw = gzip.decompress(data)
        path.write_bytes(gzip.compress(raw[:-100], compresslevel=1))
    elif how == "corrupt deflate stream":  # the gzip header is intact
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64])
                         + data[middle + 64:])
    elif how == "inflates far beyond the original":
        path.write_bytes(gzip.compress(bytes(300_000_000), compresslevel=1))


@pytest.mark.parametrize("how, reason", [
    ("truncated", "ended before"),
    ("random bytes", "(?i)not a gzipped file"),
    ("short content", "truncated or damaged"),
    ("corrupt deflate stream", "is not a usable Fashion-MNIST file"),
    ("inflates far beyond the original", "holds more than the 47040016 bytes of the original"),
])
def test_damaged_source_is_rejected_and_good_data_is_kept(tmp_path, gz_copy, how, reason):
    root = tmp_path / "data"
    helper.install_fashion_mnist(DEBIAN, root)
    good = (helper.fashion_mnist_raw_dir(root) / "train-images-idx3-ubyte").read_bytes()
    _damage(gz_copy / "train-images-idx3-ubyte.gz", how)

    with pytest.raises(helper.FashionMNISTError, match=reason) as info:
        helper.install_fashion_mnist(gz_copy, root)

    assert "train-images-idx3-ubyte.gz" in str(info.value)
    raw = helper.fashion_mnist_raw_dir(root)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == good
    assert sorted(p.name for p in raw.iterdir()) == sorted(helper.IDX_FILES)  # no leftovers


def test_a_file_of_the_wrong_kind_is_named(tmp_path, gz_copy):
    shutil.copy(gz_copy / "t10k-labels-idx1-ubyte.gz", gz_copy / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(helper.FashionMNISTError, match="header says magic 0x801"):
        helper.install_fashion_mnist(gz_copy, tmp_path / "data")


def test_missing_source_file_and_folder(tmp_path, gz_copy):
    (gz_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(helper.FashionMNISTError, match="has no train-labels-idx1-ubyte.gz"):
        helper.install_fashion_mnist(gz_copy, tmp_path / "data")
    with pytest.raises(helper.FashionMNISTError, match="does not exist"):
        helper.install_fashion_mnist(tmp_path / "nowhere", tmp_path / "data")


def test_damaged_prepared_file_is_not_ready(tmp_path):
    root = tmp_path / "data"
    helper.install_fashion_mnist(DEBIAN, root)
    target = helper.fashion_mnist_raw_dir(root) / "t10k-labels-idx1-ubyte"
    os.truncate(target, 5000)
    assert not helper.fashion_mnist_is_ready(root)
    helper.prepare_fashion_mnist(root, source=DEBIAN)  # repairs it
    assert helper.fashion_mnist_is_ready(root)


def test_prepare_uses_the_environment_variable(tmp_path, gz_copy, monkeypatch):
    monkeypatch.setenv(helper.SOURCE_ENV_VAR, str(gz_copy))
    monkeypatch.setattr(helper, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    helper.prepare_fashion_mnist(tmp_path / "data", download=False)
    assert helper.fashion_mnist_is_ready(tmp_path / "data")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No local copy anywhere, and every download mirror unreachable."""
    monkeypatch.delenv(helper.SOURCE_ENV_VAR, raising=False)
    monkeypatch.setattr(helper, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])


def test_no_data_and_no_network_gives_one_clear_message(tmp_path, offline):
    with pytest.raises(helper.FashionMNISTError) as info:
        helper.prepare_fashion_mnist(tmp_path / "data")
    message = str(info.value)
    assert "could not be downloaded" in message
    assert "python -m helper --source" in message
    assert "dataset-fashion-mnist" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_no_download_allowed(tmp_path, offline):
    with pytest.raises(helper.FashionMNISTError, match="provide a local copy"):
        helper.prepare_fashion_mnist(tmp_path / "data", download=False)


def test_an_explicit_source_is_checked_even_when_the_data_is_ready(tmp_path, gz_copy, capsys):
    root = tmp_path / "data"
    helper.install_fashion_mnist(gz_copy, root)
    with gzip.open(gz_copy / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        good = f.read()
    with gzip.open(gz_copy / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(good[:5000])
    assert helper.main(["--root", str(root), "--source", str(gz_copy)]) == 1
    assert "t10k-labels-idx1-ubyte.gz is not a usable Fashion-MNIST file" in capsys.readouterr().err
    assert helper.fashion_mnist_is_ready(root)  # the good data was kept


def test_command_line(tmp_path, gz_copy, capsys):
    assert helper.main(["--root", str(tmp_path / "data"), "--source", str(gz_copy)]) == 0
    assert "ready" in capsys.readouterr().out
    assert helper.main(["--root", str(tmp_path / "x"), "--source", str(tmp_path / "none")]) == 1
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- the data folder

def test_a_data_folder_that_did_not_exist_is_created_and_said_so(tmp_path, gz_copy, monkeypatch,
                                                                capsys):
    """A misspelt data_dir does not go unnoticed: one line, the first time only."""
    monkeypatch.setenv(helper.SOURCE_ENV_VAR, str(gz_copy))
    root = tmp_path / "typo" / "data"
    helper.prepare_fashion_mnist(root)
    assert capsys.readouterr().out == (f"Note: the data folder {root} did not exist, so it was "
                                       "created (check data_dir if you meant another folder).\n")
    helper.prepare_fashion_mnist(root)
    assert capsys.readouterr().out == ""


def test_a_new_data_folder_is_said_in_the_notebooks_language(tmp_path, gz_copy, monkeypatch,
                                                             capsys, chinese):
    monkeypatch.setenv(helper.SOURCE_ENV_VAR, str(gz_copy))
    helper.prepare_fashion_mnist(tmp_path / "data")
    assert capsys.readouterr().out == (f"注意：数据目录 {tmp_path / 'data'} 原本不存在，现已创建"
                                       "（如果你想用的是另一个目录，请检查 data_dir）。\n")


def test_an_existing_data_folder_gets_no_note(tmp_path, gz_copy, capsys):
    (tmp_path / "data").mkdir()
    helper.prepare_fashion_mnist(tmp_path / "data", source=gz_copy)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("existing", ["", "data", "data/FashionMNIST"])
def test_a_failed_preparation_removes_the_folders_it_created(existing, tmp_path, offline, capsys):
    """Whatever part of ROOT/FashionMNIST/raw existed stays; what the failure created goes."""
    root = tmp_path / "new" / "data"
    if existing:
        (tmp_path / "new" / existing).mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(helper.FashionMNISTError, match="could not be downloaded"):
        helper.prepare_fashion_mnist(root)
    assert sorted(tmp_path.rglob("*")) == before
    assert capsys.readouterr().out == ""


def test_a_failed_copy_from_a_source_removes_the_folders_it_created(tmp_path, gz_copy):
    (gz_copy / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    with pytest.raises(helper.FashionMNISTError, match="is not a usable Fashion-MNIST file"):
        helper.prepare_fashion_mnist(tmp_path / "data", source=gz_copy)
    assert not (tmp_path / "data").exists()


def test_an_interrupted_preparation_removes_the_folders_it_created(tmp_path, gz_copy, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(helper, "_install_idx_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        helper.prepare_fashion_mnist(tmp_path / "data", source=gz_copy)
    assert not (tmp_path / "data").exists()


def test_the_missing_data_message_follows_the_notebooks_language(tmp_path, offline, chinese):
    with pytest.raises(helper.FashionMNISTError) as info:
        helper.prepare_fashion_mnist(tmp_path / "data", download=False)
    assert str(info.value).startswith(f"{tmp_path / 'data' / 'FashionMNIST' / 'raw'} 中没有 "
                                      "Fashion-MNIST，而且已关闭下载。请联网后再运行一次")
    with pytest.raises(helper.FashionMNISTError, match="Fashion-MNIST 的源目录 .* 不存在"):
        helper.prepare_fashion_mnist(tmp_path / "data", source=tmp_path / "none")


def epochs_of(loader, seed, epochs):
    """Every batch of ``epochs`` epochs from ``seed``, and the generator state afterwards."""
    torch.manual_seed(seed)
    batches = [batch for _ in range(epochs) for batch in loader]
    return batches, torch.get_rng_state()


def assert_same_batches(expected, actual):
    (expected_batches, expected_rng), (batches, rng) = expected, actual
    assert len(batches) == len(expected_batches)
    for (images, labels), (want_images, want_labels) in zip(batches, expected_batches):
        assert images.dtype == want_images.dtype and labels.dtype == want_labels.dtype
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
    assert torch.equal(rng, expected_rng), "the loaders used the random generator differently"


@pytest.mark.parametrize("train_size, epochs", [(None, 1), (1000, 3)])
def test_fast_loaders_give_torchvisions_batches_bit_for_bit(data_dir, train_size, epochs):
    """helper's loaders against lesson 1's: every batch of whole epochs, the same
    shuffling at every epoch, and the generator left in the same state."""
    from conftest import TRANSFORM

    trainset = datasets.FashionMNIST(data_dir, train=True, transform=TRANSFORM)
    testset = datasets.FashionMNIST(data_dir, train=False, transform=TRANSFORM)
    if train_size is not None:
        trainset = torch.utils.data.Subset(trainset, range(train_size))
    trainloader, testloader = helper.fashion_mnist_loaders(data_dir, train_size=train_size)

    classic_train = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)
    assert_same_batches(epochs_of(classic_train, 3, epochs), epochs_of(trainloader, 3, epochs))
    classic_test = torch.utils.data.DataLoader(testset, batch_size=64)
    assert_same_batches(epochs_of(classic_test, 4, 1), epochs_of(testloader, 4, 1))


def test_tensor_loader_batches_and_length():
    images, labels = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    loader = helper.tensor_loader(images, labels, batch_size=4)
    assert len(loader) == 3
    assert [batch[1].tolist() for batch in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("train_size", [0, 60001, 2.5, True])
def test_fashion_mnist_loaders_check_train_size(data_dir, train_size):
    with pytest.raises(ValueError, match="train_size must be an integer from 1 to 60000"):
        helper.fashion_mnist_loaders(data_dir, train_size=train_size)
    trainloader, _ = helper.fashion_mnist_loaders(data_dir, train_size=100)
    assert len(trainloader.dataset) == 100 and len(trainloader) == 2


# --------------------------------------------------------------------------- plots

def test_imshow_undoes_the_normalisation_in_grey(fashion_slices):
    train, _ = fashion_slices
    image, _ = train[0]  # normalised with mean 0.5, std 0.5
    ax = helper.imshow(image, title="a")
    shown = ax.images[0].get_array()
    assert np.allclose(shown, (image.squeeze() * 0.5 + 0.5).numpy())
    assert ax.images[0].get_cmap().name == "gray"
    assert ax.get_title() == "a"


def test_imshow_takes_flat_images_and_other_statistics():
    pixels = torch.linspace(0, 1, 784)
    normalised = (pixels - 0.2860) / 0.3530
    ax = helper.imshow(normalised, mean=0.2860, std=0.3530)
    assert np.allclose(ax.images[0].get_array(), pixels.reshape(28, 28).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="one greyscale image"):
        helper.imshow(torch.zeros(3, 28, 28))
    with pytest.raises(ValueError, match="square"):
        helper.imshow(torch.zeros(780))


def test_view_classify_leaves_its_inputs_alone():
    image = torch.rand(1, 28, 28)
    probabilities = torch.softmax(torch.randn(1, 10, requires_grad=True), dim=1)
    image_before, ps_before = image.clone(), probabilities.detach().clone()

    fig = helper.view_classify(image, probabilities)

    assert torch.equal(image, image_before) and image.shape == (1, 28, 28)
    assert torch.equal(probabilities.detach(), ps_before)
    bars = fig.axes[1].patches
    assert [round(b.get_width(), 6) for b in bars] == [round(p, 6) for p in ps_before[0].tolist()]
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels == list(helper.FASHION_MNIST_CLASSES)


def test_view_classify_checks_the_number_of_classes():
    with pytest.raises(ValueError, match="3 probabilities for 10 class names"):
        helper.view_classify(torch.zeros(784), torch.ones(3) / 3)


def test_plot_history_draws_what_train_returned():
    history = [{"epoch": 1, "step": 40 * i, "train_loss": 1 / i, "test_loss": 2 / i,
                "test_accuracy": 0.5 + i / 100} for i in range(1, 4)]
    fig = helper.plot_history(history)
    train_line, test_line = fig.axes[0].lines
    assert list(train_line.get_xdata()) == [40, 80, 120]
    assert list(test_line.get_ydata()) == [2, 1, 2 / 3]
    assert list(fig.axes[1].lines[0].get_ydata()) == [0.51, 0.52, 0.53]
    with pytest.raises(ValueError, match="empty"):
        helper.plot_history([])


def test_a_folder_that_cannot_be_written_is_named_not_the_source(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should go")
    with pytest.raises(helper.FashionMNISTError, match="cannot write the data into .*not-a-folder"):
        helper.install_fashion_mnist(DEBIAN, blocker / "data")


def test_a_target_folder_refusing_new_files_is_named(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(helper.FashionMNISTError, match="cannot write the data into .*raw .*may not create files in the folder"):
        helper.install_fashion_mnist(DEBIAN, tmp_path / "data")


@pytest.fixture
def alarm():
    """Fail, instead of hanging for ever, if the test blocks for more than 10 seconds."""
    import signal

    def timeout(signum, frame):
        raise TimeoutError("blocked for more than 10 seconds")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_fifo_in_place_of_a_data_file_neither_hangs_nor_counts_as_data(tmp_path, gz_copy, alarm):
    root = tmp_path / "data"
    raw = helper.install_fashion_mnist(DEBIAN, root)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    os.mkfifo(raw / "t10k-labels-idx1-ubyte")
    assert not helper.fashion_mnist_is_ready(root)
    helper.install_fashion_mnist(DEBIAN, root)  # replaces the FIFO with the real file
    assert helper.fashion_mnist_is_ready(root)

    (gz_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    os.mkfifo(gz_copy / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(helper.FashionMNISTError, match="t10k-labels-idx1-ubyte.gz is not a regular file"):
        helper.install_fashion_mnist(gz_copy, tmp_path / "other")
