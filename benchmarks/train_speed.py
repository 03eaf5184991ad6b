"""Time the classic training loop against ``fc_model.train``, side by side.

Both runs use the same data, seed and hyper-parameters as lesson 1
(batch 64, Adam lr=0.001, Network(784, 10, [512, 256, 128]), dropout 0.5),
and both print a progress line every 40 steps with test metrics over the
whole test set. The classic loop below is a faithful copy of the course's
``fc_model.train``/``validation``: it re-reads (and re-transforms) the test
set through its DataLoader at every report.

    python benchmarks/train_speed.py [--epochs 2] [--data-dir ~/.pytorch/F_MNIST_data/]
"""

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import torch
from torch import nn, optim
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fc_model  # noqa: E402
import helper  # noqa: E402


def classic_validation(model, testloader, criterion):
    """The course's validation: sums of batch means (divided by len(loader) by the caller)."""
    test_loss, accuracy = 0, 0
    for images, labels in testloader:
        images = images.resize_(images.size()[0], 784)
        output = model.forward(images)
        test_loss += criterion(output, labels).item()
        ps = torch.exp(output)
        equality = labels.data == ps.max(dim=1)[1]
        accuracy += equality.type(torch.FloatTensor).mean()
    return test_loss, accuracy


def classic_train(model, trainloader, testloader, criterion, optimizer, epochs=5, print_every=40):
    """The course's training loop; returns the last test accuracy it printed."""
    steps, running_loss, accuracy = 0, 0, 0.0
    for e in range(epochs):
        model.train()
        for images, labels in trainloader:
            steps += 1
            images.resize_(images.size()[0], 784)
            optimizer.zero_grad()
            output = model.forward(images)
            loss = criterion(output, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if steps % print_every == 0:
                model.eval()
                with torch.no_grad():
                    test_loss, accuracy = classic_validation(model, testloader, criterion)
                print("Epoch: {}/{}.. ".format(e + 1, epochs),
                      "Training Loss: {:.3f}.. ".format(running_loss / print_every),
                      "Test Loss: {:.3f}.. ".format(test_loss / len(testloader)),
                      "Test Accuracy: {:.3f}".format(accuracy / len(testloader)))
                running_loss = 0
                model.train()
    return float(accuracy / len(testloader))


def classic_loaders(data_dir):
    """The course's loaders: PIL transforms on every item, at every epoch and every report."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    trainset = datasets.FashionMNIST(data_dir, download=True, train=True, transform=transform)
    testset = datasets.FashionMNIST(data_dir, download=True, train=False, transform=transform)
    return (torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True),
            torch.utils.data.DataLoader(testset, batch_size=64, shuffle=True))


def run(train_function, make_loaders, data_dir, epochs, seed):
    """Seed, build the loaders and the model, train; return (seconds, final accuracy).

    The seconds count building the loaders too, since ``helper``'s loaders
    do their work (transforming every image) when they are built.
    """
    torch.manual_seed(seed)
    start = time.perf_counter()
    trainloader, testloader = make_loaders(data_dir)
    model = fc_model.Network(784, 10, [512, 256, 128])
    criterion = nn.NLLLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    with contextlib.redirect_stdout(io.StringIO()):
        result = train_function(model, trainloader, testloader, criterion, optimizer, epochs=epochs)
    seconds = time.perf_counter() - start
    accuracy = result if isinstance(result, float) else result[-1]["test_accuracy"]
    return seconds, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=helper.DEFAULT_DATA_DIR)
    args = parser.parse_args()
    helper.prepare_fashion_mnist(args.data_dir)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.epochs} epochs, seed {args.seed}")
    classic_s, classic_acc = run(classic_train, classic_loaders, args.data_dir, args.epochs, args.seed)
    ours_s, ours_acc = run(fc_model.train, helper.fashion_mnist_loaders, args.data_dir, args.epochs,
                           args.seed)
    print(f"{'loop':<16}{'seconds':>10}{'final accuracy':>16}")
    print(f"{'classic':<16}{classic_s:>10.1f}{classic_acc:>16.3f}")
    print(f"{'fc_model.train':<16}{ours_s:>10.1f}{ours_acc:>16.3f}")
    print(f"speed-up: {classic_s / ours_s:.2f}x, accuracy difference: {ours_acc - classic_acc:+.3f}")


if __name__ == "__main__":
    main()
