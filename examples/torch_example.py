#!/usr/bin/python3
"""torch_example.py - libkfac's K-FAC as a PyTorch optimizer
(kfac.torch.KFAC) on a CPU model: KFAC-Pytorch's training loop as it is,
the shorter loop in which the optimizer draws the sampled targets itself,
and torch's SGD with momentum on the same batches.

    /usr/bin/python3 examples/torch_example.py [DATA_DIR]

DATA_DIR holds the four MNIST IDX files (default: Debian's
dataset-fashion-mnist); the first 10000 training images are used. Needs
python3-torch. Uses the installed kfac package, or python/ of this
repository with its build/libkfac.so. Exit 0 if K-FAC learns.
"""
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
try:
    import kfac
except ImportError:  # in the repository: python/ beside examples/
    sys.path.insert(0, os.path.join(here, "..", "python"))
    import kfac
import kfac.torch

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
torch.set_num_threads(1)
kfac.set_threads(1)
train = kfac.load_data(data_dir, "train")
test = kfac.load_data(data_dir, "test")
n = min(10000, train.n)
x, y = torch.from_numpy(train.x[:n]), torch.from_numpy(train.labels[:n]).long()
xt, yt = torch.from_numpy(test.x), torch.from_numpy(test.labels).long()
B = 128


def new_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def batches(epoch):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
    for i in range(0, n, B):
        idx = order[i:i + B]
        yield x[idx], y[idx]


def accuracy(model):
    with torch.no_grad():
        return (model(xt).argmax(1) == yt).float().mean().item()


# 1. KFAC-Pytorch's loop (its main.py), unchanged but for the optimizer's
# import and constructor line.
net = new_model()
criterion = nn.CrossEntropyLoss()
optimizer = kfac.torch.KFAC(net, lr=0.05, momentum=0.9, damping=0.03, kl_clip=0.01, weight_decay=0, TCov=10,
                            TInv=100)
for epoch in range(2):
    t0, train_loss = time.time(), 0.0
    for batch_idx, (inputs, targets) in enumerate(batches(epoch)):
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        if optimizer.steps % optimizer.TCov == 0:
            # compute true fisher
            optimizer.acc_stats = True
            with torch.no_grad():
                sampled_y = torch.multinomial(torch.nn.functional.softmax(outputs.cpu().data, dim=1), 1).squeeze()
            loss_sample = criterion(outputs, sampled_y)
            loss_sample.backward(retain_graph=True)
            optimizer.acc_stats = False
            optimizer.zero_grad()  # clear the gradient for computing true-fisher.
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
    acc_kfac = accuracy(net)
    print("kfac (KFAC-Pytorch loop) epoch %d: %5.2f s, train loss %.4f, test accuracy %.4f"
          % (epoch + 1, time.time() - t0, train_loss / (batch_idx + 1), acc_kfac))
st = optimizer.kfac_stats()
print("  %d steps, %d statistics rounds, %d inversions" % (optimizer.steps, st["stats_rounds"], st["inversions"]))

# 2. The optimizer draws the targets (libkfac's sampler) when statistics
# are due: optimizer.backward(loss, output) in place of loss.backward().
net2 = new_model()
opt2 = kfac.torch.KFAC(net2, lr=0.05, damping=0.03, kl_clip=0.01)
for epoch in range(2):
    for inputs, targets in batches(epoch):
        opt2.zero_grad()
        outputs = net2(inputs)
        opt2.backward(F.cross_entropy(outputs, targets), outputs)
        opt2.step()
acc_own = accuracy(net2)
print("kfac (own sampling) after 2 epochs: test accuracy %.4f" % acc_own)

# 3. torch's SGD with momentum, the same batches.
net3 = new_model()
sgd = torch.optim.SGD(net3.parameters(), lr=0.05, momentum=0.9)
for epoch in range(2):
    for inputs, targets in batches(epoch):
        sgd.zero_grad()
        F.cross_entropy(net3(inputs), targets).backward()
        sgd.step()
acc_sgd = accuracy(net3)
print("sgd (momentum 0.9) after 2 epochs: test accuracy %.4f" % acc_sgd)
sys.exit(0 if min(acc_kfac, acc_own) > 0.5 and acc_kfac >= acc_sgd - 0.05 else 1)
