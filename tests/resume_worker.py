"""A small training run that checkpoints often; the resume tests start it as a subprocess.

It trains on a real slice of Fashion-MNIST (1,280 training and 256 test
images, 20 steps an epoch), resuming from --checkpoint when that file exists,
and saves the final model and optimizer state to --output.
With --slow-save, every checkpoint is written in small pieces with pauses and
announced by a line "saving", so that a test can kill the process mid-save.
"""

import argparse
import io
import time

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

import fc_model


def slow_save(real_save):
    def save(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        print("saving", flush=True)
        chunk = len(data) // 8 + 1
        for start in range(0, len(data), chunk):
            file.write(data[start:start + chunk])
            file.flush()
            time.sleep(0.02)
    return save


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--slow-save", action="store_true")
    args = parser.parse_args()

    real_save = torch.save
    if args.slow_save:
        torch.save = slow_save(real_save)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    trainset = datasets.FashionMNIST(args.data_dir, train=True, transform=transform)
    testset = datasets.FashionMNIST(args.data_dir, train=False, transform=transform)
    trainloader = DataLoader(Subset(trainset, range(1280)), batch_size=64, shuffle=True)
    testloader = DataLoader(Subset(testset, range(256)), batch_size=64)
    model = fc_model.Network(784, 10, [64, 32])
    optimizer = optim.Adam(model.parameters(), lr=0.001)

    history = fc_model.train(model, trainloader, testloader, nn.NLLLoss(), optimizer,
                             epochs=args.epochs, print_every=1,
                             checkpoint_path=args.checkpoint,
                             checkpoint_every=args.checkpoint_every, resume=True)
    real_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "history": history}, args.output)
    print("done", flush=True)


if __name__ == "__main__":
    main()
